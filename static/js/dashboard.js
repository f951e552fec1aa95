/* Finished/ongoing session dashboard: charts from the JSON embedded by the view, and the progress of an upload. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var tl = data.timeline || [];

  // An upload being analysed: poll until all its frames are stored, then reload to show them.
  var progress = document.getElementById("upload-progress");
  if (progress) {
    var expected = Number(progress.dataset.expected), last = -1, still = 0;
    var poll = function () {
      fetch(data.timeline_url + "?source=" + encodeURIComponent(progress.dataset.source), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) {
          if (!d || !d.upload) return;
          var done = d.upload.frames;
          document.getElementById("upload-done").textContent = done;
          document.getElementById("upload-bar").value = done;
          still = done === last ? still + 1 : 0; last = done;
          if (done >= expected || still >= 20) { // finished (or stuck for a minute: show what there is)
            progress.dataset.finished = "1";
            var url = new URL(location.href); ["upload", "frames", "sampling"].forEach(function (k) { url.searchParams.delete(k); });
            location.replace(url.toString());
            return;
          }
          setTimeout(poll, 3000);
        }).catch(function () { setTimeout(poll, 3000); });
    };
    poll();
  }

  // a running session: keep the mood at a glance current (every 5 s), like the live page
  if (data.running && window.FerGlance) {
    setInterval(function () {
      fetch(data.timeline_url, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) { if (d) FerGlance.render(d, data); }).catch(function () {});
    }, 5000);
  }

  var canvas = document.getElementById("timeline-chart");
  if (!canvas || !tl.length) return;
  var chart = FerCharts.makeTimelineChart(canvas, tl, data);
  canvas.dataset.points = String(tl.length);
  var text = document.getElementById("timeline-text");
  if (text) text.textContent = FerCharts.describe(tl, data) + " The table below lists every stretch.";
  var dist = data.distribution && data.distribution.probabilities;
  if (dist) {
    new Chart(document.getElementById("distribution-chart"), {
      type: "bar",
      data: { labels: data.labels, datasets: [{ label: "mean probability, %",
        data: data.labels.map(function (l) { return +(dist[l] * 100).toFixed(1); }),
        backgroundColor: data.labels.map(function (l) { return data.colors[l]; }) }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } },
        scales: { y: { min: 0, max: 100, title: { display: true, text: "mean probability, %" } } } },
    });
  }
  new Chart(document.getElementById("faces-chart"), {
    type: "line",
    data: { datasets: [{ label: "faces per frame", data: FerCharts.withGaps(tl, data.bucket_s, function (b) { return b.mean_face_count; }),
      borderColor: "#1f1f1f", pointRadius: 2, spanGaps: false }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, title: { display: true, text: "faces per frame (mean)" } }, x: FerCharts.timeScale(null, tl) } },
  });
  window.ferDashboardChart = chart;
})();
