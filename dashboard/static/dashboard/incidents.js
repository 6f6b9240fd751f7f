/* Incidents: open ones with their duration so far, recently closed, MTTR by location and type. */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config;
  var pager = D.pager("closed-pager", function () { D.refreshNow(); });

  function mttrCells(r) {
    return [D.td(D.fmtInt(r.incidents), "num"), D.td(D.fmtDuration(r.mttr_seconds), "num"), D.td(D.fmtDuration(r.max_seconds), "num")];
  }

  D.start(function (params) {
    return D.fetchJSON(cfg.api, Object.assign({}, params, { limit: cfg.page_size, offset: pager.offset() })).then(function (data) {
      D.setValue("range_label", data.range.label);
      D.setValue("open_total", D.fmtInt(data.open.total));
      D.setValue("closed_total", D.fmtInt(data.closed.total));
      D.setValue("mttr", data.mttr.incidents ? D.fmtDuration(data.mttr.seconds) : "–");
      D.fillTable("open-table", data.open.rows, function (i) {
        return D.el("tr", null, D.td(D.serverLink(i.server_id)), D.td(D.severityBadge(i.worst_severity)), D.td(i.server_type),
          D.td(D.location(i)), D.td(D.fmtTime(i.started_at)), D.td(D.fmtDuration(i.duration_seconds), "num"));
      }, "No open incidents: every server is Green.");
      pager.update(data.closed);
      D.fillTable("closed-table", data.closed.rows, function (i) {
        return D.el("tr", null, D.td(D.serverLink(i.server_id)), D.td(D.severityBadge(i.worst_severity)), D.td(i.server_type),
          D.td(D.location(i)), D.td(D.fmtTime(i.started_at)), D.td(D.fmtTime(i.ended_at)), D.td(D.fmtDuration(i.duration_seconds), "num"));
      }, "No incident closed in this range.");
      D.fillTable("mttr-location", data.mttr_by_location, function (r) {
        var row = D.el("tr", null, D.td(r.city), D.td(r.country_name || r.country_code));
        mttrCells(r).forEach(function (c) { row.appendChild(c); });
        return row;
      }, "No incident closed in this range.");
      D.fillTable("mttr-type", data.mttr_by_type, function (r) {
        var row = D.el("tr", null, D.td(r.server_type));
        mttrCells(r).forEach(function (c) { row.appendChild(c); });
        return row;
      }, "No incident closed in this range.");
    });
  });
})();
