"""Services and selectors of emotion sessions, on real PostgreSQL (and the real Redis channel layer for events)."""

from __future__ import annotations

import datetime as dt
import threading

import cv2
import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.db import connection

from inference.imageio import FRAME_HEADER, FrameRejected
from inference.labels import LABELS, VALENCE
from sessions_app import selectors
from sessions_app.models import EmotionSession, Face, Frame, TimelineBucket
from sessions_app.services.events import session_group_name
from sessions_app.services.frames import (
    frame_analysis_record,
    frame_dropped_record,
    frame_error_record,
    frame_outcome_claim,
    frame_validate,
)
from sessions_app.services.sessions import session_counters_add, session_create, session_end, upload_source_allocate
from tests.helpers import face_result, jpeg, listen, next_event, no_event, record_analysis, store_frame

pytestmark = pytest.mark.django_db


def test_uses_postgresql():
    assert connection.vendor == "postgresql"


def test_session_create_and_validation(teacher):
    s = session_create(owner=teacher, name="  Math  ", kind="crowd", target_fps=5)
    assert (s.name, s.kind, s.target_fps, s.status) == ("Math", "crowd", 5.0, "running")
    with pytest.raises(ValidationError):
        session_create(owner=teacher, name="x", kind="classroom", target_fps=0)
    with pytest.raises(ValidationError):
        session_create(owner=teacher, name="x", kind="stadium", target_fps=2)
    with pytest.raises(ValidationError):
        session_create(owner=teacher, name="   ", kind="classroom", target_fps=2)
    assert EmotionSession.objects.count() == 1


def test_session_end_is_idempotent(teacher, make_session):
    s = make_session(teacher)
    first = session_end(session=s)
    assert first.status == "ended" and first.ended_at is not None
    again = session_end(session=EmotionSession.objects.get(pk=s.pk))
    assert again.ended_at == first.ended_at


def test_visibility_rules(teacher, other_teacher, staff_user, make_session):
    mine, theirs = make_session(teacher), make_session(other_teacher)
    assert list(selectors.session_list_for_user(user=teacher)) == [mine]
    assert set(selectors.session_list_for_user(user=staff_user)) == {mine, theirs}
    assert selectors.session_get_for_user(user=teacher, session_id=mine.pk) == mine
    assert selectors.session_get_for_user(user=staff_user, session_id=mine.pk) == mine
    for bad in (theirs.pk, 999999, "abc", None):
        with pytest.raises(EmotionSession.DoesNotExist):
            selectors.session_get_for_user(user=teacher, session_id=bad)
    from django.contrib.auth.models import AnonymousUser

    assert not selectors.session_list_for_user(user=AnonymousUser()).exists()
    assert selectors.session_can_stream(user=teacher, session=mine)
    assert not selectors.session_can_stream(user=staff_user, session=mine)


def test_frame_result_store_writes_everything(teacher, make_session):
    s = make_session(teacher)
    frame = store_frame(s, 3.4, [face_result("happy"), face_result("sad", box=(100, 50, 60, 60))], sequence=0)
    assert frame.face_count == 2
    assert frame.offset_s == pytest.approx(3.4)
    faces = list(Face.objects.filter(frame=frame).order_by("id"))
    assert [f.label for f in faces] == ["happy", "sad"]
    assert faces[1].box == (100, 50, 60, 60)
    assert faces[0].p_happy == pytest.approx(0.7)
    bucket = TimelineBucket.objects.get(session=s, second=3)
    assert (bucket.frames, bucket.faces) == (1, 2)
    assert bucket.sum_p_happy == pytest.approx(0.75) and bucket.sum_p_sad == pytest.approx(0.75)
    s.refresh_from_db()
    assert s.frames_processed == 1


def test_duplicate_sequence_is_ignored(teacher, make_session):
    s = make_session(teacher)
    first = store_frame(s, 1.0, [face_result("happy")], sequence=7)
    again = store_frame(s, 1.0, [face_result("sad"), face_result("sad")], sequence=7)
    assert again.pk == first.pk
    assert Frame.objects.filter(session=s).count() == 1 and Face.objects.filter(session=s).count() == 1
    bucket = TimelineBucket.objects.get(session=s)
    assert (bucket.frames, bucket.faces) == (1, 1)
    s.refresh_from_db()
    assert s.frames_processed == 1
    store_frame(s, 1.0, [face_result("sad")], sequence=7, source="camera:other")  # same sequence, other source: stored
    assert Frame.objects.filter(session=s).count() == 2


