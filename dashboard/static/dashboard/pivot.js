/* Pivot: one report definition (dashboard/report.py) drives either renderer.
 *  - PivotTable.js (default, keyless, MIT): rows/columns from the report, one measure at a
 *    time from the "aggregator" menu (each report measure is a named aggregator).
 *  - Flexmonster (when FLEXMONSTER_LICENSE_KEY is set): the same rows, columns and measures,
 *    through its documented API (new Flexmonster, updateData, exportTo).
 * The data is polled; the user's layout and filters are kept across updates. */
(function () {
  "use strict";
  var D = window.Dash, cfg = D.config, R = cfg.report;
  var container = document.getElementById("pivot");
  var caption = {}, order = {};
  R.fields.forEach(function (f) { caption[f.name] = f.caption; if (f.order) { order[f.name] = f.order; } });
  var lastData = null;

  function csvCell(v) {
    var s = v === null || v === undefined ? "" : String(v);
    if (/^[=+\-@\t\r]/.test(s)) { s = "'" + s; }  // no formula injection in spreadsheets
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function download(filename, text) {
    var url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
    var a = D.el("a", { href: url, download: filename });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  // --- PivotTable.js ------------------------------------------------------------------------
  function pivotTableRenderer() {
    var $ = window.jQuery, U = $.pivotUtilities, tpl = U.aggregatorTemplates;
    var intFormat = U.numberFormat({ digitsAfterDecimal: 0 });
    var avgFormat = U.numberFormat({ digitsAfterDecimal: 2 });
    var aggregators = {};
    R.measures.forEach(function (m) {
      aggregators[m.caption] = function () { return tpl.sum(intFormat)([caption[m.field]]); };
    });
    aggregators["Avg est. resolution time per event (min)"] = function () {
      return tpl.sumOverSum(avgFormat)([caption.total_estimated_resolution_time, caption.event_count]);
    };
    var numeric = R.fields.filter(function (f) { return f.type === "number"; }).map(function (f) { return f.caption; });
    var sorters = {};
    Object.keys(order).forEach(function (name) { sorters[caption[name]] = U.sortAs(order[name]); });
    var renderers = U.renderers;
    var defaults = {
      rows: R.rows.map(function (n) { return caption[n]; }),
      cols: R.columns.map(function (n) { return caption[n]; }),
      aggregatorName: R.measures[0].caption,
      rendererName: "Table",
      exclusions: {},
      inclusions: {},
      rowOrder: "key_a_to_z",
      colOrder: "key_a_to_z"
    };
    var KEEP = ["rows", "cols", "aggregatorName", "rendererName", "exclusions", "inclusions", "rowOrder", "colOrder"];
    var layout = (function () {
      try { return JSON.parse(D.store.get("pivot-layout") || "null") || {}; } catch (e) { return {}; }
    })();
    var current = null, records = [], stale = false;

    function decorate() {
      $(container).find("th.pvtColLabel, th.pvtRowLabel").each(function () {
        var text = $(this).text();
        if (D.STATUSES.indexOf(text) >= 0) { $(this).addClass("pvt-status-" + text.toLowerCase()); }
      });
    }
    function options() {
      var chosen = {};
      KEEP.forEach(function (k) { chosen[k] = layout[k] !== undefined ? layout[k] : defaults[k]; });
      if (!aggregators[chosen.aggregatorName]) { chosen.aggregatorName = defaults.aggregatorName; }
      return Object.assign({}, chosen, {
        aggregators: aggregators, renderers: renderers, sorters: sorters,
        hiddenFromDragDrop: numeric, hiddenFromAggregators: numeric, unusedAttrsVertical: false,
        onRefresh: function (o) {
          current = o;
          layout = {};
          KEEP.forEach(function (k) { layout[k] = o[k]; });
          D.store.set("pivot-layout", JSON.stringify(layout));
          decorate();
        }
      });
    }
    function busy() {  // do not rebuild the UI under the user's hands
      return $(container).find(".pvtFilterBox:visible").length > 0 || $(".ui-sortable-helper").length > 0;
    }
    function render() {
      if (busy()) { stale = true; return; }
      stale = false;
      $(container).pivotUI(records, options(), true);
    }
    $(document).on("mouseup keyup", function () { if (stale) { setTimeout(render, 50); } });

    return {
      update: function (rows) {
        records = rows.map(function (r) {
          var rec = {};
          R.fields.forEach(function (f) { rec[f.caption] = r[f.name]; });
          return rec;
        });
        render();
      },
      reset: function () { layout = {}; D.store.set("pivot-layout", "{}"); render(); },
      exportCsv: function () {
        if (!current) { return; }
        var ex = current.exclusions || {}, inc = current.inclusions || {};
        var pd = new U.PivotData(records, {
          rows: current.rows, cols: current.cols, sorters: sorters,
          rowOrder: current.rowOrder, colOrder: current.colOrder,
          aggregator: aggregators[current.aggregatorName](),
          filter: function (rec) {
            return Object.keys(ex).every(function (a) { return ex[a].indexOf(String(rec[a])) < 0; })
              && Object.keys(inc).every(function (a) { return !inc[a].length || inc[a].indexOf(String(rec[a])) >= 0; });
          }
        });
        var rowKeys = pd.getRowKeys(), colKeys = pd.getColKeys();
        var header = current.rows.slice();
        colKeys.forEach(function (ck) { header.push(ck.join(" / ") || current.aggregatorName); });
        header.push("Totals");
        var lines = [header];
        var value = function (r, c) { var v = pd.getAggregator(r, c).value(); return v === null || isNaN(v) ? "" : v; };
        rowKeys.forEach(function (rk) {
          var line = rk.slice();
          colKeys.forEach(function (ck) { line.push(value(rk, ck)); });
          line.push(value(rk, []));
          lines.push(line);
        });
        var totals = ["Totals"].concat(current.rows.slice(1).map(function () { return ""; }));
        if (!current.rows.length) { totals = ["Totals"]; }
        colKeys.forEach(function (ck) { totals.push(value([], ck)); });
        totals.push(value([], []));
        lines.push(totals);
        download("status-by-location.csv", "\ufeff" + lines.map(function (l) { return l.map(csvCell).join(","); }).join("\r\n") + "\r\n");
      }
    };
  }

  // --- Flexmonster ----------------------------------------------------------------------------
  function flexmonsterRenderer() {
    var fm = null;
    var mapping = {};
    R.fields.forEach(function (f) { mapping[f.name] = { caption: f.caption, type: f.type }; });
    function hierarchy(name) {
      var h = { uniqueName: name };
      if (order[name]) { h.sortOrder = order[name]; }
      return h;
    }
    function report(rows) {
      return {
        dataSource: { type: "json", data: rows, mapping: mapping },
        slice: {
          rows: R.rows.map(hierarchy),
          columns: R.columns.map(hierarchy).concat([{ uniqueName: "[Measures]" }]),
          measures: R.measures.map(function (m) { return { uniqueName: m.field, aggregation: m.aggregation, caption: m.caption }; })
        },
        options: { grid: { showTotals: "on", showGrandTotals: "on" } }
      };
    }
    return {
      update: function (rows) {
        if (!fm) {
          fm = new window.Flexmonster({
            container: "#pivot",
            componentFolder: cfg.flexmonster.componentFolder,
            licenseKey: cfg.flexmonster.licenseKey,
            toolbar: true,
            height: 600,
            report: report(rows)
          });
        } else {
          fm.updateData({ type: "json", data: rows, mapping: mapping }, { ignoreScroll: true, ignoreSorting: true });
        }
      },
      reset: function () { if (fm) { fm.setReport(report(lastData || [])); } },
      exportCsv: function () { if (fm) { fm.exportTo("csv", { filename: "status-by-location" }); } }
    };
  }

  var renderer = cfg.renderer === "flexmonster" ? flexmonsterRenderer() : pivotTableRenderer();
  document.getElementById("pivot-export").addEventListener("click", function () { renderer.exportCsv(); });
  document.getElementById("pivot-reset").addEventListener("click", function () { renderer.reset(); });

  var lastJson = null;
  D.start(function () {
    return D.fetchJSON(cfg.api).then(function (data) {
      var json = JSON.stringify(data.rows);
      if (json === lastJson) { return; }  // unchanged: keep the view as it is
      lastJson = json;
      lastData = data.rows;
      renderer.update(data.rows);
    });
  });
  window.DashPivot = renderer;  // for tests and the console
})();
