/* Shared Chart.js helpers for the live page and the dashboard (Chart.js is vendored in static/vendor/).
   The time axis is linear in seconds of session time: each bucket is a bar over its own seconds, and a stretch
   without frames (or with too few faces) has no bar, so a 100 s pause shows as 100 s of empty chart. Values are mean
   probabilities of each expression over the faces of a bucket, stacked to 100%. */
(function () {
  "use strict";
  /* Line points of a per-bucket value: a flat step over [start_s, end_s) per bucket, a null point (a gap) where
     there were no frames. */
  function withGaps(timeline, bucketS, value) {
    var points = [];
    timeline.forEach(function (b, i) {
      var prev = timeline[i - 1], y = value(b);
      if (prev && b.start_s > prev.end_s) points.push({ x: prev.end_s + (b.start_s - prev.end_s) / 2, y: null });
      points.push({ x: b.start_s, y: y });
      points.push({ x: b.end_s - 0.01, y: y }); // distinct x values: Chart.js stacks datasets by x
    });
    return points;
  }
  /* Stacked bars on a linear time axis: one bar per bucket, centred on it and exactly one bucket wide (Chart.js sizes
     bars by the smallest distance between x values); a bucket without frames has no bar, so a pause stays empty. */
  function timelineDatasets(timeline, cfg) {
    return cfg.labels.map(function (label) {
      return {
        label: label,
        data: timeline.filter(function (b) { return b.probabilities; }).map(function (b) {
          return { x: (b.start_s + b.end_s) / 2, y: +(b.probabilities[label] * 100).toFixed(1) };
        }),
        backgroundColor: cfg.colors[label], borderWidth: 0, barPercentage: 1, categoryPercentage: 1, stack: "shares",
      };
    });
  }
  var NICE_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  function niceStep(span) { // at most ~6 intervals, on round minutes/hours
    for (var i = 0; i < NICE_S.length; i++) if (span / NICE_S[i] <= 6) return NICE_S[i];
    return 86400 * Math.ceil(span / (6 * 86400));
  }
  function timeScale(title, timeline) {
    var end = timeline && timeline.length ? timeline[timeline.length - 1].end_s : 60;
    return {
      type: "linear", min: 0, max: end, title: { display: true, text: title || "session time (min:s)" },
      ticks: { stepSize: niceStep(end), autoSkip: true, maxRotation: 0, callback: function (v) { return FerFmt.clock(v); } },
    };
  }
  function fitTimeScale(scale, timeline) {
    var fresh = timeScale(scale.title.text, timeline);
    scale.max = fresh.max; scale.ticks.stepSize = fresh.ticks.stepSize;
  }
  function makeTimelineChart(canvas, timeline, cfg) {
    var chart = new Chart(canvas, {
      type: "bar",
      data: { datasets: timelineDatasets(timeline, cfg) },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false, parsing: true,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: { y: { stacked: true, min: 0, max: 100, title: { display: true, text: "mean probability, %" } },
                  x: Object.assign(timeScale(null, timeline), { stacked: true, offset: false }) },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 14, color: "#1f1f1f" } },
          tooltip: { callbacks: { title: function (items) {
            return items.length ? FerFmt.clock(items[0].parsed.x - cfg.bucket_s / 2) + "–" + FerFmt.clock(items[0].parsed.x + cfg.bucket_s / 2) : "";
          } } },
        },
      },
    });
    canvas.dataset.points = String(timeline.length);
    return chart;
  }
  function updateTimelineChart(chart, timeline, cfg) {
    var fresh = timelineDatasets(timeline, cfg);
    chart.data.datasets.forEach(function (ds, i) { ds.data = fresh[i].data; });
    fitTimeScale(chart.options.scales.x, timeline);
    chart.update();
    chart.canvas.dataset.points = String(timeline.length);
  }
  function topLabel(b) {
    return b.dominant ? b.dominant + " " + Math.round(b.probabilities[b.dominant] * 100) + "%" : "too few faces";
  }
  /* One sentence describing the newest bucket (the chart's text alternative). */
  function describe(timeline, cfg) {
    if (!timeline.length) return "No frames yet.";
    var last = timeline[timeline.length - 1];
    var span = FerFmt.clock(last.start_s) + "–" + FerFmt.clock(last.end_s);
    if (!last.probabilities) return "Latest " + cfg.bucket_s + " s (" + span + "): fewer than " + cfg.min_faces + " faces, nothing shown.";
    var ranked = cfg.labels.slice().sort(function (a, b) { return last.probabilities[b] - last.probabilities[a]; });
    return "Latest " + cfg.bucket_s + " s (" + span + "), " + last.faces + " face observations: " + ranked.slice(0, 3).map(function (l) {
      return l + " " + Math.round(last.probabilities[l] * 100) + "%";
    }).join(", ") + ". " + timeline.length + " buckets with frames so far.";
  }
  function fillTable(tbody, timeline, limit) {
    var rows = limit ? timeline.slice(-limit) : timeline;
    tbody.innerHTML = "";
    rows.forEach(function (b) {
      var tr = document.createElement("tr");
      [FerFmt.clock(b.start_s) + "–" + FerFmt.clock(b.end_s), String(b.faces), topLabel(b),
       b.valence === null ? "–" : (b.valence >= 0 ? "+" : "−") + Math.abs(b.valence).toFixed(2)].forEach(function (text, i) {
        var td = document.createElement("td"); td.textContent = text; if (i === 1 || i === 3) td.className = "num"; tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }
  window.FerCharts = { makeTimelineChart: makeTimelineChart, updateTimelineChart: updateTimelineChart, describe: describe,
    fillTable: fillTable, withGaps: withGaps, timeScale: timeScale };
})();
