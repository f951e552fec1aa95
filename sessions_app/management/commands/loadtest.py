"""``manage.py loadtest``: N WebSocket camera clients against any running server, with real photos as frames.

Against a deployed server (no database access needed; also over https/wss)::

    python manage.py loadtest --url https://school-server.lan --username teacher --password '...' \\
        --ca root.crt --size 640x480 --clients 10 --fps 2 --seconds 30 \\
        --images ../shared/data/faces/group_photos/*.jpg [--json]

    python manage.py loadtest --url http://127.0.0.1:8000 --username teacher --password teacher-demo-pass \\
        --size 640x480 --ramp 5:30:5 --target-p95-ms 300 --images ... --json

How it talks to the server (all over HTTP(S), like a browser and an API client would):

1. logs in through the HTML login form (``/accounts/login/``: GET for the CSRF cookie, POST with the token) and
   keeps the session cookie, which the WebSocket handshake needs;
2. gets an API token (``POST /api/v1/auth/token/``) and creates one ``crowd`` session per client through the REST
   API (``POST /api/v1/sessions/``; ``--kind classroom`` for classroom sessions, whose cameras' keyframes look
   for faces from ``FER_CLASSROOM_MIN_FACE_PX``);
3. opens one camera WebSocket per session (``/ws/sessions/<id>/stream/``, ``ws://`` or ``wss://``), streams JPEG
   frames (with the ``FRM1`` header carrying the sequence number and capture time) at ``--fps`` for ``--seconds``,
   then stops as a camera does (the ``stop`` message: a frame still waiting for an analysis slot is dropped as
   ``stopped`` instead of being analysed seconds late while the server drains) and waits until every frame is
   accounted for (result, dropped or error) or the drain timeout passes. Like a
   webcam, each client films one scene: client *i* starts on photo *i* (round-robin), sends noisy copies of it
   (``scene_variants``: sensor noise, so no two consecutive frames are equal) and moves to the next photo every
   ``--scene-seconds`` (default 10 s, a scene cut). The clients' cuts are spread over the scene length, as
   independent cameras' cuts are (``--scene-cuts independent``, the default: client *i* cuts ``frac(i * 0.618)`` of a
   scene earlier than client 0); ``--scene-cuts together`` cuts every client in the same instant (a whole building's
   lights switched, the worst burst of full detections). ``--scene-seconds 0`` sends a different photo every frame,
   as this command did first: every frame is a scene cut and gets full face detection, the worst case;
4. ends the sessions through the API (also after a failure or Ctrl-C).

Without ``--username`` it creates a throw-away user (``loadtest-<random>``) in this process's database first (so run
it with the server's ``DATABASE_URL``) and then does the same as above.

``--size WxH`` letterboxes every photo into a WxH frame (scaled to fit, grey borders, JPEG quality 80 like the
browser's ``canvas.toBlob``), e.g. 640x480 as a VGA webcam sends. Without it the photos are sent as they are (within
the frame limits).

``--ramp N1,N2,...`` (or ``start:stop:step``, stop included) runs one step per client count, in ascending order,
stopping after the first step that misses the target: p95 latency at most ``--target-p95-ms`` (default 300 ms), no
errors, nothing unanswered, and at most ``--max-dropped-pct`` (default 2 %) of the frames dropped. It reports the
largest count that met it.

``--json`` prints one object per run: ``clients, fps, seconds, size, scene_seconds, scene_cuts, kind, frames_sent,
frames_processed, frames_dropped, dropped_by_reason {reason: count}, faces_detected, errors, frame_errors, unanswered,
clients_connected, latency_ms {p50, p95, max}, per_client_processed_fps {min, mean, max}, analysed_fps_over_time
[{t_s, fps}], memory_mb {web_peak, workers_peak}, wall_s, session_ids``. Units: latency in milliseconds (send to
result, measured in the client), rates in frames per second (``per_client_processed_fps``: results received by a
client / its streaming time; ``analysed_fps_over_time``: results of all clients arriving in second ``[t_s, t_s +
1)`` after the start), memory in MB (peak RSS, sampled every 0.5 s, of the local daphne process listening on the
URL's port and of the local Celery workers on the same broker and queue as that daphne; ``null`` when the server is
not on this machine or they cannot be seen). With ``--ramp``: ``{"target_p95_ms", "max_dropped_pct", "steps": [one
object per step, plus "meets_target" and "missed" (reasons)], "max_clients_meeting_target"}`` (``null`` when no step
met it).

Accounting: every frame sent gets exactly one answer (``result``, ``dropped`` or ``error`` event), or is counted as
``unanswered`` when none came before the drain timeout, so ``frames_sent == frames_processed + frames_dropped +
frame_errors + unanswered``. ``frame_errors`` counts error events answering one of the sent frames; ``errors`` is
``frame_errors`` plus everything else that went wrong (error events for no known frame, clients that failed to
connect or broke off, whose messages go to stderr).

A malformed URL, a server that cannot be reached or refuses, a TLS certificate that does not verify, a wrong password
and a run where no client could connect end with a ``CommandError`` (one line, no traceback).
"""