def test_malformed_faces_store_nothing(teacher, make_session):
    s = make_session(teacher)
    bad = face_result("happy")
    bad["probabilities"] = {"happy": 1.0}
    with pytest.raises((ValueError, KeyError)):
        store_frame(s, 0.5, [face_result("sad"), bad], sequence=1)
    with pytest.raises(ValueError):
        store_frame(s, 0.5, [face_result("sad") | {"label": "bored"}], sequence=2)
    assert not Frame.objects.filter(session=s).exists() and not TimelineBucket.objects.filter(session=s).exists()


def test_worker_recognizer_is_served_as_settings_say(settings, monkeypatch):
    """The worker's recogniser takes flip TTA and the detector from settings (the one source of FER_* values)."""
    from inference.detector import HaarFaceDetector
    from sessions_app.services import analysis

    monkeypatch.setattr(analysis, "_recognizer", None)
    settings.FER_FLIP_TTA, settings.FER_DETECTOR = False, "haar"
    recognizer = analysis.recognizer_get()
    assert recognizer.classifier.flip_tta is False and isinstance(recognizer.detector, HaarFaceDetector)
    assert analysis.recognizer_get() is recognizer  # loaded once per process
    monkeypatch.setattr(analysis, "_recognizer", None)
    settings.FER_FLIP_TTA, settings.FER_DETECTOR = True, "blazeface"
    assert analysis.recognizer_get().classifier.flip_tta is True


def test_real_recognizer_output_is_stored(teacher, make_session, group_photo):
    from sessions_app.services.analysis import recognizer_get

    path, count = group_photo
    image = cv2.imread(str(path))
    results = recognizer_get().analyze(image)
    s = make_session(teacher)
    frame = store_frame(s, 0.0, results, sequence=0)
    assert abs(frame.face_count - count) <= 1
    for f, r in zip(Face.objects.filter(frame=frame).order_by("id"), results, strict=True):
        assert f.box == tuple(r.box) and f.label == r.label
        assert np.allclose(f.probabilities, r.probabilities, atol=1e-6)


