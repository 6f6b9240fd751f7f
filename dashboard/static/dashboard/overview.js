/* Overview: tiles, events by status (pie), events by city (bars), status over time. */
(function () {
  "use strict";
  var D = window.Dash, C = D.COLORS;

  function renderTiles(t) {
    D.setValue("events_per_minute", D.fmtNum(t.events_per_minute));
    D.setValue("events_per_minute_window", String(t.events_per_minute_window));
    D.setValue("servers_red", D.fmtInt(t.servers.Red));
    D.setValue("servers_orange", D.fmtInt(t.servers.Orange));
    D.setValue("servers_green", D.fmtInt(t.servers.Green));
    D.setValue("servers_total", D.fmtInt(t.servers.total));
    D.setValue("open_incidents", D.fmtInt(t.open_incidents));
    D.setValue("mttr", t.mttr.incidents ? D.fmtDuration(t.mttr.seconds) : "–");
    D.setValue("mttr_incidents", D.fmtInt(t.mttr.incidents));
  }

  function renderPie(counts) {
    var total = D.STATUSES.reduce(function (a, s) { return a + (counts[s] || 0); }, 0);
    D.chart("chart-status").setOption(Object.assign({}, D.chartBase, {
      color: D.STATUSES.map(function (s) { return C[s]; }),
      title: total ? undefined : { text: "No events in this range", left: "center", top: "middle", textStyle: { color: "#5b6675", fontSize: 14, fontWeight: 500 } },
      legend: { bottom: 0, data: D.STATUSES },
      tooltip: Object.assign({}, D.chartBase.tooltip, { trigger: "item", formatter: "{b}: {c} events ({d}%)" }),
      series: [{
        type: "pie", radius: ["42%", "70%"], center: ["50%", "46%"], avoidLabelOverlap: true,
        itemStyle: { borderColor: "#fff", borderWidth: 2 },
        label: { formatter: "{b}: {c} ({d}%)", fontSize: 12.5 },
        data: D.STATUSES.map(function (s) { return { name: s, value: counts[s] || 0 }; }).filter(function (d) { return d.value > 0; })
      }]
    }), true);
  }

  function renderCities(rows) {
    var cities = rows.slice().reverse();  // busiest at the top
    D.chart("chart-city").setOption(Object.assign({}, D.chartBase, {
      color: D.STATUSES.map(function (s) { return C[s]; }),
      title: rows.length ? undefined : { text: "No events yet", left: "center", top: "middle", textStyle: { color: "#5b6675", fontSize: 14, fontWeight: 500 } },
      legend: { bottom: 0, data: D.STATUSES },
      grid: { left: 8, right: 24, top: 8, bottom: 36, containLabel: true },
      tooltip: Object.assign({}, D.chartBase.tooltip, { trigger: "axis", axisPointer: { type: "shadow" } }),
      xAxis: { type: "value", minInterval: 1 },
      yAxis: { type: "category", data: cities.map(function (r) { return r.city + " (" + r.country_code + ")"; }) },
      series: D.STATUSES.map(function (s) {
        return { name: s, type: "bar", stack: "events", barMaxWidth: 22, data: cities.map(function (r) { return r[s]; }) };
      })
    }), true);
  }

  function renderTime(t) {
    D.setValue("bucket_label", t.bucket_minutes === 1 ? "per minute" : "per " + t.bucket_minutes + " minutes");
    D.chart("chart-time").setOption(Object.assign({}, D.chartBase, {
      color: D.STATUSES.map(function (s) { return C[s]; }),
      title: t.times.length ? undefined : { text: "No events in this range", left: "center", top: "middle", textStyle: { color: "#5b6675", fontSize: 14, fontWeight: 500 } },
      legend: { top: 0, data: D.STATUSES },
      grid: { left: 8, right: 24, top: 32, bottom: 8, containLabel: true },
      tooltip: Object.assign({}, D.chartBase.tooltip, { trigger: "axis" }),
      xAxis: { type: "time" },
      yAxis: { type: "value", minInterval: 1, name: "events" },
      series: D.STATUSES.map(function (s) {
        return {
          name: s, type: "bar", stack: "events", barMaxWidth: 18,
          data: t.times.map(function (time, i) { return [time, t.series[s][i]]; })
        };
      })
    }), true);
  }

  D.start(function (params) {
    return D.fetchJSON(D.config.api, params).then(function (data) {
      D.setValue("range_label", data.range.label);
      renderTiles(data.tiles);
      renderPie(data.events_by_status);
      renderCities(data.events_by_city);
      renderTime(data.status_over_time);
    });
  });
})();
