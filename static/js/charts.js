/* Shared Chart.js helpers for the live page and the dashboard (Chart.js is vendored in static/vendor/). */
(function () {
  "use strict";
  function timelineDatasets(timeline, cfg) {
    return cfg.labels.map(function (label) {
      return {
        label: label,
        data: timeline.map(function (b) { return b.probabilities ? +(b.probabilities[label] * 100).toFixed(1) : null; }),
        borderColor: cfg.colors[label], backgroundColor: cfg.colors[label] + "55",
        fill: true, spanGaps: false, pointRadius: 0, tension: 0.25, stack: "shares",
      };
    });
  }
  function makeTimelineChart(canvas, timeline, cfg) {
    return new Chart(canvas, {
      type: "line",
      data: { labels: timeline.map(function (b) { return b.start_s + "s"; }), datasets: timelineDatasets(timeline, cfg) },
      options: {
        animation: false, responsive: true, interaction: { mode: "index", intersect: false },
        scales: { y: { stacked: true, min: 0, max: 100, title: { display: true, text: "share of faces, %" } },
                  x: { title: { display: true, text: "session time" } } },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }
  function updateTimelineChart(chart, timeline, cfg) {
    chart.data.labels = timeline.map(function (b) { return b.start_s + "s"; });
    var fresh = timelineDatasets(timeline, cfg);
    chart.data.datasets.forEach(function (ds, i) { ds.data = fresh[i].data; });
    chart.update();
    chart.canvas.dataset.points = String(timeline.length);
  }
  window.FerCharts = { makeTimelineChart: makeTimelineChart, updateTimelineChart: updateTimelineChart };
})();
