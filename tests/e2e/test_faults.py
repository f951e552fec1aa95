"""Faults of the real components, for real: Redis restarted mid-stream and a Celery worker killed with SIGKILL in the
middle of a frame. A camera client (a WebSocket client speaking the live protocol) keeps its socket, hears exactly
once about every frame it sent, and gets results again within seconds of Redis coming back.

Each test runs its own Redis, daphne (``manage.py serve``) and worker, so the machine's Redis is never touched."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import time

import pytest
import websockets

from inference.imageio import FRAME_HEADER, FRAME_HEADER_MAGIC
from sessions_app.models import EmotionSession
from tests.helpers import cookie, free_port, start_process, stop_process, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Stack:
    """A private Redis, daphne and one solo Celery worker on the pytest database."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.redis_port, self.web_port = free_port(), free_port()
        self.env = subprocess_env() | {
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "FER_FRAME_TASK_EXPIRES_S": "3",  # lost frames are declared after ~13 s instead of ~20 s
        }
        self.redis = self.worker = self.web = None

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing (scripts/services.sh installs it)")
        self.redis = start_process(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            self.env, self.tmp / "redis.log", port=self.redis_port,
        )  # fmt: skip

    def start_worker(self) -> None:
        queues = f"{os.environ['FER_LIVE_QUEUE']},{os.environ['FER_UPLOAD_QUEUE']}"
        self.worker = start_process(
            [sys.executable, "-m", "celery", "-A", "fer_platform", "worker", "-P", "solo", "-Q", queues,
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"],
            self.env, self.tmp / f"worker-{time.monotonic_ns()}.log", ready="ready.",
        )  # fmt: skip

    def start_web(self) -> None:
        self.web = start_process(
            [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(self.web_port)],
            self.env, self.tmp / f"daphne-{time.monotonic_ns()}.log", port=self.web_port,
        )  # fmt: skip

    def __enter__(self):
        self.start_redis()
        self.start_worker()
        self.start_web()
        return self

    def __exit__(self, *exc):
        for proc in (self.web, self.worker, self.redis):
            if proc is not None:
                stop_process(proc)


class Camera:
    """A camera client: sends numbered frames at ``fps``, records every answer per sequence number."""

    def __init__(self, stack: Stack, session_id: int, user, frame: bytes):
        self.url = f"ws://127.0.0.1:{stack.web_port}/ws/sessions/{session_id}/stream/"
        self.origin = f"http://127.0.0.1:{stack.web_port}"
        self.cookie = f"sessionid={cookie(user)}"
        self.frame = frame
        self.sent: list[int] = []
        self.answers: dict[int, list[str]] = {}
        self.results_at: list[float] = []
        self.closed_with: int | None = None

    async def run(self, seconds: float, fps: float, drain_s: float, during=None) -> None:
        async with websockets.connect(
            self.url, additional_headers={"Cookie": self.cookie}, origin=self.origin, max_size=2**22
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "ready"

            async def reader():
                try:
                    async for raw in ws:
                        event = json.loads(raw)
                        seq = event.get("sequence")
                        if event["type"] in ("result", "dropped", "error") and seq in self.sent:
                            self.answers.setdefault(seq, []).append(event.get("reason") or event["type"])
                            if event["type"] == "result":
                                self.results_at.append(time.monotonic())
                except websockets.ConnectionClosed as closed:
                    self.closed_with = closed.rcvd.code if closed.rcvd else None

            reading = asyncio.create_task(reader())
            side = asyncio.get_running_loop().run_in_executor(None, during) if during else None
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < seconds:
                await ws.send(FRAME_HEADER.pack(FRAME_HEADER_MAGIC, n, time.time() * 1000) + self.frame)
                self.sent.append(n)
                n += 1
                await asyncio.sleep(max(0.0, start + n / fps - time.monotonic()))
            if side is not None:
                await side
            deadline = time.monotonic() + drain_s
            while len(self.answers) < len(self.sent) and time.monotonic() < deadline and not reading.done():
                await asyncio.sleep(0.2)
            reading.cancel()
            self.closed_with = self.closed_with if reading.done() else None


def _small_frame(group_photo) -> bytes:
    import cv2

    image = cv2.imread(str(group_photo[0]))
    return cv2.imencode(".jpg", cv2.resize(image, (320, 214)))[1].tobytes()


def test_a_redis_restart_mid_stream_keeps_the_socket_and_every_frame_is_answered_once(
    tmp_path, teacher, make_session, group_photo
):
    session = make_session(teacher, target_fps=2.0)
    with Stack(tmp_path) as stack:
        camera = Camera(stack, session.pk, teacher, _small_frame(group_photo))
        marks = {}

        def outage():
            time.sleep(6)
            marks["down"] = time.monotonic()
            stack.redis.send_signal(signal.SIGKILL)
            stack.redis.wait()
            time.sleep(5)
            stack.start_redis()
            marks["up"] = time.monotonic()

        asyncio.run(camera.run(seconds=24, fps=2, drain_s=30, during=outage))
    assert camera.closed_with is None  # the socket survived (no 1011)
    assert sorted(camera.answers) == camera.sent, set(camera.sent) - set(camera.answers)
    assert all(len(a) == 1 for a in camera.answers.values()), {s: a for s, a in camera.answers.items() if len(a) > 1}
    assert any(t < marks["down"] for t in camera.results_at)
    resumed = [t - marks["up"] for t in camera.results_at if t > marks["up"]]
    assert resumed and resumed[0] < 5.0, resumed[:3]
    session = EmotionSession.objects.get(pk=session.pk)
    accounted = session.frames_processed + session.frames_dropped + session.frames_rejected
    # Never counted not at all. Outcome claims live in Redis, so a restart forgets those of the frames around the
    # crash: such a frame can be counted twice (stored by the worker, then declared lost); measured 0-4 here.
    assert 0 <= accounted - session.frames_received <= 6, vars(session)


def test_a_worker_killed_mid_frame_gets_the_frame_answered(tmp_path, teacher, make_session, group_photo):
    session = make_session(teacher, target_fps=2.0)
    with Stack(tmp_path) as stack:
        camera = Camera(stack, session.pk, teacher, group_photo[0].read_bytes())

        marks = {}

        def kill_and_replace():
            time.sleep(3)
            marks["killed"] = time.monotonic()
            stack.worker.send_signal(signal.SIGKILL)  # mid-frame: a frame takes ~0.1-0.3 s of a 0.5 s period
            stack.worker.wait()
            stack.start_worker()

        asyncio.run(camera.run(seconds=14, fps=2, drain_s=30, during=kill_and_replace))
    assert camera.closed_with is None
    assert sorted(camera.answers) == camera.sent, set(camera.sent) - set(camera.answers)
    assert all(len(a) == 1 for a in camera.answers.values())
    # the frames the dead worker held are answered (lost or expired), and the new worker serves the rest
    assert any(t < marks["killed"] for t in camera.results_at) and any(t > marks["killed"] for t in camera.results_at)
    assert {a[0] for a in camera.answers.values()} - {"result"}, "the killed frame must have a non-result answer"


def test_the_browser_reconnects_and_resumes_the_camera_after_the_web_process_restarts(
    tmp_path, django_user_model, make_session, chromium_args, monkeypatch
):
    """live.js reopens a dropped stream with backoff and the camera resumes by itself: the web process is killed
    mid-stream and started again; results flow again without anyone pressing a button."""
    from playwright.sync_api import expect, sync_playwright

    from tests.helpers import CHROMIUM

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    user = django_user_model.objects.create_user(username="steady-teacher", password="steady-password-1")
    session = make_session(user)
    with Stack(tmp_path) as stack, sync_playwright() as pw:
        base = f"http://127.0.0.1:{stack.web_port}"
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/accounts/login/")
            page.fill("#id_username", "steady-teacher")
            page.fill("#id_password", "steady-password-1")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.goto(f"{base}/sessions/{session.pk}/live/")
            page.click("#start-camera")
            expect(page.locator("#conn-status")).to_have_text("streaming", timeout=30_000)
            page.wait_for_function(
                "Number(document.getElementById('frames-processed').textContent) >= 2", timeout=60_000
            )
            stack.web.send_signal(signal.SIGKILL)
            stack.web.wait()
            expect(page.locator("#conn-status")).to_have_text(re.compile("reconnecting"), timeout=10_000)
            restarted = time.monotonic()
            stack.start_web()
            expect(page.locator("#conn-status")).to_have_text("streaming", timeout=30_000)
            page.wait_for_function(
                "Number(document.getElementById('frames-processed').textContent) >= 1", timeout=30_000
            )
            resumed_after = time.monotonic() - restarted
            assert page.locator("#overlay .face-box").count() >= 1
        finally:
            browser.close()
    assert resumed_after < 20, resumed_after