def test_result_event_published_after_commit(teacher, make_session, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    s = make_session(teacher)
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(session_group_name(s.pk), channel)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            store_frame(s, 2.0, [face_result("surprise")], sequence=3)
        assert len(callbacks) == 1
        event = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(session_group_name(s.pk), channel)
    assert event["type"] == "frame.result" and event["sequence"] == 3 and event["face_count"] == 1
    assert event["faces"][0]["label"] == "surprise" and event["faces"][0]["box"] == [10, 20, 30, 40]
    assert set(event["faces"][0]["probabilities"]) == set(LABELS)


def test_timeline_buckets_and_min_faces_rule(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    store_frame(s, 0.2, [face_result("happy")] * 2, sequence=0)
    store_frame(s, 1.5, [face_result("happy"), face_result("sad")], sequence=1)
    store_frame(s, 4.99, [], sequence=2)
    store_frame(s, 5.0, [face_result("sad")], sequence=3)  # bucket [5,10): 1 face < 3 -> no aggregates
    store_frame(s, 12.0, [face_result("neutral")] * 3, sequence=4)
    tl = selectors.session_timeline(session=s, bucket_s=5)
    assert [(b["start_s"], b["end_s"], b["frames"], b["faces"]) for b in tl] == [
        (0, 5, 3, 4),
        (5, 10, 1, 1),
        (10, 15, 1, 3),
    ]
    first = tl[0]
    assert first["mean_face_count"] == pytest.approx(4 / 3, abs=1e-3)
    assert first["probabilities"]["happy"] == pytest.approx((3 * 0.7 + 0.05) / 4)
    assert first["probabilities"]["sad"] == pytest.approx((0.7 + 3 * 0.05) / 4)
    assert first["dominant"] == "happy"
    means = [first["probabilities"][lb] for lb in LABELS]
    assert first["valence"] == pytest.approx(sum(m * v for m, v in zip(means, VALENCE, strict=True)), abs=1e-5)
    assert tl[1]["probabilities"] is None and tl[1]["dominant"] is None and tl[1]["valence"] is None
    assert tl[2]["dominant"] == "neutral"
    one_s = selectors.session_timeline(session=s, bucket_s=1)
    assert [b["start_s"] for b in one_s] == [0, 1, 4, 5, 12]
    with pytest.raises(ValueError):
        selectors.session_timeline(session=s, bucket_s=0)
    dist = selectors.session_distribution(session=s)
    assert dist["faces"] == 8 and dist["dominant"] == "happy"
    assert sum(dist["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    summary = selectors.session_summary(session=s)
    assert summary["frames"] == 5 and summary["faces"] == 8 and summary["frame_span_s"] == pytest.approx(11.8)


def test_summary_duration_is_the_sessions_wall_clock_duration(teacher, make_session):
    """Duration = session start to end (or to now while running), not the span between the first and last frame:
    a 40 s session with one frame lasted 40 s, not 0 s."""
    s = make_session(teacher)
    store_frame(s, 3.0, [face_result("happy")], sequence=0)
    now = s.created_at + dt.timedelta(seconds=25)
    running = selectors.session_summary(session=s, now=now)
    assert running["duration_s"] == pytest.approx(25.0) and running["frame_span_s"] == 0.0
    EmotionSession.objects.filter(pk=s.pk).update(status="ended", ended_at=s.created_at + dt.timedelta(seconds=40))
    s.refresh_from_db()
    ended = selectors.session_summary(session=s, now=now + dt.timedelta(hours=1))
    assert ended["duration_s"] == pytest.approx(40.0) and ended["frames"] == 1
    assert selectors.session_duration_s(session=s) == pytest.approx(40.0)


def test_distribution_hidden_below_min_faces(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    assert selectors.session_distribution(session=s) == {"faces": 0, "probabilities": None, "dominant": None}
    store_frame(s, 0.0, [face_result("fear")] * 2, sequence=0)
    assert selectors.session_distribution(session=s)["probabilities"] is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_stores_keep_bucket_sums_exact(teacher, make_session):
    """Eight threads store frames into the same 1-second bucket at once: F() increments lose nothing."""
    s = make_session(teacher)
    errors = []

    def worker(n):
        try:
            for i in range(5):
                store_frame(s, 0.5, [face_result("happy")] * 2, sequence=n * 100 + i)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    bucket = TimelineBucket.objects.get(session=s, second=0)
    assert (bucket.frames, bucket.faces) == (40, 80)
    assert bucket.sum_p_happy == pytest.approx(80 * 0.7)
    s.refresh_from_db()
    assert s.frames_processed == 40


def test_counters_and_upload_sources(teacher, make_session):
    s = make_session(teacher)
    session_counters_add(session_id=s.pk, received=3, dropped=2, rejected=1)
    session_counters_add(session_id=s.pk)
    assert selectors.session_counters(session_id=s.pk) == {"received": 3, "processed": 0, "dropped": 2, "rejected": 1}
    assert [upload_source_allocate(session=s) for _ in range(3)] == ["upload:1", "upload:2", "upload:3"]


# ---------------------------------------------------------------------------------------------- frame_validate
def png(w=32, h=16) -> bytes:
    return cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes()


def test_frame_validate_accepts_jpeg_png_and_header(group_photo):
    path, _ = group_photo
    data = path.read_bytes()
    msg = frame_validate(data)
    assert (msg.width, msg.height, msg.sequence, msg.captured_at_ms) == (500, 334, None, None)
    header = FRAME_HEADER.pack(b"FRM1", 42, 1_700_000_000_123.0)
    msg = frame_validate(header + png())
    assert (msg.width, msg.height, msg.sequence, msg.captured_at_ms) == (32, 16, 42, 1_700_000_000_123.0)
    assert msg.data == png()


@pytest.mark.parametrize(
    "payload,code",
    [
        ("hello", "binary_expected"),
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 100, "not_an_image"),
        (b"%PDF-1.4 not an image", "not_an_image"),
        (b"FRM1\x00", "bad_header"),
    ],
)
def test_frame_validate_rejects(payload, code):
    with pytest.raises(FrameRejected) as info:
        frame_validate(payload)
    assert info.value.code == code


def test_frame_validate_truncated_oversized_and_too_big(settings):
    data = jpeg(64, 48, quality=80)
    with pytest.raises(FrameRejected) as info:
        frame_validate(data[: len(data) // 2])
    assert info.value.code == "truncated"
    with pytest.raises(FrameRejected) as info:
        frame_validate(png()[:30])
    assert info.value.code == "truncated"
    settings.FER_MAX_FRAME_BYTES = 1000
    with pytest.raises(FrameRejected) as info:
        frame_validate(jpeg(320, 240, quality=95))
    assert info.value.code == "too_large"
    settings.FER_MAX_FRAME_BYTES = 1_000_000
    with pytest.raises(FrameRejected) as info:
        frame_validate(jpeg(2000, 20, quality=80))
    assert info.value.code == "too_big_dimensions"
    assert frame_validate(jpeg(1920, 1080, quality=30)).width == 1920


# ------------------------------------------------------------------------------- worker side: outcomes, failures
@pytest.mark.django_db(transaction=True)
def test_each_frame_has_exactly_one_outcome(teacher, make_session):
    """The worker and the stream's lost-frame housekeeping race for a frame's outcome: only the first counts."""
    s = make_session(teacher)
    layer, channel = listen(s.pk)
    # the worker answers first: the stream's later "lost" claim fails (the result is counted, once)
    frame = record_analysis(s, 1)
    assert frame is not None and frame.offset_s == pytest.approx(1.5, abs=0.01)
    assert next_event(layer, channel)["type"] == "frame.result"
    assert not frame_outcome_claim(session=s, source="camera:w", sequence=1, outcome="lost")
    # the stream declared frame 2 lost first: its late result is neither stored nor published nor counted
    assert frame_outcome_claim(session=s, source="camera:w", sequence=2, outcome="lost")
    session_counters_add(session_id=s.pk, dropped=1)  # what the stream counts for a lost frame
    assert record_analysis(s, 2) is None
    # an expired task or an error for a lost frame is not counted either
    assert frame_outcome_claim(session=s, source="camera:w", sequence=3, outcome="lost")
    session_counters_add(session_id=s.pk, dropped=1)
    assert not frame_dropped_record(session_id=s.pk, source="camera:w", sequence=3, reason="expired")
    assert not frame_error_record(session_id=s.pk, source="camera:w", sequence=3, code="x", detail="y")
    assert no_event(layer, channel)
    assert list(Frame.objects.filter(session=s).values_list("sequence", flat=True)) == [1]
    assert selectors.session_counters(session_id=s.pk) == {"received": 0, "processed": 1, "dropped": 2, "rejected": 0}
    assert record_analysis(s, 1) is None  # a redelivered task is not counted twice either


@pytest.mark.django_db(transaction=True)
def test_recognizer_exception_publishes_error_and_stores_nothing(teacher, make_session, group_photo, monkeypatch):
    """An exception inside ``analyze()`` answers the frame with ``frame.error`` (``analysis_failed``) at once, so the
    client's in-flight slot is freed; nothing is stored and the task returns normally (the worker lives on)."""
    import base64

    from sessions_app.services import analysis

    class Broken:
        def analyze(self, image):
            raise RuntimeError("onnxruntime exploded")

    s = make_session(teacher)
    layer, channel = listen(s.pk)
    monkeypatch.setattr(analysis, "recognizer_get", lambda: Broken())
    data = base64.b64encode(group_photo[0].read_bytes()).decode()
    analysis.frame_analyze(session_id=s.pk, source="camera:e", sequence=4, captured_at_ms=0.0, data_b64=data)
    ev = next_event(layer, channel)
    assert (ev["type"], ev["source"], ev["sequence"], ev["code"]) == ("frame.error", "camera:e", 4, "analysis_failed")
    assert "onnxruntime exploded" in ev["detail"]
    assert not Frame.objects.filter(session=s).exists() and not TimelineBucket.objects.filter(session=s).exists()
    assert selectors.session_counters(session_id=s.pk) == {"received": 0, "processed": 0, "dropped": 0, "rejected": 1}
    # malformed recogniser output: the transaction rolls back, a storage_failed error answers the frame
    assert record_analysis(s, 5, faces=[face_result("happy") | {"label": "bored"}]) is None
    ev = next_event(layer, channel)
    assert (ev["type"], ev["sequence"], ev["code"]) == ("frame.error", 5, "storage_failed")
    assert not Frame.objects.filter(session=s).exists()
    assert selectors.session_counters(session_id=s.pk)["rejected"] == 2
    # a frame of a deleted session is dropped quietly
    sid = s.pk
    s.delete()
    assert (
        frame_analysis_record(
            session_id=sid,
            source="camera:e",
            sequence=6,
            captured_at_ms=0.0,
            width=1,
            height=1,
            processing_ms=1.0,
            faces=[],
        )
        is None
    )
