/* One server: its current state and its incidents. */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config;

  function fact(label, value) { return D.el("div", null, D.el("dt", null, label), D.el("dd", null, value)); }

  D.start(function () {
    return D.fetchJSON(cfg.api + encodeURIComponent(cfg.server_id), { limit: 100 }).then(function (data) {
      var s = data.server;
      document.getElementById("server-status").replaceChildren(D.badge(s.status_color));
      document.getElementById("server-facts").replaceChildren(
        fact("Status", D.badge(s.status_color, s.status_color + " · " + (s.severity_level || ""))),
        fact("In this status for", D.fmtDuration(s.status_seconds)),
        fact("Type", s.server_type || "–"),
        fact("Location", D.location(s) || "–"),
        fact("Last event", D.fmtTime(s.last_event_time)),
        fact("Last event id", s.last_event_id || "–"),
        fact("Est. resolution time", s.estimated_resolution_time === null ? "–" : s.estimated_resolution_time + " min"));
      D.fillTable("server-incidents", data.incidents, function (i) {
        return D.el("tr", null,
          D.td(D.fmtTime(i.started_at)),
          D.td(i.ended_at ? D.fmtTime(i.ended_at) : "–"),
          D.td(D.fmtDuration(i.duration_seconds), "num"),
          D.td(D.severityBadge(i.worst_severity)),
          D.td(i.is_open ? D.badge(null, "open") : "closed"));
      }, "No incidents for this server.");
    }, function (err) {
      if (err.status === 404) { err.message = "This server is unknown (not in server_state)."; }
      throw err;
    });
  });
})();
