"""``manage.py loadtest``: N WebSocket camera clients against a running server, with real photos as frames.

Example (server from ``make run`` in another terminal, same database)::

    python manage.py loadtest --url http://127.0.0.1:8000 --clients 10 --fps 2 --seconds 30 \\
        --images ../shared/data/faces/group_photos/*.jpg [--json]

It creates its own user (``loadtest-<random>``) and one session per client in the server's database, logs in over
HTTP for a session cookie, streams the photos round-robin as JPEG frames (with the ``FRM1`` header carrying the
sequence number and capture time), then waits until every frame is accounted for (result, dropped or error) or the
drain timeout passes. Latency = time from sending a frame to receiving its result event, measured in the client.
``--json`` prints one object: ``clients, fps, seconds, frames_sent, frames_processed, frames_dropped,
faces_detected, errors, frame_errors, unanswered, latency_ms {p50, p95, max}, memory_mb {web_peak, workers_peak},
wall_s, session_ids`` (memory: RSS of the local daphne process serving the port and of local Celery workers, sampled
every 0.5 s; ``null`` when not found).

Accounting: every frame sent gets exactly one answer (``result``, ``dropped`` or ``error`` event), or is counted as
``unanswered`` when none came before the drain timeout, so ``frames_sent == frames_processed + frames_dropped +
frame_errors + unanswered``. ``frame_errors`` counts error events answering one of the sent frames; ``errors`` is
``frame_errors`` plus everything else that went wrong (error events for no known frame, clients that failed to
connect or broke off, whose messages go to stderr).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import secrets
import time
import urllib.parse
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from inference.imageio import FRAME_HEADER, FRAME_HEADER_MAGIC
from sessions_app.services.sessions import session_create, session_end


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank ``q``-th percentile (0..100) of ``values`` rounded to 0.1, ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return round(ordered[k], 1)


def _load_images(paths: list[str]) -> list[bytes]:
    """The frames to send: each image file as JPEG bytes within the server's frame limits (re-encoded at quality 85
    when it is not a JPEG, too large in bytes, or larger than ``FER_MAX_FRAME_WIDTH`` x ``FER_MAX_FRAME_HEIGHT``).
    Raises ``inference.imageio.ImageDecodeError`` / ``OSError`` for unreadable files."""
    import cv2

    from inference.imageio import decode_image

    frames = []
    for p in paths:
        data = Path(p).read_bytes()
        image = decode_image(data)
        h, w = image.shape[:2]
        scale = min(1.0, settings.FER_MAX_FRAME_WIDTH / w, settings.FER_MAX_FRAME_HEIGHT / h)
        if scale < 1.0 or not data.startswith(b"\xff\xd8\xff") or len(data) > settings.FER_MAX_FRAME_BYTES:
            image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
            data = buf.tobytes()
        frames.append(data)
    return frames


def _login(base_url: str, username: str, password: str) -> str:
    """Log in through the login form; returns the Cookie header value."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = base_url.rstrip("/") + "/accounts/login/"
    opener.open(login_url, timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": csrf}).encode()
    req = urllib.request.Request(login_url, data=body, headers={"Referer": login_url})
    opener.open(req, timeout=30).read()
    cookies = {c.name: c.value for c in jar}
    if "sessionid" not in cookies:
        raise CommandError("login failed: is the server using the same database as this command?")
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


class _Memory:
    """Peak RSS (MB) of the daphne process on ``port`` and of local Celery worker processes."""

    def __init__(self, port: int):
        self.port = port
        self.web_peak = None
        self.workers_peak = None

    def sample(self) -> None:
        """Add up the current RSS of the processes (MB) and keep the peaks; no-op without ``psutil``."""
        try:
            import psutil
        except ImportError:
            return
        web = workers = 0.0
        for proc in psutil.process_iter(["cmdline", "memory_info"]):
            cmd = " ".join(proc.info.get("cmdline") or [])
            rss = (proc.info.get("memory_info").rss if proc.info.get("memory_info") else 0) / 1e6
            if ("daphne" in cmd or "manage.py serve" in cmd) and f"-p {self.port}" in cmd:
                web += rss
            elif "celery" in cmd and "fer_platform" in cmd and " worker" in cmd:
                workers += rss
        if web:
            self.web_peak = round(max(self.web_peak or 0, web), 1)
        if workers:
            self.workers_peak = round(max(self.workers_peak or 0, workers), 1)


async def _client(ws_url: str, origin: str, cookie: str, frames: list[bytes], fps: float, seconds: float,
                  drain_s: float, offset: int, stats: dict) -> None:  # fmt: skip
    """One camera client: connect to ``ws_url`` (``Cookie``/``Origin`` headers), send ``frames`` round-robin (from
    index ``offset``) at ``fps`` frames/s for ``seconds`` s, then wait up to ``drain_s`` s for the last answers.
    Adds to ``stats`` (shared by all clients): ``sent``, ``processed``, ``dropped``, ``faces``, ``frame_errors``,
    ``errors``, ``unanswered``, ``latency`` (ms per result) and ``messages`` (failure texts). Never raises."""
    import websockets

    sent_at: dict[int, float] = {}
    try:
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie}, origin=origin, max_size=2**22, open_timeout=30
        ) as ws:
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                stats["errors"] += 1
                stats.setdefault("messages", []).append(f"not ready: {ready}")
                return
            source = ready["source"]

            async def reader():
                async for raw in ws:
                    ev = json.loads(raw)
                    seq = ev.get("sequence")
                    if ev.get("type") == "result" and ev.get("source") == source and seq in sent_at:
                        stats["latency"].append((time.perf_counter() - sent_at.pop(seq)) * 1000.0)
                        stats["processed"] += 1
                        stats["faces"] += ev.get("face_count", 0)
                    elif ev.get("type") == "dropped" and seq in sent_at:
                        sent_at.pop(seq)
                        stats["dropped"] += 1
                    elif ev.get("type") == "error" and ev.get("source", source) == source:
                        stats["errors"] += 1
                        if seq in sent_at:
                            sent_at.pop(seq)
                            stats["frame_errors"] += 1

            reader_task = asyncio.create_task(reader())
            period = 1.0 / fps
            start = time.perf_counter()
            n = 0
            await asyncio.sleep(period * (offset % 10) / 10.0)  # spread clients over one period
            while time.perf_counter() - start < seconds:
                header = FRAME_HEADER.pack(FRAME_HEADER_MAGIC, n, time.time() * 1000.0)
                sent_at[n] = time.perf_counter()
                try:
                    await ws.send(header + frames[(n + offset) % len(frames)])
                except Exception:
                    sent_at.pop(n, None)  # never sent
                    raise
                stats["sent"] += 1
                n += 1
                await asyncio.sleep(max(0.0, start + n * period - time.perf_counter()))
            deadline = time.perf_counter() + drain_s
            while sent_at and time.perf_counter() < deadline and not reader_task.done():
                await asyncio.sleep(0.1)
            reader_task.cancel()
    except Exception as exc:
        stats["errors"] += 1
        stats.setdefault("messages", []).append(f"{type(exc).__name__}: {exc}")
    finally:
        stats["unanswered"] += len(sent_at)


