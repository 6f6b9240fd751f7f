/* Shared by every page: configuration, live polling, the time range, formatting and safe
 * DOM building (text only: data never goes through innerHTML). Exposes window.Dash. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("dash-config").textContent);
  var STATUSES = ["Red", "Orange", "Green"];
  var COLORS = { Red: "#c62828", Orange: "#e07b00", Green: "#2e7d32" };
  var MIN_REFRESH = 2;
  var store = {
    get: function (key) { try { return window.localStorage.getItem("dash." + key); } catch (e) { return null; } },
    set: function (key, value) { try { window.localStorage.setItem("dash." + key, value); } catch (e) { /* private mode */ } }
  };

  // --- formatting ---------------------------------------------------------------------
  var intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var numFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  function fmtInt(v) { return v === null || v === undefined ? "–" : intFmt.format(v); }
  function fmtNum(v) { return v === null || v === undefined ? "–" : numFmt.format(v); }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) { return "–"; }
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) { return s + "s"; }
    var m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (m < 60) { return m + "m " + String(s % 60).padStart(2, "0") + "s"; }
    if (h < 24) { return h + "h " + String(m % 60).padStart(2, "0") + "m"; }
    return d + "d " + (h % 24) + "h";
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) { return "–"; }
    return ms < 1000 ? intFmt.format(ms) + " ms" : numFmt.format(ms / 1000) + " s";
  }
  function fmtTime(iso) {
    if (!iso) { return "–"; }
    var d = new Date(iso);
    var today = new Date();
    var sameDay = d.toDateString() === today.toDateString();
    return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false })
      : d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  // --- DOM ----------------------------------------------------------------------------
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) { return; }
        if (k === "text") { node.textContent = v; } else if (k === "className") { node.className = v; } else { node.setAttribute(k, v); }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }
  function td(content, className) {
    return el("td", { className: className || null }, content === null || content === undefined ? "–" : content);
  }
  /* A status shown by colour AND by text: "● Red". Also accepts "Severity 1" style levels. */
  function badge(status, label) {
    var known = STATUSES.indexOf(status) >= 0;
    return el("span", { className: "badge " + (known ? "badge-" + status.toLowerCase() : "badge-neutral"), "data-status": status || "" },
      label || status || "unknown");
  }
  var SEVERITY_STATUS = { "Severity 1": "Red", "Severity 2": "Orange", "Severity 3": "Green" };
  function severityBadge(level) {
    var status = SEVERITY_STATUS[level];
    return badge(status || null, level ? level + (status ? " (" + status + ")" : "") : "unknown");
  }
  function setValue(name, text) {
    document.querySelectorAll('[data-value="' + name + '"]').forEach(function (n) { n.textContent = text; });
  }
  function fillTable(table, rows, rowFn, emptyText) {
    var tbody = (typeof table === "string" ? document.getElementById(table) : table).querySelector("tbody");
    var cols = tbody.parentNode.querySelectorAll("thead th").length;
    var frag = document.createDocumentFragment();
    if (!rows || rows.length === 0) {
      frag.appendChild(el("tr", null, el("td", { className: "empty", colspan: cols }, emptyText || "Nothing to show.")));
    } else {
      rows.forEach(function (r) { frag.appendChild(rowFn(r)); });
    }
    tbody.replaceChildren(frag);
  }
  function location(r) { return [r.city, r.country_name || r.country_code].filter(Boolean).join(", "); }
  function serverLink(id) { return el("a", { href: "/servers/" + encodeURIComponent(id) + "/" }, id); }

  /* A pager over {total, limit, offset}; onChange(newOffset). */
  function pager(id, onChange) {
    var root = document.getElementById(id), offset = 0, last = null;
    root.querySelectorAll("button[data-dir]").forEach(function (b) {
      b.addEventListener("click", function () {
        if (!last) { return; }
        offset = Math.max(0, offset + Number(b.getAttribute("data-dir")) * last.limit);
        onChange(offset);
      });
    });
    return {
      offset: function () { return offset; },
      reset: function () { offset = 0; },
      update: function (page) {
        last = page;
        offset = page.offset;
        var end = Math.min(page.total, page.offset + page.rows.length);
        root.querySelector(".pager-text").textContent = page.total === 0 ? "none"
          : (page.offset + 1) + "–" + end + " of " + fmtInt(page.total);
        root.querySelector('[data-dir="-1"]').disabled = page.offset === 0;
        root.querySelector('[data-dir="1"]').disabled = end >= page.total;
      }
    };
  }

  // --- charts (ECharts): tooltips drawn on the canvas, so the strict CSP needs no inline styles
  var charts = {};
  function chart(id) {
    if (!charts[id]) {
      charts[id] = window.echarts.init(document.getElementById(id), null, { renderer: "canvas" });
    }
    return charts[id];
  }
  window.addEventListener("resize", function () { Object.keys(charts).forEach(function (k) { charts[k].resize(); }); });
  var chartBase = {
    textStyle: { fontFamily: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif" },
    tooltip: { renderMode: "richText", confine: true }
  };

  // --- time range ---------------------------------------------------------------------
  function toLocalInput(date) {
    var pad = function (n) { return String(n).padStart(2, "0"); };
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }
  var range = (function () {
    var saved = null;
    try { saved = JSON.parse(store.get("range") || "null"); } catch (e) { saved = null; }
    var keys = (config.ranges || []).map(function (r) { return r.key; });
    if (!saved || (saved.key !== "custom" && keys.indexOf(saved.key) < 0)) { saved = { key: config.default_range }; }
    return saved;
  })();
  function rangeParams() {
    if (!config.time_based) { return {}; }
    if (range.key === "custom") {
      var p = { from: range.from };
      if (range.to) { p.to = range.to; }
      return p;
    }
    return { range: range.key };
  }

  // --- fetching and polling -------------------------------------------------------------
  function fetchJSON(url, params) {
    var qs = new URLSearchParams();
    Object.keys(params || {}).forEach(function (k) {
      if (params[k] !== null && params[k] !== undefined && params[k] !== "") { qs.set(k, params[k]); }
    });
    var full = url + (qs.toString() ? "?" + qs.toString() : "");
    return fetch(full, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        return resp.json().catch(function () { return {}; }).then(function (body) {
          if (!resp.ok) {
            var err = new Error(body.error || ("HTTP " + resp.status));
            err.status = resp.status;
            throw err;
          }
          return body;
        });
      });
  }

  var refreshSeconds = (function () {
    var choices = config.refresh_choices || [2, 5, 10, 30];
    var saved = Number(store.get("refresh"));
    return choices.indexOf(saved) >= 0 ? Math.max(MIN_REFRESH, saved) : 5;
  })();
  var loader = null, timer = null, inFlight = false, pending = false;

  function setLive(ok, text) {
    var live = document.getElementById("live-status");
    live.className = "live " + (ok ? "ok" : "error");
    live.querySelector(".live-text").textContent = text;
  }
  function showError(message) {
    var banner = document.getElementById("error-banner");
    banner.textContent = message || "";
    banner.hidden = !message;
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(tick, Math.max(MIN_REFRESH, refreshSeconds) * 1000);
  }
  /* One load at a time: a refresh asked for during a load runs right after it. */
  function tick() {
    if (!loader) { return; }
    if (inFlight) { pending = true; return; }
    inFlight = true;
    Promise.resolve().then(function () { return loader(rangeParams()); })
      .then(function () {
        showError(null);
        setLive(true, "Live · updated " + new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }));
      }, function (err) {
        if (window.console) { console.error(err); }
        var offline = !err.status || err.status >= 500;
        showError((err.status === 400 ? "Invalid request: " : offline ? "Cannot load data: " : "") + err.message);
        setLive(false, offline ? "Offline · retrying" : "Error");
      })
      .then(function () {
        inFlight = false;
        if (pending) { pending = false; tick(); } else { schedule(); }
      });
  }
  function refreshNow() { clearTimeout(timer); tick(); }

  function start(fn) { loader = fn; refreshNow(); }

  function initControls() {
    var refreshSelect = document.getElementById("refresh-select");
    refreshSelect.value = String(refreshSeconds);
    refreshSelect.addEventListener("change", function () {
      refreshSeconds = Math.max(MIN_REFRESH, Number(refreshSelect.value) || 5);
      store.set("refresh", String(refreshSeconds));
      schedule();
    });
    var rangeSelect = document.getElementById("range-select");
    if (!rangeSelect) { return; }
    var custom = document.getElementById("custom-range");
    var from = document.getElementById("range-from"), to = document.getElementById("range-to");
    rangeSelect.value = range.key;
    custom.hidden = range.key !== "custom";
    if (range.key === "custom") {
      from.value = range.from ? toLocalInput(new Date(range.from)) : "";
      to.value = range.to ? toLocalInput(new Date(range.to)) : "";
    }
    rangeSelect.addEventListener("change", function () {
      if (rangeSelect.value === "custom") {
        custom.hidden = false;
        if (!from.value) { from.value = toLocalInput(new Date(Date.now() - 3600 * 1000)); }
        return;  // applied with the button
      }
      custom.hidden = true;
      range = { key: rangeSelect.value };
      store.set("range", JSON.stringify(range));
      refreshNow();
    });
    document.getElementById("range-apply").addEventListener("click", function () {
      if (!from.value) { showError("Choose a start time for the custom range."); return; }
      range = { key: "custom", from: new Date(from.value).toISOString(), to: to.value ? new Date(to.value).toISOString() : null };
      store.set("range", JSON.stringify(range));
      refreshNow();
    });
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden && loader) { refreshNow(); } });
  initControls();

  window.Dash = {
    config: config, STATUSES: STATUSES, COLORS: COLORS,
    el: el, td: td, badge: badge, severityBadge: severityBadge, setValue: setValue, fillTable: fillTable,
    location: location, serverLink: serverLink, pager: pager,
    fmtInt: fmtInt, fmtNum: fmtNum, fmtDuration: fmtDuration, fmtMs: fmtMs, fmtTime: fmtTime,
    chart: chart, chartBase: chartBase, fetchJSON: fetchJSON, start: start, refreshNow: refreshNow,
    showError: showError, store: store
  };
})();
