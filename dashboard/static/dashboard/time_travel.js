/* Time travel: a Delta table at a version or a time (paginated rows), its history, and the
 * rows inserted / deleted / updated between two versions. Choices are kept in the URL. */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config, api = cfg.api;
  var initial = new URLSearchParams(window.location.search);
  var tableSelect = document.getElementById("tt-table");
  var versionInput = document.getElementById("tt-version");
  var asofInput = document.getElementById("tt-asof");
  var fromInput = document.getElementById("tt-from");
  var toInput = document.getElementById("tt-to");
  var tables = null;
  var state = { table: initial.get("table") || "", version: initial.get("version") || "", asOf: initial.get("as_of") || "" };
  var rowsPager = D.pager("tt-rows-pager", function () { D.refreshNow(); });
  var historyPager = D.pager("tt-history-pager", function () { D.refreshNow(); });

  function pad(n) { return String(n).padStart(2, "0"); }
  function toLocalInput(iso) {
    var d = new Date(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function text(v) {
    if (v === null || v === undefined) { return null; }
    if (typeof v === "object") { return JSON.stringify(v); }
    return String(v);
  }
  function syncUrl() {
    var qs = new URLSearchParams();
    if (state.table) { qs.set("table", state.table); }
    if (state.version !== "") { qs.set("version", state.version); }
    if (state.asOf) { qs.set("as_of", state.asOf); }
    window.history.replaceState(null, "", window.location.pathname + (qs.toString() ? "?" + qs : ""));
  }
  function setHead(id, columns, keys) {
    var tr = D.el("tr");
    columns.forEach(function (c) { tr.appendChild(D.el("th", { className: keys && keys.indexOf(c) >= 0 ? "tt-key" : null }, c)); });
    document.getElementById(id).querySelector("thead").replaceChildren(tr);
  }
  function rowOf(columns) {
    return function (r) {
      var tr = D.el("tr");
      columns.forEach(function (c) { tr.appendChild(D.td(text(r[c]))); });
      return tr;
    };
  }
  function current() {
    for (var i = 0; tables && i < tables.length; i++) { if (tables[i].table === state.table) { return tables[i]; } }
    return null;
  }

  function loadTables() {
    return D.fetchJSON(api.tables).then(function (data) {
      tables = data.tables;
      tableSelect.replaceChildren();
      tables.forEach(function (t) {
        var label = t.table + (t.exists ? (t.readable === false ? " (not readable)" : " · v" + t.version) : " (not created yet)");
        tableSelect.appendChild(D.el("option", { value: t.table }, label));
      });
      var names = tables.map(function (t) { return t.table; });
      if (names.indexOf(state.table) < 0) {
        var first = tables.filter(function (t) { return t.exists && t.readable; })[0];
        state.table = first ? first.table : names[0];
      }
      tableSelect.value = state.table;
      versionInput.value = state.version;
      asofInput.value = state.asOf ? toLocalInput(state.asOf) : "";
    });
  }

  function showUnreadable(t) {
    var box = document.getElementById("tt-unreadable");
    if (t && t.readable === false) {
      box.textContent = "delta-rs cannot read " + t.table + ", so this page cannot show it: " + t.error;
      box.hidden = false;
      return true;
    }
    box.hidden = true;
    return false;
  }

  function loadHistory() {
    return D.fetchJSON(api.history, { table: state.table, limit: 20, offset: historyPager.offset() }).then(function (h) {
      var w = h.window;
      document.getElementById("tt-window").textContent = "Readable: versions " + w.oldest_version + " to " + w.latest_version +
        " (" + D.fmtTime(w.oldest_time) + " to " + D.fmtTime(w.latest_time) + ")" + (w.reason ? "; " + w.reason : "") +
        ". Kept by maintenance: everything current within the last " + w.declared_days + " days.";
      historyPager.update(h);
      D.fillTable("tt-history", h.rows, function (r) {
        var show = D.el("button", { type: "button", className: "btn", "data-show": r.version, disabled: r.readable ? null : "disabled" }, "Show");
        var from = D.el("button", { type: "button", className: "btn", "data-from": r.version, disabled: r.readable ? null : "disabled" }, "From");
        var to = D.el("button", { type: "button", className: "btn", "data-to": r.version, disabled: r.readable ? null : "disabled" }, "To");
        return D.el("tr", { "data-version": r.version, className: r.readable ? null : "tt-gone" },
          D.td(String(r.version), "num"), D.td(D.el("span", { title: r.timestamp, className: "nowrap" }, D.fmtTime(r.timestamp))),
          D.td(r.operation), D.td(D.fmtInt(r.rows_added), "num"), D.td(D.fmtInt(r.rows_removed), "num"),
          D.td(D.fmtInt(r.rows_updated), "num"), D.td(D.fmtInt(r.files_added), "num"), D.td(D.fmtInt(r.files_removed), "num"),
          D.td(r.details || null), D.td(D.el("span", { className: "tt-actions" }, show, from, to)));
      }, "No version.");
      if (fromInput.value === "" && h.rows.length > 1) { fromInput.value = h.rows[1].version; }
      if (toInput.value === "" && h.rows.length > 0) { toInput.value = h.rows[0].version; }
    });
  }

  function loadRows() {
    var p = { table: state.table, limit: cfg.page_size, offset: rowsPager.offset() };
    if (state.version !== "") { p.version = state.version; } else if (state.asOf) { p.as_of = state.asOf; }
    return D.fetchJSON(api.rows, p).then(function (page) {
      rowsPager.update(page);
      setHead("tt-rows", page.columns, page.keys);
      D.fillTable("tt-rows", page.rows, rowOf(page.columns), "The table is empty at this version.");
      document.getElementById("tt-rows-note").textContent = "version " + page.version + " of " + page.latest_version +
        " · committed " + D.fmtTime(page.timestamp) + " · " + D.fmtInt(page.total) + " rows · in key order";
      document.getElementById("tt-status").textContent = state.version !== "" ? "version " + state.version
        : state.asOf ? "as of " + D.fmtTime(state.asOf) + " → version " + page.version : "latest (live)";
    });
  }

  function compare() {
    var from = fromInput.value, to = toInput.value;
    if (from === "" || to === "") { D.showError("Choose two versions to compare."); return; }
    document.getElementById("tt-diff-counts").textContent = "comparing…";
    D.fetchJSON(api.diff, { table: state.table, from: from, to: to, limit: 50 }).then(function (d) {
      D.showError(null);
      var c = d.counts;
      document.getElementById("tt-diff-counts").textContent = c.inserted + " inserted · " + c.deleted + " deleted · " +
        c.updated + " updated (" + d.method + ")";
      document.getElementById("tt-diff-note").textContent = "version " + d.from_version + " → " + d.to_version +
        (d.note ? " · " + d.note : "") + " · at most " + d.limit + " rows per group";
      D.setValue("tt-inserted-count", "(" + D.fmtInt(c.inserted) + ")");
      D.setValue("tt-deleted-count", "(" + D.fmtInt(c.deleted) + ")");
      D.setValue("tt-updated-count", "(" + D.fmtInt(c.updated) + ")");
      setHead("tt-inserted", d.columns, d.keys);
      setHead("tt-deleted", d.columns, d.keys);
      D.fillTable("tt-inserted", d.inserted, rowOf(d.columns), "No row inserted.");
      D.fillTable("tt-deleted", d.deleted, rowOf(d.columns), "No row deleted.");
      var lines = [];
      d.updated.forEach(function (u) {
        var key = Object.keys(u.key).map(function (k) { return k + "=" + text(u.key[k]); }).join(", ");
        u.changed.forEach(function (col) { lines.push({ key: key, column: col, before: u.before[col], after: u.after[col] }); });
      });
      D.fillTable("tt-updated", lines, function (l) {
        return D.el("tr", null, D.td(l.key), D.td(l.column), D.td(text(l.before)), D.td(text(l.after)));
      }, "No row updated.");
      document.getElementById("tt-diff").hidden = false;
    }, function (err) {
      document.getElementById("tt-diff-counts").textContent = "";
      D.showError((err.status === 400 ? "Invalid request: " : "Cannot compare: ") + err.message);
    });
  }

  document.getElementById("tt-form").addEventListener("submit", function (e) {
    e.preventDefault();
    state.table = tableSelect.value;
    state.version = versionInput.value.trim();
    state.asOf = state.version === "" && asofInput.value ? new Date(asofInput.value).toISOString() : "";
    if (state.version !== "") { asofInput.value = ""; }
    rowsPager.reset();
    syncUrl();
    D.refreshNow();
  });
  tableSelect.addEventListener("change", function () {
    state.table = tableSelect.value;
    state.version = ""; state.asOf = "";
    versionInput.value = ""; asofInput.value = ""; fromInput.value = ""; toInput.value = "";
    document.getElementById("tt-diff").hidden = true;
    document.getElementById("tt-diff-counts").textContent = "";
    rowsPager.reset(); historyPager.reset();
    syncUrl();
    D.refreshNow();
  });
  document.getElementById("tt-latest").addEventListener("click", function () {
    state.version = ""; state.asOf = "";
    versionInput.value = ""; asofInput.value = "";
    rowsPager.reset();
    syncUrl();
    D.refreshNow();
  });
  document.getElementById("tt-history").addEventListener("click", function (e) {
    var b = e.target.closest("button");
    if (!b) { return; }
    if (b.hasAttribute("data-show")) {
      state.version = b.getAttribute("data-show"); state.asOf = "";
      versionInput.value = state.version; asofInput.value = "";
      rowsPager.reset(); syncUrl(); D.refreshNow();
    } else if (b.hasAttribute("data-from")) {
      fromInput.value = b.getAttribute("data-from");
    } else if (b.hasAttribute("data-to")) {
      toInput.value = b.getAttribute("data-to");
    }
  });
  document.getElementById("tt-diff-form").addEventListener("submit", function (e) { e.preventDefault(); compare(); });

  D.start(function () {
    var before = tables ? Promise.resolve() : loadTables();
    return before.then(function () {
      if (showUnreadable(current())) { return null; }
      var t = current();
      if (t && !t.exists) {
        document.getElementById("tt-window").textContent = t.table + " does not exist yet: start the pipeline.";
        tables = null;  // look again on the next refresh
        return null;
      }
      return Promise.all([loadHistory(), loadRows()]);
    });
  });
})();
