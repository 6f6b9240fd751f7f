/* Data quality: latest validation of each rule, pass rate over time, quarantine by rule, failed
 * expectations with their sample rows, and the link to the offline report. Text only (no innerHTML). */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config;
  var LAYER_COLORS = { bronze: "#b45309", silver: "#64748b", gold: "#ca8a04" };
  var filters = { table: D.store.get("dq.table") || "", rule: D.store.get("dq.rule") || "" };

  function fillSelect(id, values, current) {
    var select = document.getElementById(id);
    values.forEach(function (v) { select.appendChild(D.el("option", { value: v }, v)); });
    select.value = values.indexOf(current) >= 0 ? current : "";
    return select;
  }
  ["table", "rule"].forEach(function (name) {
    var select = fillSelect("dq-" + name, cfg[name === "table" ? "tables" : "rules"], filters[name]);
    filters[name] = select.value;
    select.addEventListener("change", function () {
      filters[name] = select.value;
      D.store.set("dq." + name, select.value);
      pager.reset();
      D.refreshNow();
    });
  });

  function result(ok) { return D.badge(ok ? "Green" : "Red", ok ? "passed" : "failed"); }
  function ago(iso, age) {
    return D.el("span", { title: iso, className: "nowrap" }, D.fmtTime(iso) + (age === undefined || age === null ? "" : " (" + D.fmtDuration(age) + " ago)"));
  }
  function pct(rate) { return rate === null || rate === undefined ? "–" : D.fmtNum(rate * 100) + " %"; }
  function text(value) {
    if (value === null || value === undefined) { return "–"; }
    return typeof value === "string" ? value : JSON.stringify(value);
  }
  /* A sample row as "key=value  key=value" lines: readable, and text only. */
  function samples(rows) {
    if (!rows || !rows.length) { return "–"; }
    return D.el("pre", { className: "dq-samples dq-code" }, rows.map(function (r) {
      if (r === null || typeof r !== "object") { return text(r); }
      return Object.keys(r).map(function (k) { return k + "=" + text(r[k]); }).join("  ");
    }).join("\n"));
  }
  /* Map expectations observe "n of m rows" (of a sample of the batch, when it was large); the others their own value. */
  function observed(value) {
    if (value && typeof value === "object" && "unexpected_count" in value && "element_count" in value) {
      return D.fmtInt(value.unexpected_count) + " of " + D.fmtInt(value.element_count) + " rows" +
        (value.sampled_from ? " (a sample of " + D.fmtInt(value.sampled_from) + ")" : "");
    }
    return text(value);
  }
  function reportLink(report) {
    var node = document.getElementById("dq-report");
    node.replaceChildren(report.available
      ? D.el("span", null, D.el("a", { href: report.url, className: "dq-report-link", target: "_blank", rel: "noopener" }, "Offline report (Data Docs)"),
        " · built " + D.fmtTime(report.built_at))
      : D.el("span", null, "No offline report yet: run ", D.el("code", { className: "dq-code" }, "lakehouse dq report")));
  }

  var pager = D.pager("failures-pager", function () { D.refreshNow(); });

  D.start(function (params) {
    var query = Object.assign({}, params, { table: filters.table, rule: filters.rule, limit: cfg.page_size, offset: pager.offset() });
    return D.fetchJSON(cfg.api, query).then(function (data) {
      var totals = data.totals;
      D.setValue("range_label", data.range.label.toLowerCase());
      D.setValue("pass_rate", pct(totals.pass_rate));
      D.setValue("validations", D.fmtInt(totals.validations));
      D.setValue("last_validated", totals.last_validated_at ? "last " + D.fmtTime(totals.last_validated_at) : "none in range");
      D.setValue("failed", D.fmtInt(totals.failed));
      D.setValue("quarantined", D.fmtInt(data.quarantine.reduce(function (n, q) { return n + q.quarantined; }, 0)));
      reportLink(data.report);

      D.fillTable("latest-table", data.latest, function (r) {
        return D.el("tr", { "data-table": r.table_name, "data-rule": r.rule },
          D.td(r.table_name), D.td(D.el("strong", null, r.rule)), D.td(r.policy), D.td(result(r.success)),
          D.td(D.fmtInt(r.unexpected_count), "num"), D.td(D.fmtInt(r.element_count), "num"),
          D.td(r.delta_version === null ? "–" : D.fmtInt(r.delta_version), "num"), D.td(ago(r.validated_at, r.age_seconds)),
          D.td(r.reason || "–", "dq-reason"));
      }, "No validation yet: `lakehouse stream` validates every LAKEHOUSE_DQ_INTERVAL_SECONDS, or run `lakehouse dq run`.");

      D.fillTable("quarantine-table", data.quarantine, function (q) {
        var s = (q.samples || [])[0];
        return D.el("tr", null, D.td(D.el("strong", null, q.rule)), D.td(D.fmtInt(q.quarantined), "num"),
          D.td(ago(q.last_quarantined_at)),
          D.td(s ? D.el("span", { className: "dq-code", title: s.reason || "" }, s.topic + "/" + s.partition + "/" + s.offset + ": " + (s.value_text || "")) : "–"));
      }, "Nothing quarantined.");

      pager.update(data.failures);
      D.fillTable("failures-table", data.failures.rows, function (f) {
        return D.el("tr", null, D.td(ago(f.validated_at), "dq-top"), D.td(f.table_name, "dq-top"),
          D.td(D.el("div", null, D.el("strong", null, f.rule), D.el("div", { className: "dq-reason" }, f.reason || "")), "dq-top"),
          D.td(D.el("span", { className: "dq-code" }, f.expectation), "dq-top"), D.td(D.fmtInt(f.unexpected_count), "num dq-top"),
          D.td(D.el("span", { className: "dq-code" }, observed(f.observed_value)), "dq-top"), D.td(samples(f.sample_rows), "dq-top dq-wide"));
      }, "No failed expectation in this range.");

      var rates = data.pass_rates, layers = Object.keys(rates.series);
      D.chart("chart-pass-rate").setOption(Object.assign({}, D.chartBase, {
        color: layers.map(function (l) { return LAYER_COLORS[l] || "#2563eb"; }),
        title: rates.times.length ? undefined : { text: "No validation in this range", left: "center", top: "middle", textStyle: { color: "#5b6675", fontSize: 14, fontWeight: 500 } },
        legend: { top: 0, data: layers },
        grid: { left: 8, right: 24, top: 32, bottom: 8, containLabel: true },
        tooltip: Object.assign({}, D.chartBase.tooltip, { trigger: "axis" }),
        xAxis: { type: "time", min: data.range.since, max: data.range.until },
        yAxis: { type: "value", min: 0, max: 100, name: "%" },
        series: layers.map(function (layer) {
          return {
            name: layer, type: "line", showSymbol: rates.times.length < 60, symbolSize: 7, connectNulls: true, clip: false,
            data: rates.times.map(function (t, i) { var v = rates.series[layer][i]; return [t, v === null ? null : Math.round(v * 1000) / 10]; })
          };
        })
      }), true);
    });
  });
})();
