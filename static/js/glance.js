/* Mood at a glance (templates/sessions_app/_glance.html): fills the tiles and the alert list from the
   {"mood", "people", "attention", "alerts"} parts of timeline.json. Used by the live page and by the dashboard of a running
   session. cfg: {"min_faces", "bucket_s"}. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var TREND = { rising: "↑ rising", falling: "↓ falling", steady: "→ steady" };
  function setText(id, text) { var el = $(id); if (el && el.textContent !== text) el.textContent = text; }
  function signed(v) { return (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(2); }
  function render(d, cfg) {
    var mood = d.mood || {}, tile = $("mood-tile"), marker = $("mood-marker");
    setText("mood-word", mood.word || "not enough faces"); $("mood-word").dataset.word = mood.word || "";
    tile.className = "tile mood-" + (mood.word || "none");
    setText("mood-valence", mood.valence === null || mood.valence === undefined ? "needs " + cfg.min_faces + " faces in " + cfg.bucket_s + " s" : "valence " + signed(mood.valence) + " at " + FerFmt.clock(mood.as_of_s));
    if (mood.valence === null || mood.valence === undefined) marker.hidden = true;
    else { marker.hidden = false; marker.style.left = ((Math.max(-1, Math.min(1, mood.valence)) + 1) * 50).toFixed(1) + "%"; }
    setText("mood-trend", TREND[mood.trend] || "–"); $("mood-trend").dataset.trend = mood.trend || "";
    setText("people-now", d.people && d.people.people !== null ? String(d.people.people) : "–");
    var att = d.attention || {};
    var hasAtt = att.attention !== null && att.attention !== undefined;
    setText("attention-now", hasAtt ? Math.round(att.attention * 100) + "%" : "–");
    setText("attention-detail", hasAtt ? "of " + att.people + " people at " + FerFmt.clock(att.as_of_s) : "needs " + cfg.min_faces + " people in " + cfg.bucket_s + " s");
    setText("negative-now", mood.negative === null || mood.negative === undefined ? "–" : Math.round(mood.negative * 100) + "%");
    var alerts = d.alerts, banner = $("alert-banner"), list = $("alert-list");
    if (alerts && alerts.enabled && banner && list) {
      banner.hidden = !alerts.active;
      var items = alerts.episodes.map(function (a) {
        return "from " + FerFmt.duration(a.start_s) + " to " + FerFmt.duration(a.end_s) + " into the session (peak " + Math.round(a.peak * 100) + "%)";
      });
      if (list.children.length !== items.length || (items.length && list.lastChild.textContent !== items[items.length - 1])) {
        list.innerHTML = ""; items.forEach(function (t) { var li = document.createElement("li"); li.textContent = t; list.appendChild(li); });
      }
      list.dataset.count = String(items.length);
    }
  }

  window.FerGlance = { render: render };
})();
