/* Compare page: expression mix of the chosen sessions side by side, and the owner's trend over their sessions. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("compare-data").textContent);
  var cmp = document.getElementById("compare-chart");
  if (cmp && data.rows.length) {
    new Chart(cmp, {
      type: "bar",
      data: { labels: data.rows.map(function (r) { return r.name; }),
        datasets: data.labels.map(function (l) {
          return { label: l, backgroundColor: data.colors[l], data: data.rows.map(function (r) { return +(r.probabilities[l] * 100).toFixed(1); }) };
        }) },
      options: { animation: false, responsive: true, maintainAspectRatio: false, indexAxis: "y",
        scales: { x: { stacked: true, min: 0, max: 100, title: { display: true, text: "mean probability, % (stacked)" } },
                  y: { stacked: true, ticks: { callback: function (v) { var n = this.getLabelForValue(v); return n.length > 18 ? n.slice(0, 17) + "…" : n; } } } },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 14 } } } },
    });
  }
  var tr = document.getElementById("trend-chart");
  if (tr && data.trend.length) {
    var labels = data.trend.map(function (p) { return p.created_at.slice(0, 10) + " " + p.name; });
    new Chart(tr, {
      type: "line",
      data: { labels: labels, datasets: [
        { label: "mood (valence)", yAxisID: "y", borderColor: "#0072B2", backgroundColor: "#0072B2", spanGaps: false,
          data: data.trend.map(function (p) { return p.valence; }) },
        { label: "people per frame", yAxisID: "y2", borderColor: "#D55E00", backgroundColor: "#D55E00", borderDash: [5, 4], spanGaps: false,
          data: data.trend.map(function (p) { return p.people; }) }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        scales: { y: { min: -1, max: 1, title: { display: true, text: "mood (valence, −1..+1)" } },
                  y2: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false }, title: { display: true, text: "people per frame" } },
                  x: { ticks: { maxRotation: 0, autoSkip: true, callback: function (v, i) { return labels[i].slice(0, 10); } } } },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 14 } } } },
    });
  }
})();
