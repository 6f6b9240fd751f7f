/* Pipeline: per layer the last batch and its freshness; batch durations; served table versions. */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config;
  var LAYER_COLORS = ["#2563eb", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

  /* Freshness by colour and text: Green fresh (< 1 min), Orange late (< 5 min), Red stale. */
  function freshness(ageSeconds) {
    if (ageSeconds === null || ageSeconds === undefined) { return D.badge(null, "unknown"); }
    if (ageSeconds < 60) { return D.badge("Green", "fresh"); }
    if (ageSeconds < 300) { return D.badge("Orange", "late"); }
    return D.badge("Red", "stale");
  }
  function ago(iso, age) {
    return D.el("span", { title: iso, className: "nowrap" }, D.fmtTime(iso) + " (" + D.fmtDuration(age) + " ago)");
  }

  D.start(function (params) {
    return D.fetchJSON(cfg.api, params).then(function (data) {
      D.setValue("range_label", data.range.label.toLowerCase());
      D.fillTable("layer-table", data.layers, function (l) {
        return D.el("tr", { "data-layer": l.layer },
          D.td(D.el("strong", null, l.layer)), D.td(freshness(l.age_seconds)), D.td(D.fmtInt(l.batch_id), "num"),
          D.td(ago(l.finished_at, l.age_seconds)), D.td(D.fmtInt(l.rows_in), "num"), D.td(D.fmtInt(l.rows_out), "num"),
          D.td(D.fmtInt(l.quarantined), "num"), D.td(D.fmtInt(l.duplicates_dropped), "num"), D.td(D.fmtMs(l.duration_ms), "num"),
          D.td(l.kafka_lag === null ? "–" : D.fmtInt(l.kafka_lag), "num"), D.td(l.table_version === null ? "–" : D.fmtInt(l.table_version), "num"),
          D.td(D.fmtInt(l.range_batches) + " batches · " + D.fmtInt(l.range_rows_in) + " rows", "num"));
      }, "No batch recorded yet: is the pipeline running?");
      D.fillTable("table-versions", data.tables, function (t) {
        return D.el("tr", null, D.td(t.table_name), D.td(D.fmtInt(t.delta_version), "num"), D.td(ago(t.synced_at, t.age_seconds)),
          D.td(freshness(t.age_seconds)));
      }, "Nothing synced yet.");
      var layers = data.layers.map(function (l) { return l.layer; });  // bronze, silver, gold, then others
      data.batches.forEach(function (b) { if (layers.indexOf(b.layer) < 0) { layers.push(b.layer); } });
      D.chart("chart-duration").setOption(Object.assign({}, D.chartBase, {
        color: LAYER_COLORS,
        title: data.batches.length ? undefined : { text: "No batch in this range", left: "center", top: "middle", textStyle: { color: "#5b6675", fontSize: 14, fontWeight: 500 } },
        legend: { top: 0, data: layers },
        grid: { left: 8, right: 24, top: 32, bottom: 8, containLabel: true },
        tooltip: Object.assign({}, D.chartBase.tooltip, { trigger: "axis" }),
        xAxis: { type: "time" },
        yAxis: { type: "value", name: "ms" },
        series: layers.map(function (layer) {
          return {
            name: layer, type: "line", showSymbol: false,
            data: data.batches.filter(function (b) { return b.layer === layer; }).map(function (b) { return [b.finished_at, b.duration_ms]; })
          };
        })
      }), true);
    });
  });
})();