from __future__ import annotations

import asyncio
import getpass
import http.client
import http.cookiejar
import ipaddress
import json
import secrets
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.imageio import FRAME_HEADER, FRAME_HEADER_MAGIC, letterbox

#: Seconds between two ramp steps (the server settles: last results stored, sockets closed).
RAMP_PAUSE_S = 2.0
#: JPEG quality of letterboxed frames (the browser's ``canvas.toBlob("image/jpeg", 0.8)``).
FRAME_JPEG_QUALITY = 80


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0..100) of ``values`` rounded to 0.1, ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return round(ordered[k], 1)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height in pixels, each 16..4096). Raises ``CommandError``."""
    try:
        w, h = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise CommandError(f"--size must look like 640x480, not {text!r}") from None
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise CommandError(f"--size {text}: width and height must be 16..4096 pixels")
    return w, h


def parse_ramp(text: str) -> list[int]:
    """Client counts of ``--ramp``: ``"5,10,20"`` or ``"5:30:5"`` (start:stop:step, stop included), returned sorted
    ascending without repeats. Raises ``CommandError`` for anything else or counts below 1."""
    try:
        if ":" in text:
            start, stop, step = (int(p) for p in text.split(":"))
            if step < 1:
                raise ValueError
            counts = list(range(start, stop + 1, step))
        else:
            counts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise CommandError(f"--ramp must look like 5,10,20 or 5:30:5, not {text!r}") from None
    if not counts or min(counts) < 1:
        raise CommandError(f"--ramp {text}: client counts must be at least 1")
    return sorted(set(counts))


def load_frames(paths: list[str], size: tuple[int, int] | None = None) -> list[bytes]:
    """The frames to send, one per image file, as JPEG bytes.

    With ``size`` (width, height): each image letterboxed into that size (``letterbox``) and encoded at quality
    ``FRAME_JPEG_QUALITY``. Without: the file itself, re-encoded at quality 85 only when it is not a JPEG, too large
    in bytes, or larger than ``FER_MAX_FRAME_WIDTH`` x ``FER_MAX_FRAME_HEIGHT`` (then scaled down to fit).
    Raises ``CommandError`` for files that are missing or not images."""
    import cv2

    from inference.imageio import ImageDecodeError, decode_image

    frames = []
    for p in paths:
        try:
            data = Path(p).read_bytes()
            image = decode_image(data)
        except (OSError, ImageDecodeError) as exc:
            raise CommandError(f"cannot read image {p}: {exc}") from None
        if size is not None:
            image = letterbox(image, size)
            data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])[1].tobytes()
        else:
            h, w = image.shape[:2]
            scale = min(1.0, settings.FER_MAX_FRAME_WIDTH / w, settings.FER_MAX_FRAME_HEIGHT / h)
            if scale < 1.0 or not data.startswith(b"\xff\xd8\xff") or len(data) > settings.FER_MAX_FRAME_BYTES:
                image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
                data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
        frames.append(data)
    return frames


#: Noisy copies of each photo streamed in turn while a client's scene lasts (``--scene-seconds``).
SCENE_VARIANTS = 8
#: Standard deviation of the sensor noise added to each copy, in grey levels: about what a webcam shows in a lit
#: classroom (EMVA 1288 temporal dark noise plus shot noise of an 8-bit consumer sensor, 1-3 DN).
SCENE_NOISE_SIGMA = 2.0


def scene_variants(frames: list[bytes], variants: int = SCENE_VARIANTS, sigma: float = SCENE_NOISE_SIGMA,
                   seed: int = 0) -> list[list[bytes]]:  # fmt: skip
    """For each JPEG in ``frames``, ``variants`` JPEGs of the same picture with independent Gaussian noise of
    ``sigma`` grey levels (quality ``FRAME_JPEG_QUALITY``): consecutive frames of a still camera, which differ
    pixel by pixel but show one scene. Returns ``[[bytes] * variants] * len(frames)``."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    scenes = []
    for data in frames:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
        copies = []
        for _ in range(variants):
            noisy = np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)
            copies.append(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])[1].tobytes())
        scenes.append(copies)
    return scenes


