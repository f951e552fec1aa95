"""Fixtures of the report/API/export tests (issue #4): users of every role and a small session whose timeline,
distribution and report numbers are computed by hand below.

The session "Fixture class" (classroom, 25 s long, ended) has 9 frames; each letter is one face with these
probabilities (angry, disgust, fear, happy, sad, surprise, neutral):

    N = (0, 0, 0, 0.1, 0, 0, 0.9)   label neutral     H = (0, 0, 0, 0.8, 0, 0, 0.2)   label happy
    S = (0.1, 0, 0, 0, 0.7, 0, 0.2) label sad         U = (0, 0, 0.2, 0.2, 0, 0.6, 0) label surprise

    offset_s: 0.5 NNN | 2.5 NNH | 5.0 HHH | 7.5 HHNN | 11.0 HS | 15.5 SSS | 19.9 SSN | 21.0 UUU | 24.0 (no faces)

Hand computation, 5-second buckets (bucket k covers [5k, 5k+5)):
    [0,5):   2 frames, 6 faces: happy (5*0.1+0.8)/6 = 1.3/6, neutral (5*0.9+0.2)/6 = 4.7/6 -> neutral
    [5,10):  2 frames, 7 faces: happy (5*0.8+2*0.1)/7 = 0.6, neutral (5*0.2+2*0.9)/7 = 0.4 -> happy
    [10,15): 1 frame, 2 faces < 3 -> no aggregates
    [15,20): 2 frames, 6 faces: angry 0.5/6, happy 0.1/6, sad 3.5/6, neutral (5*0.2+0.9)/6 = 1.9/6 -> sad
    [20,25): 2 frames, 3 faces: fear 0.2, happy 0.2, surprise 0.6 -> surprise; mean face count 3/2
Whole session: 24 faces (7 N... counts: N 8, H 7, S 6, U 3): angry 0.6/24, fear 0.6/24, happy (0.8+5.6+0.6)/24,
sad 4.2/24, surprise 1.8/24, neutral (7.2+1.4+1.2)/24 -> neutral; mean faces per frame 24/9, max 4.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from inference.labels import LABELS, VALENCE
from sessions_app.models import EmotionSession, Face, Frame
from sessions_app.services.frames import frame_result_store
from sessions_app.services.sessions import session_create

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
PASSWORD = "pw-for-tests-1"


def probs(**nonzero: float) -> dict[str, float]:
    """All seven labels, zero unless given."""
    return {label: nonzero.get(label, 0.0) for label in LABELS}


def valence(p: dict[str, float]) -> float:
    return sum(p[label] * v for label, v in zip(LABELS, VALENCE, strict=True))


_B0 = probs(happy=1.3 / 6, neutral=4.7 / 6)
_B1 = probs(happy=0.6, neutral=0.4)
_B3 = probs(angry=0.5 / 6, happy=0.1 / 6, sad=3.5 / 6, neutral=1.9 / 6)
_B4 = probs(fear=0.2, happy=0.2, surprise=0.6)
#: Hand-computed timeline, 5-second buckets.
EXPECTED_TIMELINE_5 = [
    {"start_s": 0, "end_s": 5, "frames": 2, "faces": 6, "mean_face_count": 3.0, "probabilities": _B0,
     "dominant": "neutral", "valence": 0.9 * 1.3 / 6},
    {"start_s": 5, "end_s": 10, "frames": 2, "faces": 7, "mean_face_count": 3.5, "probabilities": _B1,
     "dominant": "happy", "valence": 0.54},
    {"start_s": 10, "end_s": 15, "frames": 1, "faces": 2, "mean_face_count": 2.0, "probabilities": None,
     "dominant": None, "valence": None},
    {"start_s": 15, "end_s": 20, "frames": 2, "faces": 6, "mean_face_count": 3.0, "probabilities": _B3,
     "dominant": "sad", "valence": -0.7 * 0.5 / 6 + 0.9 * 0.1 / 6 - 0.7 * 3.5 / 6},
    {"start_s": 20, "end_s": 25, "frames": 2, "faces": 3, "mean_face_count": 1.5, "probabilities": _B4,
     "dominant": "surprise", "valence": -0.6 * 0.2 + 0.9 * 0.2 + 0.3 * 0.6},
]  # fmt: skip
#: Hand-computed timeline, 10-second buckets.
EXPECTED_TIMELINE_10 = [
    {"start_s": 0, "end_s": 10, "frames": 4, "faces": 13, "mean_face_count": 3.25,
     "probabilities": probs(happy=5.5 / 13, neutral=7.5 / 13), "dominant": "neutral", "valence": 0.9 * 5.5 / 13},
    {"start_s": 10, "end_s": 20, "frames": 3, "faces": 8, "mean_face_count": 2.6667,
     "probabilities": probs(angry=0.075, happy=0.1125, sad=0.525, neutral=0.2875), "dominant": "sad",
     "valence": -0.7 * 0.075 + 0.9 * 0.1125 - 0.7 * 0.525},
    {"start_s": 20, "end_s": 30, "frames": 2, "faces": 3, "mean_face_count": 1.5, "probabilities": _B4,
     "dominant": "surprise", "valence": 0.24},
]  # fmt: skip
#: Hand-computed distribution over the whole session.
EXPECTED_DISTRIBUTION = {
    "faces": 24,
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


def make_session(owner, *, name: str = "Fixture class", kind: str = "classroom", frames=FRAMES, ended_after_s=25.0):
    """A session with ``frames`` stored through ``frame_result_store`` (the production write path)."""
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


@pytest.fixture(autouse=True)
def isolated_cache_and_fast_passwords(settings, request):
    """Each test gets its own in-memory cache (throttle counters never leak between tests or into Redis) and a
    fast password hasher."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def teacher_a(django_user_model):
    return django_user_model.objects.create_user("teacher_a", password=PASSWORD)


@pytest.fixture
def teacher_b(django_user_model):
    return django_user_model.objects.create_user("teacher_b", password=PASSWORD)


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def fixture_session(teacher_a):
    """The hand-computed session, owned by teacher A."""
    return make_session(teacher_a)


@pytest.fixture
def clients(client, teacher_a, teacher_b, admin_user):
    """Django test clients per role: ``anonymous``, ``teacher_a``, ``teacher_b``, ``admin``."""
    from django.test import Client

    result = {"anonymous": Client()}
    for name, user in (("teacher_a", teacher_a), ("teacher_b", teacher_b), ("admin", admin_user)):
        c = Client()
        c.force_login(user)
        result[name] = c
    return result


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