class Command(BaseCommand):
    """``manage.py loadtest``: see the module doc. Creates a throw-away user and one session per client in this
    process's database (which must be the server's), streams, ends the sessions and prints the numbers (text, or one
    JSON object with ``--json``). Raises ``CommandError`` when the login fails (server on another database)."""

    help = "Load-test the live WebSocket path with N camera clients sending real photos."

    def add_arguments(self, parser) -> None:
        """``--url`` (server base URL), ``--clients`` (int), ``--fps`` (frames/s per client), ``--seconds``
        (streaming time per client), ``--images`` (one or more image files), ``--drain`` (seconds to wait for
        outstanding answers; default ``FER_FRAME_TASK_EXPIRES_S + 15``), ``--json``."""
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--clients", type=int, default=10)
        parser.add_argument("--fps", type=float, default=2.0)
        parser.add_argument("--seconds", type=float, default=20.0)
        parser.add_argument("--images", nargs="+", required=True)
        parser.add_argument("--drain", type=float, default=None, help="Seconds to wait for outstanding results.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts) -> None:
        """Run the load test with the parsed options ``opts`` and write the result to stdout."""
        frames = _load_images(opts["images"])
        username, password = f"loadtest-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        user = get_user_model().objects.create_user(username=username, password=password)
        sessions = [
            session_create(owner=user, name=f"loadtest {i}", kind="crowd", target_fps=opts["fps"])
            for i in range(opts["clients"])
        ]
        base = opts["url"].rstrip("/")
        parsed = urllib.parse.urlparse(base)
        cookie = _login(base, username, password)
        ws_base = ("wss://" if parsed.scheme == "https" else "ws://") + parsed.netloc
        drain = opts["drain"] if opts["drain"] is not None else settings.FER_FRAME_TASK_EXPIRES_S + 15
        stats = {
            "sent": 0,
            "processed": 0,
            "dropped": 0,
            "faces": 0,
            "errors": 0,
            "frame_errors": 0,
            "unanswered": 0,
            "latency": [],
        }
        memory = _Memory(parsed.port or (443 if parsed.scheme == "https" else 80))

        async def run_all():
            async def sampler():
                while True:
                    memory.sample()
                    await asyncio.sleep(0.5)

            sampling = asyncio.create_task(sampler())
            await asyncio.gather(
                *[
                    _client(
                        f"{ws_base}/ws/sessions/{s.pk}/stream/",
                        base,
                        cookie,
                        frames,
                        opts["fps"],
                        opts["seconds"],
                        drain,
                        i,
                        stats,
                    )  # fmt: skip
                    for i, s in enumerate(sessions)
                ]
            )
            sampling.cancel()

        started = time.perf_counter()
        asyncio.run(run_all())
        elapsed = time.perf_counter() - started
        for s in sessions:
            session_end(session=s)
        result = {
            "clients": opts["clients"],
            "fps": opts["fps"],
            "seconds": opts["seconds"],
            "frames_sent": stats["sent"],
            "frames_processed": stats["processed"],
            "frames_dropped": stats["dropped"],
            "faces_detected": stats["faces"],
            "errors": stats["errors"],
            "frame_errors": stats["frame_errors"],
            "unanswered": stats["unanswered"],
            "latency_ms": {
                "p50": _percentile(stats["latency"], 50),
                "p95": _percentile(stats["latency"], 95),
                "max": round(max(stats["latency"]), 1) if stats["latency"] else None,
            },
            "memory_mb": {"web_peak": memory.web_peak, "workers_peak": memory.workers_peak},
            "wall_s": round(elapsed, 1),
            "session_ids": [s.pk for s in sessions],
        }
        if stats.get("messages"):
            result["error_messages"] = stats["messages"][:5]
        if opts["json"]:
            self.stdout.write(json.dumps(result))
            return
        lat = result["latency_ms"]
        self.stdout.write(
            f"clients={result['clients']} fps={result['fps']} seconds={result['seconds']}\n"
            f"frames sent={result['frames_sent']} processed={result['frames_processed']} "
            f"dropped={result['frames_dropped']} errors={result['errors']} unanswered={result['unanswered']}\n"
            f"faces detected={result['faces_detected']}\n"
            f"latency ms p50={lat['p50']} p95={lat['p95']} max={lat['max']}\n"
            f"memory MB web peak={result['memory_mb']['web_peak']} workers peak={result['memory_mb']['workers_peak']}"
        )
        for msg in result.get("error_messages", []):
            self.stderr.write(msg)