#: ``--scene-cuts`` choices: each client's cuts at its own phase of the scene, or every client's in the same instant.
SCENE_CUTS = ("independent", "together")
#: Golden-ratio step between consecutive clients' cut phases (fraction of a scene): any number of clients gets
#: phases spread nearly evenly over the scene (a low-discrepancy sequence), with no two equal.
CUT_PHASE_STEP = 0.6180339887


def cut_phase(offset: int, scene_cuts: str) -> float:
    """How far into its first scene client ``offset`` starts, as a fraction of a scene (0 <= phase < 1): 0 for
    every client with ``"together"``, ``frac(offset * CUT_PHASE_STEP)`` with ``"independent"``."""
    return (offset * CUT_PHASE_STEP) % 1.0 if scene_cuts == "independent" else 0.0


def frame_for(
    scenes: list[list[bytes]], n: int, *, offset: int, fps: float, scene_seconds: float, phase: float = 0.0
) -> bytes:
    """The bytes a client sends as its frame ``n`` (0, 1, ...).

    ``scene_seconds > 0``: a still camera whose scene changes every ``scene_seconds`` s: client ``offset`` starts on
    photo ``offset`` and shows its noisy copies in turn, then the next photo; ``phase`` (``cut_phase``, a fraction
    of a scene) is how far into its first scene it starts, so its first cut comes ``(1 - phase) * scene_seconds``
    after its first frame. ``scene_seconds == 0``: a different photo every frame (round-robin from ``offset``), so
    every frame is a scene cut and gets full face detection: the worst case of the streaming pipeline."""
    if scene_seconds <= 0:
        return scenes[(n + offset) % len(scenes)][0]
    scene = scenes[(offset + int((n / fps + phase * scene_seconds) // scene_seconds)) % len(scenes)]
    return scene[n % len(scene)]


# ---------------------------------------------------------------------------------------------- HTTP client
def tls_context(*, ca: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The TLS context for https/wss: the system's trust store, plus the PEM file ``ca`` (e.g. Caddy's ``tls
    internal`` root.crt) when given; ``insecure`` turns certificate and host name checks off. Raises
    ``CommandError`` when ``ca`` cannot be loaded."""
    context = ssl.create_default_context()
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise CommandError(f"--ca {ca}: cannot load the certificate: {exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Server:
    """The HTTP side of one server at ``base_url`` (``http[s]://host[:port]``, no path): login form, API token and
    the sessions API. ``context``: TLS context for https; ``timeout``: seconds per request. Every failure raises
    ``CommandError`` with one line saying what went wrong."""

    def __init__(self, base_url: str, *, context: ssl.SSLContext | None = None, timeout: float = 30.0):
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise CommandError(f"--url must be http://host[:port] or https://host[:port], not {base_url!r}")
        try:
            parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise CommandError(f"--url {base_url!r}: bad port") from None
        self.base = f"{parsed.scheme}://{parsed.netloc}"
        self.scheme, self.host = parsed.scheme, parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.ws_base = ("wss://" if parsed.scheme == "https" else "ws://") + parsed.netloc
        self.context = context if parsed.scheme == "https" else None
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        handlers: list = [urllib.request.HTTPCookieProcessor(self.jar)]
        if self.context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.context))
        self.opener = urllib.request.build_opener(*handlers)
        self.token: str | None = None

    def _open(self, method: str, path: str, *, data: dict | None = None, json_body: dict | None = None,
              headers: dict | None = None) -> tuple[int, bytes]:  # fmt: skip
        """One request; returns ``(status, body)`` for any HTTP status, raises ``CommandError`` when the server
        cannot be reached (refused, unknown host, TLS failure, timeout)."""
        url = self.base + path
        body = None
        all_headers = {"Origin": self.base, "Referer": url, **(headers or {})}
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        if self.token:
            all_headers["Authorization"] = f"Token {self.token}"
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise CommandError(
                    f"{self.base}: TLS certificate not trusted ({reason.verify_message}); pass --ca FILE (the "
                    "server's CA certificate, e.g. Caddy's root.crt) or --insecure"
                ) from None
            raise CommandError(f"{self.base}: cannot reach the server ({reason})") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise CommandError(f"{self.base}: {method} {path} failed ({type(exc).__name__}: {exc})") from None

    def login(self, username: str, password: str) -> str:
        """Log in through the HTML login form; returns the ``Cookie`` header value for the WebSocket handshake
        (session and CSRF cookies). Raises ``CommandError`` for a wrong password, a lockout or an unexpected
        answer."""
        status, _ = self._open("GET", "/accounts/login/")
        csrf = next((c.value for c in self.jar if c.name == "csrftoken"), None)
        if status != 200 or csrf is None:
            raise CommandError(f"{self.base}/accounts/login/ answered {status} without a CSRF cookie: not this app?")
        form = {"username": username, "password": password, "csrfmiddlewaretoken": csrf}
        status, _ = self._open("POST", "/accounts/login/", data=form)
        cookies = {c.name: c.value for c in self.jar}
        if "sessionid" not in cookies:
            if status == 429:
                raise CommandError(f"login as {username!r} refused: locked out after too many wrong passwords")
            if status == 403:
                raise CommandError(f"login as {username!r} refused with 403 (CSRF): is the URL the site's own name?")
            raise CommandError(
                f"login as {username!r} at {self.base} failed (HTTP {status}): wrong username or password"
            )
        return "; ".join(f"{k}={v}" for k, v in cookies.items())

    def api_login(self, username: str, password: str) -> None:
        """Get the user's API token (``POST /api/v1/auth/token/``) for the following API calls. Raises
        ``CommandError`` when refused."""
        status, body = self._open("POST", "/api/v1/auth/token/", data={"username": username, "password": password})
        if status != 200:
            raise CommandError(f"API token refused (HTTP {status}): {body[:200].decode(errors='replace')}")
        self.token = json.loads(body)["token"]

    def session_create(self, *, name: str, fps: float, kind: str = "crowd") -> int:
        """Create a running session of ``kind`` (``"crowd"`` or ``"classroom"``) at ``fps`` frames/s through the API;
        returns its id. Raises ``CommandError`` when refused."""
        status, body = self._open("POST", "/api/v1/sessions/", json_body={"name": name, "kind": kind,
                                                                          "target_fps": fps})  # fmt: skip
        if status != 201:
            raise CommandError(f"creating a session failed (HTTP {status}): {body[:200].decode(errors='replace')}")
        return int(json.loads(body)["id"])

    def session_end(self, session_id: int) -> bool:
        """End the session through the API; ``True`` when ended now or already, ``False`` when the server refused
        or could not be reached (never raises: used in cleanup)."""
        try:
            status, _ = self._open("POST", f"/api/v1/sessions/{session_id}/end/")
        except CommandError:
            return False
        return status in (200, 409)


# --------------------------------------------------------------------------------------------- local memory
def _is_local_host(host: str) -> bool:
    """Whether ``host`` (name or address) resolves to this machine: a loopback address or one of its interfaces."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    try:
        import psutil

        mine = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    except ImportError:
        mine = set()
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in mine for a in addresses)


def _broker_of(env: dict[str, str]) -> tuple[str | None, str | None]:
    """What ties a worker to a web process: the (broker URL, live queue name) in a process environment ``env``."""
    return env.get("CELERY_BROKER_URL") or env.get("REDIS_URL"), env.get("FER_LIVE_QUEUE")


class LocalMemory:
    """Peak RSS (MB) of the server's processes when they run on this machine: the daphne process listening on
    ``port`` (found when ``host`` is local) and the Celery worker processes whose environment names the same broker
    and live queue as that daphne. ``web_peak``/``workers_peak`` stay ``None`` when nothing was found (remote
    server, a proxy on the port, no ``psutil``)."""

    def __init__(self, host: str, port: int):
        self.web_peak: float | None = None
        self.workers_peak: float | None = None
        self.web = None
        self._key: tuple[str | None, str | None] | None = None
        self._env_keys: dict[int, tuple[str | None, str | None] | None] = {}
        try:
            import psutil
        except ImportError:
            return
        if not _is_local_host(host):
            return
        try:
            listeners = [
                c.pid for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
            ]  # fmt: skip
        except (psutil.Error, OSError):
            return
        for pid in listeners:
            try:
                proc = psutil.Process(pid)
                cmd = " ".join(proc.cmdline())
                if "daphne" in cmd or "manage.py serve" in cmd or "fer_platform.serve" in cmd:
                    self.web, self._key = proc, _broker_of(proc.environ())
                    break
            except psutil.Error:
                continue

    def _worker_key(self, proc) -> tuple[str | None, str | None] | None:
        if proc.pid not in self._env_keys:
            try:
                self._env_keys[proc.pid] = _broker_of(proc.environ())
            except Exception:
                self._env_keys[proc.pid] = None
        return self._env_keys[proc.pid]

    def sample(self) -> None:
        """Add up the current RSS of the processes (MB) and keep the peaks; no-op when the web process is unknown."""
        if self.web is None:
            return
        import psutil

        try:
            web = self.web.memory_info().rss / 1e6
        except psutil.Error:
            return
        workers = 0.0
        for proc in psutil.process_iter(["cmdline", "memory_info"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if "celery" in cmd and "fer_platform" in cmd and " worker" in cmd and self._worker_key(proc) == self._key:
                memory = proc.info.get("memory_info")
                workers += memory.rss / 1e6 if memory else 0.0
        self.web_peak = round(max(self.web_peak or 0.0, web), 1)
        if workers:
            self.workers_peak = round(max(self.workers_peak or 0.0, workers), 1)


# ------------------------------------------------------------------------------------------------ WebSockets
@dataclass
class Stats:
    """Counters of one run, shared by its clients: frames ``sent``, ``processed``, ``dropped``, ``faces``,
        ``frame_errors``, ``errors``, ``unanswered``; ``dropped_by_reason`` (the ``reason`` of each ``dropped`` event:
    count); ``connected`` clients; ``latency`` (ms per result); ``result_at``
        (seconds after the run's start at which each result arrived); ``client_fps`` (results / streaming seconds, one
        per client, 0 for clients that never streamed); ``messages`` (failure texts)."""

    started: float = field(default_factory=time.perf_counter)
    sent: int = 0
    processed: int = 0
    dropped: int = 0
    faces: int = 0
    frame_errors: int = 0
    errors: int = 0
    unanswered: int = 0
    connected: int = 0
    latency: list[float] = field(default_factory=list)
    result_at: list[float] = field(default_factory=list)
    client_fps: list[float] = field(default_factory=list)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


async def _client(ws_url: str, origin: str, cookie: str, scenes: list[list[bytes]], fps: float, seconds: float,
                  drain_s: float, offset: int, stats: Stats, context: ssl.SSLContext | None,
                  scene_seconds: float, phase: float = 0.0) -> None:  # fmt: skip
    """One camera client: connect to ``ws_url`` (``Cookie``/``Origin`` headers, TLS ``context`` for wss), send the
    frames of ``scenes`` (``frame_for``: client ``offset``, ``scene_seconds``, ``phase``) at ``fps`` frames/s for
    ``seconds`` s, then wait up to ``drain_s`` s for the last answers. Adds to ``stats``. Never raises."""
    import websockets
    from websockets.typing import Origin

    sent_at: dict[int, float] = {}
    stopping = False
    processed = 0
    streamed_s = 0.0
    try:
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie}, origin=Origin(origin), max_size=2**22, open_timeout=30,
            ssl=context,
        ) as ws:  # fmt: skip
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                stats.errors += 1
                stats.messages.append(f"not ready: {ready}")
                return
            stats.connected += 1
            source = ready["source"]

            async def reader():
                nonlocal processed
                async for raw in ws:
                    ev = json.loads(raw)
                    seq = ev.get("sequence")
                    if ev.get("type") == "result" and ev.get("source") == source and seq in sent_at:
                        now = time.perf_counter()
                        stats.latency.append((now - sent_at.pop(seq)) * 1000.0)
                        stats.result_at.append(now - stats.started)
                        stats.processed += 1
                        processed += 1
                        stats.faces += ev.get("face_count", 0)
                    elif ev.get("type") == "dropped" and seq in sent_at:
                        sent_at.pop(seq)
                        stats.dropped += 1
                        reason = str(ev.get("reason"))
                        stats.dropped_by_reason[reason] = stats.dropped_by_reason.get(reason, 0) + 1
                    elif ev.get("type") == "error" and stopping and ev.get("code") == "binary_expected":
                        pass  # a server older than the stop message: it declined it, nothing else changes
                    elif ev.get("type") == "error" and ev.get("source", source) == source:
                        stats.errors += 1
                        if seq in sent_at:
                            sent_at.pop(seq)
                            stats.frame_errors += 1

            reader_task = asyncio.create_task(reader())
            period = 1.0 / fps
            await asyncio.sleep(period * (offset % 10) / 10.0)  # spread clients over one period
            start = time.perf_counter()
            n = 0
            while time.perf_counter() - start < seconds:
                header = FRAME_HEADER.pack(FRAME_HEADER_MAGIC, n, time.time() * 1000.0)
                sent_at[n] = time.perf_counter()
                try:
                    frame = frame_for(scenes, n, offset=offset, fps=fps, scene_seconds=scene_seconds, phase=phase)
                    await ws.send(header + frame)
                except Exception:
                    sent_at.pop(n, None)  # never sent
                    raise
                stats.sent += 1
                n += 1
                await asyncio.sleep(max(0.0, start + n * period - time.perf_counter()))
            streamed_s = time.perf_counter() - start
            # Stop like a camera that stops: the frame waiting for a slot is dropped ("stopped"), not analysed late
            # in the drain (that frame is seconds old under overload, and no real camera leaves one waiting);
            # frames in flight are still answered.
            stopping = True
            await ws.send(json.dumps({"type": "stop"}))
            deadline = time.perf_counter() + drain_s
            while sent_at and time.perf_counter() < deadline and not reader_task.done():
                await asyncio.sleep(0.1)
            reader_task.cancel()
    except Exception as exc:
        stats.errors += 1
        stats.messages.append(f"{type(exc).__name__}: {exc}")
    finally:
        stats.unanswered += len(sent_at)
        stats.client_fps.append(processed / streamed_s if streamed_s > 0 else 0.0)


def fps_over_time(result_at: list[float]) -> list[dict]:
    """Results per second: ``[{"t_s": 0, "fps": n0}, {"t_s": 1, "fps": n1}, ...]`` where ``n_k`` counts the times
    in ``result_at`` (seconds since the start) within ``[k, k + 1)``; every second up to the last result is listed
    (zeros included); empty without results."""
    if not result_at:
        return []
    counts = [0] * (int(max(result_at)) + 1)
    for t in result_at:
        counts[int(t)] += 1
    return [{"t_s": k, "fps": n} for k, n in enumerate(counts)]


def run_step(server: Server, cookie: str, scenes: list[list[bytes]], *, clients: int, fps: float, seconds: float,
             drain_s: float, size: tuple[int, int] | None, scene_seconds: float,
             scene_cuts: str = "independent", kind: str = "crowd") -> dict:  # fmt: skip
    """One load-test run with ``clients`` camera clients: create their sessions through the API, stream, end the
    sessions (also when interrupted). Returns the result object of the module doc. Raises ``CommandError`` when a
    session cannot be created or no client could connect."""
    session_ids: list[int] = []
    memory = LocalMemory(server.host, server.port)
    stats = Stats()
    try:
        tag = secrets.token_hex(3)
        for i in range(clients):
            session_ids.append(server.session_create(name=f"loadtest {tag} {i + 1}/{clients}", fps=fps, kind=kind))

        async def run_all():
            async def sampler():
                while True:
                    await asyncio.to_thread(memory.sample)
                    await asyncio.sleep(0.5)

            sampling = asyncio.create_task(sampler())
            stats.started = time.perf_counter()
            await asyncio.gather(
                *[
                    _client(
                        f"{server.ws_base}/ws/sessions/{sid}/stream/",
                        server.base,
                        cookie,
                        scenes,
                        fps,
                        seconds,
                        drain_s,
                        i,
                        stats,
                        server.context,
                        scene_seconds,
                        cut_phase(i, scene_cuts),
                    )  # fmt: skip
                    for i, sid in enumerate(session_ids)
                ]
            )
            sampling.cancel()

        asyncio.run(run_all())
        elapsed = time.perf_counter() - stats.started
    finally:
        for sid in session_ids:
            server.session_end(sid)
    if stats.connected == 0:
        raise CommandError(f"no client could stream into {server.ws_base}: {'; '.join(stats.messages[:3])}")
    client_fps = stats.client_fps
    return {
        "clients": clients,
        "fps": fps,
        "seconds": seconds,
        "size": f"{size[0]}x{size[1]}" if size else None,
        "scene_seconds": scene_seconds,
        "scene_cuts": scene_cuts,
        "kind": kind,
        "frames_sent": stats.sent,
        "frames_processed": stats.processed,
        "frames_dropped": stats.dropped,
        "dropped_by_reason": dict(sorted(stats.dropped_by_reason.items())),
        "faces_detected": stats.faces,
        "errors": stats.errors,
        "frame_errors": stats.frame_errors,
        "unanswered": stats.unanswered,
        "clients_connected": stats.connected,
        "latency_ms": {
            "p50": _percentile(stats.latency, 50),
            "p95": _percentile(stats.latency, 95),
            "max": round(max(stats.latency), 1) if stats.latency else None,
        },
        "per_client_processed_fps": {
            "min": round(min(client_fps), 2),
            "mean": round(sum(client_fps) / len(client_fps), 2),
            "max": round(max(client_fps), 2),
        },
        "analysed_fps_over_time": fps_over_time(stats.result_at),
        "memory_mb": {"web_peak": memory.web_peak, "workers_peak": memory.workers_peak},
        "wall_s": round(elapsed, 1),
        "session_ids": session_ids,
        **({"error_messages": stats.messages[:5]} if stats.messages else {}),
    }


def target_misses(result: dict, *, target_p95_ms: float, max_dropped_pct: float) -> list[str]:
    """Why a run's ``result`` misses the ramp target (empty list: it meets it): p95 latency above ``target_p95_ms``
    (or no result at all), errors, unanswered frames, more than ``max_dropped_pct`` % of the frames dropped."""
    misses = []
    p95 = result["latency_ms"]["p95"]
    if p95 is None or p95 > target_p95_ms:
        misses.append(f"p95 {p95} ms > {target_p95_ms:g} ms")
    if result["errors"]:
        misses.append(f"{result['errors']} errors")
    if result["unanswered"]:
        misses.append(f"{result['unanswered']} unanswered")
    sent = result["frames_sent"] or 1
    if 100.0 * result["frames_dropped"] / sent > max_dropped_pct:
        misses.append(f"{result['frames_dropped']} of {result['frames_sent']} dropped")
    return misses


def _text(result: dict) -> str:
    """A run's result in a few human lines."""
    lat, mem, rate = result["latency_ms"], result["memory_mb"], result["per_client_processed_fps"]
    return (
        f"clients={result['clients']} (connected {result['clients_connected']}) fps={result['fps']} "
        f"seconds={result['seconds']} size={result['size'] or 'as is'}\n"
        f"frames sent={result['frames_sent']} processed={result['frames_processed']} "
        f"dropped={result['frames_dropped']} errors={result['errors']} unanswered={result['unanswered']}\n"
        f"faces detected={result['faces_detected']}\n"
        f"latency ms p50={lat['p50']} p95={lat['p95']} max={lat['max']}\n"
        f"processed fps per client min={rate['min']} mean={rate['mean']} max={rate['max']}\n"
        f"memory MB web peak={mem['web_peak']} workers peak={mem['workers_peak']}"
    )


class Command(BaseCommand):
    """``manage.py loadtest``: see the module doc. Logs in over HTTP(S), creates one session per client through
    the REST API, streams, ends the sessions and prints the numbers (text, or JSON with ``--json``). Raises
    ``CommandError`` (one line) for bad options, an unreachable or refusing server and a wrong password."""

    help = "Load-test the live WebSocket path of a running server with N camera clients sending real photos."

    def add_arguments(self, parser) -> None:
        """Options: see ``--help`` and the module doc."""
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Server (or proxy) base URL.")
        parser.add_argument("--username", help="Teacher account on the server (no database access needed).")
        parser.add_argument("--password", help="Its password (asked for when omitted and stdin is a terminal).")
        parser.add_argument("--ca", help="PEM file of the CA that signed the server's certificate (https).")
        parser.add_argument("--insecure", action="store_true", help="Do not verify the server's certificate.")
        parser.add_argument("--clients", type=int, default=10)
        parser.add_argument("--ramp", help="Client counts to step through: 5,10,20 or start:stop:step.")
        parser.add_argument("--target-p95-ms", type=float, default=300.0, help="Ramp target: p95 latency (ms).")
        parser.add_argument("--max-dropped-pct", type=float, default=2.0, help="Ramp target: dropped frames (%%).")
        parser.add_argument("--fps", type=float, default=2.0, help="Frames per second per client.")
        parser.add_argument("--seconds", type=float, default=20.0, help="Streaming time per run (s).")
        parser.add_argument("--size", help="Letterbox the images into WxH frames, e.g. 640x480.")
        parser.add_argument("--images", nargs="+", required=True)
        parser.add_argument(
            "--scene-seconds",
            type=float,
            default=10.0,
            help="Each client films one photo (with sensor noise) and moves to the next every this many seconds "
            "(default 10); 0 = a different photo every frame (every frame a scene cut: the worst case).",
        )
        parser.add_argument(
            "--scene-cuts",
            choices=SCENE_CUTS,
            default="independent",
            help="independent (default): each client cuts at its own phase of the scene, like separate cameras; "
            "together: every client cuts in the same instant (the worst burst of full detections).",
        )
        parser.add_argument(
            "--kind",
            choices=["crowd", "classroom"],
            default="crowd",
            help="Kind of the sessions the clients stream into (default crowd: every face is looked for; classroom: "
            "faces from FER_CLASSROOM_MIN_FACE_PX, as a teacher's session).",
        )
        parser.add_argument("--drain", type=float, default=None, help="Seconds to wait for outstanding results.")
        parser.add_argument("--json", action="store_true")

    def _credentials(self, opts: dict) -> tuple[str, str]:
        """(username, password): the given account, or a throw-away user created in this process's database."""
        if opts["username"]:
            password = opts["password"]
            if password is None:
                if not sys.stdin.isatty():
                    raise CommandError("--password is required with --username when stdin is not a terminal")
                password = getpass.getpass(f"password of {opts['username']}: ")
            return opts["username"], password
        from django.contrib.auth import get_user_model

        username, password = f"loadtest-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        get_user_model().objects.create_user(username=username, password=password)
        return username, password

    def handle(self, *args, **opts) -> None:
        """Run the load test (or the ramp) with the parsed options ``opts`` and write the result to stdout."""
        if opts["clients"] < 1 or opts["fps"] <= 0 or opts["seconds"] <= 0:
            raise CommandError("--clients, --fps and --seconds must be positive")
        if opts["scene_seconds"] < 0:
            raise CommandError("--scene-seconds must be 0 (a cut every frame) or positive")
        size = parse_size(opts["size"]) if opts["size"] else None
        steps = parse_ramp(opts["ramp"]) if opts["ramp"] else [opts["clients"]]
        frames = load_frames(opts["images"], size)
        scenes = scene_variants(frames) if opts["scene_seconds"] > 0 else [[f] for f in frames]
        context = tls_context(ca=opts["ca"], insecure=opts["insecure"]) if opts["ca"] or opts["insecure"] else None
        server = Server(opts["url"], context=context or ssl.create_default_context())
        username, password = self._credentials(opts)
        if not opts["username"]:
            try:
                cookie = server.login(username, password)
            except CommandError as exc:
                raise CommandError(f"{exc} (without --username the server must use this command's database)") from None
        else:
            cookie = server.login(username, password)
        server.api_login(username, password)
        drain = opts["drain"] if opts["drain"] is not None else settings.FER_FRAME_TASK_EXPIRES_S + 15
        run = dict(
            fps=opts["fps"],
            seconds=opts["seconds"],
            drain_s=drain,
            size=size,
            scene_seconds=opts["scene_seconds"],
            scene_cuts=opts["scene_cuts"],
            kind=opts["kind"],
        )
        if not opts["ramp"]:
            result = run_step(server, cookie, scenes, clients=steps[0], **run)
            self.stdout.write(json.dumps(result) if opts["json"] else _text(result))
            for msg in result.get("error_messages", []):
                self.stderr.write(msg)
            return
        target = dict(target_p95_ms=opts["target_p95_ms"], max_dropped_pct=opts["max_dropped_pct"])
        results = []
        for i, clients in enumerate(steps):
            if i:
                time.sleep(RAMP_PAUSE_S)
            result = run_step(server, cookie, scenes, clients=clients, **run)
            result["missed"] = target_misses(result, **target)
            result["meets_target"] = not result["missed"]
            results.append(result)
            if not opts["json"]:
                verdict = "meets the target" if result["meets_target"] else "misses: " + ", ".join(result["missed"])
                self.stdout.write(f"--- {clients} clients: {verdict}\n{_text(result)}")
            if not result["meets_target"]:
                break
        passing = [r["clients"] for r in results if r["meets_target"]]
        best = max(passing) if passing else None
        if opts["json"]:
            self.stdout.write(json.dumps({**target, "steps": results, "max_clients_meeting_target": best}))
        else:
            self.stdout.write(
                f"largest client count meeting p95 <= {opts['target_p95_ms']:g} ms "
                f"(dropped <= {opts['max_dropped_pct']:g} %, no errors): {best}"
            )
