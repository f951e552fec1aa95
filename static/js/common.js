/* Shared page helpers: times in the viewer's time zone, plain durations, confirmation dialogs, QR codes.
   - <time class="local" datetime="ISO"> is rewritten to the viewer's local date and time with the zone shown
     (the server renders UTC as a fallback without JavaScript).
   - <form data-confirm="#dialog-id"> opens that <dialog> on submit; its [data-confirm-ok] button submits the form.
   - <div class="qr" data-qr="URL"> gets an SVG QR code of URL (vendored qrcode-generator, MIT). */
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function duration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    var s = Math.round(seconds);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60); s = s % 60;
    if (m < 60) return s ? m + " min " + s + " s" : m + " min";
    var h = Math.floor(m / 60); m = m % 60;
    return m ? h + " h " + m + " min" : h + " h";
  }
  function clock(seconds) { // session time as m:ss or h:mm:ss
    var s = Math.max(0, Math.round(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }
  function zoneName(d) {
    try {
      var part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(d)
        .filter(function (p) { return p.type === "timeZoneName"; })[0];
      return part ? part.value : "";
    } catch (e) { return ""; }
  }
  function localTime(iso, withDate) {
    var d = new Date(iso);
    if (isNaN(d)) return iso;
    var text = (withDate === false ? "" : d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " ") +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
    return text + " " + zoneName(d);
  }
  function localizeTimes(root) {
    (root || document).querySelectorAll("time.local[datetime]").forEach(function (el) {
      el.textContent = localTime(el.getAttribute("datetime"), el.dataset.date !== "no");
      el.title = "Your time zone: " + (Intl.DateTimeFormat().resolvedOptions().timeZone || zoneName(new Date()));
    });
  }
  function wireConfirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      var dialog = document.querySelector(form.dataset.confirm);
      if (!dialog || typeof dialog.showModal !== "function") return;
      var confirmed = false;
      form.addEventListener("submit", function (ev) {
        if (confirmed) return;
        ev.preventDefault(); dialog.showModal();
        var cancel = dialog.querySelector("[data-confirm-cancel]"); if (cancel) cancel.focus();
      });
      dialog.querySelector("[data-confirm-ok]").addEventListener("click", function () {
        confirmed = true; dialog.close(); form.requestSubmit ? form.requestSubmit() : form.submit();
      });
      var cancelBtn = dialog.querySelector("[data-confirm-cancel]");
      if (cancelBtn) cancelBtn.addEventListener("click", function () { dialog.close(); });
    });
  }
  function drawQr(el) {
    if (typeof qrcode !== "function") return;
    var qr = qrcode(0, "M"); qr.addData(el.dataset.qr); qr.make();
    var n = qr.getModuleCount(), q = 4, size = n + 2 * q, rects = [];
    for (var r = 0; r < n; r++) for (var c = 0; c < n; c++) {
      if (qr.isDark(r, c)) rects.push("M" + (c + q) + " " + (r + q) + "h1v1h-1z");
    }
    el.innerHTML = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ' + size + " " + size +
      '" shape-rendering="crispEdges" role="img"><rect width="100%" height="100%" fill="#fff"/><path fill="#000" d="' +
      rects.join("") + '"/></svg>';
    el.querySelector("svg").setAttribute("aria-label", "QR code of " + el.dataset.qr);
    el.dataset.drawn = "1";
  }
  window.FerFmt = { duration: duration, clock: clock, localTime: localTime, localizeTimes: localizeTimes };
  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(); wireConfirms();
    document.querySelectorAll("[data-qr]").forEach(drawQr);
  });
})();
