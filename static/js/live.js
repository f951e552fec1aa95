/* Live session page: camera -> JPEG frames over the WebSocket -> face boxes, live stats and a live chart.
   Binary frame message = 16-byte header ("FRM1", uint32 sequence, float64 capture time ms, big-endian) + JPEG.
   Every viewer of a running session (the owner in a second tab, an admin) watches the live results over
   /ws/.../watch/ until it starts its own camera (then /ws/.../stream/ carries them); stopping goes back to watching.
   A connection that drops (a server restart, a Redis outage, a network blip) is reopened with backoff
   (0.5 s doubling to 8 s) in the same mode, and the camera resumes by itself; frames sent on the old connection
   that were never answered are counted as lost. */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("live-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  var ws = null, mode = null, stream = null, timer = null, seq = 0, mySource = null, sending = false;
  var sentAt = {}, processed = 0, dropped = 0, cameraStopped = false;
  var retryDelay = 500, retryTimer = null, resultTimes = [];
  var chart = FerCharts.makeTimelineChart($("timeline-chart"), [], cfg);

  function status(text) { var el = $("conn-status"); if (el) el.textContent = text; }
  function showError(text) { var el = $("last-error"); el.hidden = false; el.textContent = text; }

  function renderDistribution(faces) {
    var box = $("distribution"); box.innerHTML = "";
    if (!faces.length) { box.textContent = "No faces."; return; }
    cfg.labels.forEach(function (label) {
      // a tracked face shows its track's smoothed probabilities (steadier), an untracked one its raw ones
      var mean = faces.reduce(function (s, f) { return s + ((f.smoothed_probabilities || f.probabilities)[label] || 0); }, 0) / faces.length;
      var row = document.createElement("div"); row.className = "bar-row"; row.setAttribute("role", "listitem");
      row.innerHTML = '<span class="bar-label"></span><span class="bar"><span class="fill"></span></span><span class="bar-val"></span>';
      row.children[0].textContent = label;
      row.children[1].firstChild.style.width = (mean * 100).toFixed(1) + "%";
      row.children[1].firstChild.style.background = cfg.colors[label];
      row.children[2].textContent = (mean * 100).toFixed(0) + "%";
      box.appendChild(row);
    });
  }

  function renderFaces(ev) {
    var overlay = $("overlay"), video = $("video"), list = $("faces");
    $("face-count").textContent = ev.face_count; $("face-count").dataset.faceCount = ev.face_count;
    list.innerHTML = "";
    ev.faces.forEach(function (f) {
      var shown = f.smoothed_label || f.label, probs = f.smoothed_probabilities || f.probabilities;
      var li = document.createElement("li"); li.textContent = shown + " " + Math.round((probs[shown] || f.score) * 100) + "%";
      li.style.borderLeftColor = cfg.colors[shown]; list.appendChild(li);
    });
    renderDistribution(ev.faces);
    if (!overlay || ev.source !== mySource) return;
    overlay.innerHTML = "";
    var sx = video.clientWidth / ev.width, sy = video.clientHeight / ev.height;
    ev.faces.forEach(function (f) {
      var d = document.createElement("div"); d.className = "face-box";
      d.style.left = f.box[0] * sx + "px"; d.style.top = f.box[1] * sy + "px";
      d.style.width = f.box[2] * sx + "px"; d.style.height = f.box[3] * sy + "px";
      var label = f.smoothed_label || f.label;
      d.style.borderColor = cfg.colors[label];
      var tag = document.createElement("span"); tag.className = "face-label"; tag.textContent = label;
      tag.style.background = cfg.colors[label]; tag.style.color = cfg.text_colors[label];
      d.appendChild(tag); overlay.appendChild(d);
    });
  }

  function onMessage(msg) {
    if (typeof msg.data !== "string") return;
    var ev = JSON.parse(msg.data);
    if (ev.type === "ready") {
      mySource = ev.source || null;
      status(ev.mode === "stream" ? "streaming" : (cameraStopped ? "stopped, watching live" : "watching"));
    } else if (ev.type === "result") {
      if (ev.source === mySource && sentAt[ev.sequence]) {
        $("latency").textContent = Math.round(performance.now() - sentAt[ev.sequence]); delete sentAt[ev.sequence];
      }
      processed += 1; $("frames-processed").textContent = ev.stream ? ev.stream.processed : processed;
      if (ev.source === mySource) noteResult();
      if (ev.stream) { dropped = ev.stream.dropped; $("frames-dropped").textContent = dropped; }
      renderFaces(ev);
    } else if (ev.type === "dropped") {
      delete sentAt[ev.sequence]; dropped += 1; $("frames-dropped").textContent = dropped;
    } else if (ev.type === "error") { showError(ev.code + ": " + ev.detail); delete sentAt[ev.sequence]; }
    else if (ev.type === "ended") { cfg.running = false; status("session ended"); stopCamera(); clearLive(); showEnded(); }
  }

  // Frames analysed per second for this camera over the last 10 s: what the system really gives it.
  function noteResult() {
    var now = performance.now(); resultTimes.push(now);
    while (resultTimes.length && now - resultTimes[0] > 10000) resultTimes.shift();
    var el = $("analysed-rate"); if (el) el.textContent = (resultTimes.length / 10).toFixed(1);
  }

  function connect(path, newMode) {
    var sock = new WebSocket(wsBase + path); sock.binaryType = "arraybuffer";
    ws = sock; mode = newMode;
    sock.onmessage = onMessage;
    sock.onopen = function () { retryDelay = 500; if (sock.onready) sock.onready(); };
    sock.onclose = function (e) {
      if (ws !== sock) return;
      ws = null; mode = null;
      if (e.code >= 4000) { cfg.running = cfg.running && e.code !== 4409; stopCamera(); status("disconnected (" + e.code + ")"); return; }
      if (e.code === 1000 || !cfg.running) { if (cfg.running) status("disconnected"); return; }
      reconnect(newMode);
    };
    sock.onerror = function () { status("connection error"); };
    return sock;
  }

  // The server or the network went away: reopen with backoff, in the same mode; the camera keeps running.
  function reconnect(lastMode) {
    var lost = Object.keys(sentAt).length; sentAt = {};
    if (lost) { dropped += lost; $("frames-dropped").textContent = dropped; }
    if (timer) { clearInterval(timer); timer = null; }
    status("reconnecting in " + (retryDelay / 1000).toFixed(1) + " s…");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(function () {
      if (ws || !cfg.running) return;
      if (lastMode === "stream" && stream) openStream(); else watch();
    }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 8000);
  }

  function openStream() {
    connect(cfg.stream_path, "stream").onready = function () {
      if (timer) clearInterval(timer);
      timer = setInterval(sendFrame, 1000 / cfg.target_fps); $("stop-camera").disabled = false;
    };
  }

  function closeSocket() {
    if (ws) { var sock = ws; ws = null; mode = null; sock.onclose = null; sock.close(1000); }
  }

  // Live results without a camera: every viewer of a running session (owner's other tabs, admins).
  function watch() { if (cfg.running && !ws) connect(cfg.watch_path, "watch"); }

  function sendFrame() {
    var video = $("video");
    if (!ws || mode !== "stream" || ws.readyState !== 1 || sending || !video.videoWidth) return;
    if (ws.bufferedAmount > 2000000) return; // the network is the bottleneck: skip this tick
    var w = video.videoWidth, h = video.videoHeight, scale = Math.min(1, 1280 / w, 720 / h);
    var c = sendFrame.canvas || (sendFrame.canvas = document.createElement("canvas"));
    c.width = Math.round(w * scale); c.height = Math.round(h * scale);
    c.getContext("2d").drawImage(video, 0, 0, c.width, c.height);
    sending = true;
    c.toBlob(function (blob) {
      sending = false;
      if (!blob || !ws || mode !== "stream" || ws.readyState !== 1) return;
      blob.arrayBuffer().then(function (jpeg) {
        var n = seq++, buf = new Uint8Array(16 + jpeg.byteLength), view = new DataView(buf.buffer);
        buf.set([70, 82, 77, 49], 0); view.setUint32(4, n); view.setFloat64(8, Date.now());
        buf.set(new Uint8Array(jpeg), 16);
        if (!ws || mode !== "stream") return;
        sentAt[n] = performance.now(); ws.send(buf.buffer);
      });
    }, "image/jpeg", 0.8);
  }

  function startCamera() {
    $("start-camera").disabled = true; status("starting camera…");
    $("camera-help").hidden = true;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      $("start-camera").disabled = false; status("camera unavailable"); cameraHelp({ name: "SecurityError" }); return;
    }
    navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false })
      .then(function (s) {
        stream = s; $("video").srcObject = s; $("video-wrap").classList.remove("off");
        closeSocket(); // the stream socket carries the session's results from now on
        cameraStopped = false; processed = 0; dropped = 0; resultTimes = [];
        openStream();
      })
      .catch(function (err) { $("start-camera").disabled = false; status("camera unavailable"); cameraHelp(err); });
  }

  // What a camera error means and what to do about it (instead of the raw DOMException).
  var CAMERA_HELP = {
    NotAllowedError: ["Camera permission was denied.", "Allow the camera for this site (the camera icon in the address bar, or the browser's site settings), then press Start camera again. You can also upload a video from the dashboard."],
    SecurityError: ["The browser blocked the camera.", "Cameras work only on pages served over HTTPS (or on localhost). Ask whoever runs this platform to serve it over HTTPS."],
    NotFoundError: ["No camera was found.", "Connect a camera (or enable it in the system settings) and press Start camera again, or upload a video from the dashboard."],
    NotReadableError: ["The camera is busy.", "Another app or browser tab is using it. Close that app or tab and press Start camera again."],
    OverconstrainedError: ["The camera cannot deliver a usable picture.", "Try another camera or browser."],
    AbortError: ["The camera stopped while starting.", "Press Start camera again; if it keeps failing, restart the browser."],
  };
  function cameraHelp(err) {
    var name = (err && err.name) || "Error";
    var help = CAMERA_HELP[name] || ["The camera could not be started.", "Press Start camera again; if it keeps failing, try another browser. (" + name + ")"];
    $("camera-help-title").textContent = help[0]; $("camera-help-text").textContent = help[1];
    $("camera-help").hidden = false; $("camera-help").dataset.error = name;
  }

  function showEnded() {
    var el = $("ended-live"); if (!el) return;
    el.hidden = false;
    var start = $("start-camera"); if (start) start.disabled = true;
  }

  // After Stop or the end: no stale boxes over a dark video, no "7 faces now" from minutes ago.
  function clearLive() {
    var overlay = $("overlay"); if (overlay) overlay.innerHTML = "";
    $("face-count").textContent = "–"; $("face-count").dataset.faceCount = "0";
    $("faces").innerHTML = ""; $("distribution").innerHTML = '<p class="muted">No live frames.</p>';
    $("latency").textContent = "–";
    resultTimes = []; var rate = $("analysed-rate"); if (rate) rate.textContent = "–";
    var wrap = $("video-wrap"); if (wrap) wrap.classList.add("off");
  }

  function stopCamera() {
    var wasStreaming = mode === "stream" || stream !== null;
    clearTimeout(retryTimer);
    if (timer) clearInterval(timer); timer = null;
    if (stream) stream.getTracks().forEach(function (t) { t.stop(); }); stream = null;
    if (mode === "stream") closeSocket();
    var start = $("start-camera"), stop = $("stop-camera");
    if (start) start.disabled = !cfg.running; if (stop) stop.disabled = true;
    if (wasStreaming) { cameraStopped = true; status(cfg.running ? "stopped" : "session ended"); clearLive(); }
    if (wasStreaming && cfg.running) watch(); // keep seeing the session's live results
  }

  function refreshChart() {
    fetch(cfg.timeline_url + "?bucket=" + cfg.bucket_s, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d) return;
        FerCharts.updateTimelineChart(chart, d.timeline, cfg);
        $("timeline-text").textContent = FerCharts.describe(d.timeline, cfg);
        FerCharts.fillTable(document.querySelector("#timeline-alt tbody"), d.timeline, 12);
        renderGlance(d);
        $("frames-dropped").textContent = Math.max(dropped, d.summary.frames_dropped);
        if (mode !== "stream") $("frames-processed").textContent = d.summary.frames_processed;
      }).catch(function () {});
  }

  function renderGlance(d) { FerGlance.render(d, cfg); }

  if (cfg.can_stream) {
    $("start-camera").addEventListener("click", startCamera);
    $("stop-camera").addEventListener("click", stopCamera);
  }
  watch();
  refreshChart(); setInterval(refreshChart, 3000);
})();
