/* Finished/ongoing session dashboard: charts from the JSON embedded by the view. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var tl = data.timeline || [];
  var canvas = document.getElementById("timeline-chart");
  if (!canvas || !tl.length) return;
  var chart = FerCharts.makeTimelineChart(canvas, tl, data);
  canvas.dataset.points = String(tl.length);
  var dist = data.distribution && data.distribution.probabilities;
  if (dist) {
    new Chart(document.getElementById("distribution-chart"), {
      type: "bar",
      data: { labels: data.labels, datasets: [{ label: "mean share, %",
        data: data.labels.map(function (l) { return +(dist[l] * 100).toFixed(1); }),
        backgroundColor: data.labels.map(function (l) { return data.colors[l]; }) }] },
      options: { animation: false, plugins: { legend: { display: false } }, scales: { y: { min: 0, max: 100 } } },
    });
  }
  new Chart(document.getElementById("faces-chart"), {
    type: "line",
    data: { labels: tl.map(function (b) { return b.start_s + "s"; }),
      datasets: [{ label: "faces per frame", data: tl.map(function (b) { return b.mean_face_count; }),
        borderColor: "#333", pointRadius: 2 }] },
    options: { animation: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
  });
  window.ferDashboardChart = chart;
})();
