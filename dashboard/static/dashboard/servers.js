/* Servers: filter by status, country, city and type (kept in the URL); paginated; live. */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config;
  var form = document.getElementById("server-filters");
  var fields = { status: "filter-status", country: "filter-country", city: "filter-city", type: "filter-type" };
  var initial = new URLSearchParams(window.location.search);
  var facetsLoaded = false;
  var pager = D.pager("server-pager", function () { D.refreshNow(); });

  function filters() {
    var f = {};
    Object.keys(fields).forEach(function (k) { f[k] = document.getElementById(fields[k]).value; });
    return f;
  }
  function syncUrl() {
    var qs = new URLSearchParams();
    var f = filters();
    Object.keys(f).forEach(function (k) { if (f[k]) { qs.set(k, f[k]); } });
    window.history.replaceState(null, "", window.location.pathname + (qs.toString() ? "?" + qs : ""));
  }
  function fillSelect(id, items, value, label) {
    var select = document.getElementById(id);
    var keep = select.value || initial.get(Object.keys(fields).find(function (k) { return fields[k] === id; })) || "";
    select.replaceChildren(D.el("option", { value: "" }, "All"));
    items.forEach(function (it) { select.appendChild(D.el("option", { value: value(it) }, label(it))); });
    select.value = keep;
  }
  function loadFacets() {
    return D.fetchJSON(cfg.facets).then(function (f) {
      fillSelect("filter-country", f.countries, function (c) { return c.country_code; },
        function (c) { return (c.country_name || c.country_code) + " (" + c.country_code + ")"; });
      fillSelect("filter-city", f.cities, function (c) { return c.city; }, function (c) { return c.city + " (" + c.country_code + ")"; });
      fillSelect("filter-type", f.server_types, function (t) { return t; }, function (t) { return t; });
      facetsLoaded = true;
    });
  }
  document.getElementById("filter-status").value = initial.get("status") || "";
  form.addEventListener("change", function () { pager.reset(); syncUrl(); D.refreshNow(); });
  form.addEventListener("reset", function () { setTimeout(function () { pager.reset(); syncUrl(); D.refreshNow(); }, 0); });
  form.addEventListener("submit", function (e) { e.preventDefault(); });

  D.start(function () {
    var before = facetsLoaded ? Promise.resolve() : loadFacets();
    return before.then(function () {
      var params = Object.assign(filters(), { limit: cfg.page_size, offset: pager.offset() });
      return D.fetchJSON(cfg.api, params);
    }).then(function (page) {
      pager.update(page);
      document.getElementById("server-count").textContent = D.fmtInt(page.total) + " server" + (page.total === 1 ? "" : "s");
      D.fillTable("server-table", page.rows, function (s) {
        return D.el("tr", { "data-server": s.server_id },
          D.td(D.serverLink(s.server_id)),
          D.td(D.badge(s.status_color)),
          D.td(s.server_type),
          D.td(D.location(s)),
          D.td(D.fmtDuration(s.status_seconds), "num"),
          D.td(D.el("span", { title: s.last_event_time }, D.fmtTime(s.last_event_time))),
          D.td(s.estimated_resolution_time === null ? "–" : s.estimated_resolution_time + " min", "num"));
      }, "No server matches these filters.");
    });
  });
})();
