"""Frame services (``sessions_app.services.frames``): storage, result events, validation and the one outcome of
each frame, on real PostgreSQL and the real Redis channel layer and cache."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection

from inference.imageio import FRAME_HEADER, FrameRejected
from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import Face, Frame, TimelineBucket
from sessions_app.services.events import session_group_name
from sessions_app.services.frames import frame_dropped_record, frame_error_record, frame_outcome_claim, frame_validate
from sessions_app.services.sessions import session_counters_add
from tests.helpers import face_result, jpeg, listen, next_event, no_event, record_analysis, store_frame

pytestmark = pytest.mark.django_db


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


@pytest.mark.django_db(transaction=True)
def test_a_worker_stores_a_frame_in_seven_statements_and_a_duplicate_changes_nothing(teacher, make_session):
    """What a worker sends the database per analysed frame: the session's id and start, then one transaction (frame,
    faces, bucket upsert, session counter) with no savepoint; a duplicate rolls that transaction back whole."""
    from django.test.utils import CaptureQueriesContext

    s = make_session(teacher)
    with CaptureQueriesContext(connection) as queries:
        record_analysis(s, 0, faces=[face_result("happy"), face_result("sad")])
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert statements == ["SELECT", "BEGIN", "INSERT", "INSERT", "INSERT", "UPDATE", "COMMIT"], statements
    first = Frame.objects.get(session=s)
    again = store_frame(s, first.offset_s, [face_result("angry")], sequence=first.sequence, source=first.source)
    assert again.pk == first.pk and Face.objects.filter(session=s).count() == 2
    assert TimelineBucket.objects.get(session=s).frames == 1
    s.refresh_from_db()
    assert s.frames_processed == 1


def test_malformed_faces_store_nothing(teacher, make_session):
    s = make_session(teacher)
    bad = face_result("happy")
    bad["probabilities"] = {"happy": 1.0}
    with pytest.raises((ValueError, KeyError)):
        store_frame(s, 0.5, [face_result("sad"), bad], sequence=1)
    with pytest.raises(ValueError):
        store_frame(s, 0.5, [face_result("sad") | {"label": "bored"}], sequence=2)
    assert not Frame.objects.filter(session=s).exists() and not TimelineBucket.objects.filter(session=s).exists()


def test_head_pose_is_stored_in_degrees_and_a_malformed_pose_stores_nothing(teacher, make_session):
    s = make_session(teacher)
    pose = {"yaw": 27.8, "pitch": -9.6, "roll": 8.5}
    frame = store_frame(s, 1.0, [face_result("happy") | {"head_pose": pose}, face_result("sad")], sequence=0)
    posed, plain = Face.objects.filter(frame=frame).order_by("id")
    assert (posed.yaw, posed.pitch, posed.roll) == (27.8, -9.6, 8.5) and posed.head_pose == pose
    assert posed.facing_camera is True and plain.head_pose is None and plain.facing_camera is None
    for bad in ({"yaw": float("nan"), "pitch": 0, "roll": 0}, {"yaw": 400, "pitch": 0, "roll": 0}, {"yaw": 1}, "up"):
        with pytest.raises(ValueError):
            store_frame(s, 2.0, [face_result("sad"), face_result("sad") | {"head_pose": bad}], sequence=1)
    assert Frame.objects.filter(session=s).count() == 1 and Face.objects.filter(session=s).count() == 2


def test_result_event_is_published_after_commit(teacher, make_session, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    s = make_session(teacher)
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(session_group_name(s.pk), channel)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            store_frame(
                s, 2.0, [face_result("surprise") | {"head_pose": {"yaw": 50, "pitch": 0, "roll": 0}}], sequence=3
            )
        assert len(callbacks) == 1
        event = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(session_group_name(s.pk), channel)
    assert event["type"] == "frame.result" and event["sequence"] == 3 and event["face_count"] == 1
    assert event["faces"][0]["label"] == "surprise" and event["faces"][0]["box"] == [10, 20, 30, 40]
    assert set(event["faces"][0]["probabilities"]) == set(LABELS)
    assert event["faces"][0]["head_pose"] == {"yaw": 50, "pitch": 0, "roll": 0}
    assert event["faces"][0]["facing_camera"] is False


@pytest.mark.django_db(transaction=True)
def test_concurrent_stores_keep_bucket_sums_exact(teacher, make_session):
    """Eight threads store frames into the same 1-second bucket at once: F() increments lose nothing."""
    s = make_session(teacher)
    errors = []

    def worker(n):
        try:
            for i in range(5):
                store_frame(s, 0.5, [face_result("happy")] * 2, sequence=n * 100 + i)
        except Exception as exc:
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
def test_frame_validate_rejects_non_image_payloads_with_their_code(payload, code):
    with pytest.raises(FrameRejected) as info:
        frame_validate(payload)
    assert info.value.code == code


def test_frame_validate_rejects_truncated_too_large_and_too_big_images(settings):
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


# ------------------------------------------------------------------------- outcomes: the worker and the stream race
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


@pytest.fixture
def admission(settings):
    """A live queue (hence an admission set) of this test alone, with 2 analysis slots, on the real Redis."""
    import secrets

    from sessions_app.services import frames

    settings.FER_LIVE_QUEUE = f"fer-test-admission-{secrets.token_hex(4)}"
    settings.FER_ANALYSIS_SLOTS = 2
    client, _ = frames._admission_redis()
    yield client, frames._admission_key()
    client.delete(*frames._admission_keys())


def camera_inboxes(session_id, *sources):
    """A new channel of the real channel layer in each camera's own group (where ``admission.wake`` goes); returns
    ``(layer, {source: channel})``."""
    from sessions_app.services.events import camera_group_name

    layer = get_channel_layer()
    inboxes = {}
    for source in sources:
        inboxes[source] = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(camera_group_name(session_id, source), inboxes[source])
    return layer, inboxes


def test_admission_holds_the_whole_system_to_its_slots_until_answers_give_them_back(admission):
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_release, frame_admission_token

    client, key = admission
    tokens = [frame_admission_token(1, "camera:a", n) for n in range(3)]
    assert [frame_admission_acquire(token=t) for t in tokens] == [True, True, False]
    frame_admission_release(token=tokens[0])
    frame_admission_release(token=tokens[0])  # idempotent
    assert frame_admission_acquire(token=tokens[2]) is True
    assert sorted(m.decode() for m in client.zrange(key, 0, -1)) == sorted(tokens[1:])


def test_admissions_of_a_crashed_process_are_reclaimed(admission, settings):
    import time

    from sessions_app.services.frames import frame_admission_acquire

    client, key = admission
    old = time.time() - settings.FER_FRAME_TASK_EXPIRES_S - 11
    client.zadd(key, {"9:camera:dead:1": old, "9:camera:dead:2": old})
    assert frame_admission_acquire(token="1:camera:a:0") is True
    assert client.zcard(key) == 1


def test_the_worker_gives_the_slot_back_with_each_outcome(admission, teacher, make_session):
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_token

    client, key = admission
    s = make_session(teacher)
    for seq in range(3):
        assert frame_admission_acquire(token=frame_admission_token(s.pk, "camera:w", seq)) is (seq < 2)
    record_analysis(s, 0)
    frame_error_record(session_id=s.pk, source="camera:w", sequence=1, code="undecodable", detail="x")
    assert client.zcard(key) == 0
    assert frame_admission_acquire(token=frame_admission_token(s.pk, "camera:w", 2)) is True


def test_faces_too_small_to_read_are_counted_but_left_out_of_the_emotion_shares(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 1
    s = make_session(teacher)
    readable = face_result("happy")
    small = face_result("sad", box=(5, 5, 12, 12)) | {"too_small": True}
    frame = store_frame(s, 0.2, [readable, small, small], sequence=0)
    assert frame.face_count == 3
    assert sorted(Face.objects.filter(frame=frame).values_list("too_small", flat=True)) == [False, True, True]
    (bucket,) = selectors.session_timeline(session=s, bucket_s=5)
    assert (bucket["faces"], bucket["faces_too_small"], bucket["mean_face_count"]) == (1, 2, 3.0)
    # the two small "sad" faces are not read: the shares are the one readable face's
    assert bucket["dominant"] == "happy" and bucket["probabilities"]["sad"] == pytest.approx(0.05)
    assert selectors.session_distribution(session=s)["faces"] == 1


def test_a_free_slot_goes_to_the_camera_that_waited_longest(admission):
    """Fair share across cameras: a fast camera that already holds the slots cannot take the next free one while a
    slower camera waits for its turn."""
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_release

    fast, slow = "1:camera:fast", "1:camera:slow"
    assert frame_admission_acquire(token=f"{fast}:0") and frame_admission_acquire(token=f"{fast}:1")  # 2 slots
    assert not frame_admission_acquire(token=f"{slow}:0")  # full: the slow camera waits, first in line
    assert not frame_admission_acquire(token=f"{fast}:2")  # the fast one queues behind it
    frame_admission_release(token=f"{fast}:0")
    assert not frame_admission_acquire(token=f"{fast}:2")  # one slot free, but the slow camera waited longer
    assert frame_admission_acquire(token=f"{slow}:0")
    assert not frame_admission_acquire(token=f"{fast}:2")  # full again
    frame_admission_release(token=f"{fast}:1")
    assert frame_admission_acquire(token=f"{fast}:2")  # now its turn


def test_a_camera_that_stopped_trying_loses_its_place(admission, monkeypatch):
    from sessions_app.services import frames

    assert frames.frame_admission_acquire(token="1:camera:a:0") and frames.frame_admission_acquire(token="1:camera:a:1")
    assert not frames.frame_admission_acquire(token="1:camera:gone:0")  # waits, then disconnects
    frames.frame_admission_release(token="1:camera:a:0")
    monkeypatch.setattr(frames, "ADMISSION_GIVE_UP_S", 0.0)  # its last try is now "too long ago"
    assert frames.frame_admission_acquire(token="1:camera:b:0")


def test_a_freed_slot_wakes_the_camera_first_in_line_and_only_it(admission):
    """The release tells the waiting camera at once (``admission.wake`` to its own group), so the slot does not
    idle until that camera's next timed retry; the camera behind it is not woken for one free slot."""
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_release

    layer, inboxes = camera_inboxes(7, "camera:first", "camera:second")
    assert frame_admission_acquire(token="7:camera:holder:0") and frame_admission_acquire(token="7:camera:holder:1")
    assert not frame_admission_acquire(token="7:camera:first:0")
    assert not frame_admission_acquire(token="7:camera:second:0")
    frame_admission_release(token="7:camera:holder:0")
    assert next_event(layer, inboxes["camera:first"]) == {"type": "admission.wake"}
    assert frame_admission_acquire(token="7:camera:first:0")
    frame_admission_release(token="7:camera:first:0")  # the first camera is no longer waiting: the second is woken
    assert next_event(layer, inboxes["camera:second"]) == {"type": "admission.wake"}
    assert no_event(layer, inboxes["camera:second"])  # once: the first release did not wake it


def test_a_free_slot_goes_to_a_fresh_frame_before_an_older_one_that_waited_longer_and_never_idles(admission):
    """Under overload the frame a camera holds may wait until its next frame replaces it; a free slot goes to a frame
    received less than ``FER_ADMISSION_FRESH_S`` ago before such an aged one, even from a camera further back in
    line. When no waiting camera has a fresh frame, the aged one is admitted (no slot idles while frames wait)."""
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_release

    assert frame_admission_acquire(token="1:camera:holder:0") and frame_admission_acquire(token="1:camera:holder:1")
    assert not frame_admission_acquire(token="1:camera:aged:0", waited_s=1.0)  # first in line
    assert not frame_admission_acquire(token="1:camera:fresh:0", waited_s=0.0)  # behind it
    frame_admission_release(token="1:camera:holder:0")
    assert not frame_admission_acquire(token="1:camera:aged:0", waited_s=1.0)  # a fresh frame waits
    assert frame_admission_acquire(token="1:camera:fresh:0", waited_s=0.0)
    frame_admission_release(token="1:camera:holder:1")
    assert frame_admission_acquire(token="1:camera:aged:0", waited_s=1.0)  # nothing fresher waits


def test_a_camera_keeps_its_place_while_its_frame_is_old_so_its_next_fresh_frame_goes_first(admission):
    """Fresh-first does not cost a camera its turn: the camera first in line whose frame aged keeps its place, and
    its next (fresh) frame takes the next free slot ahead of fresh frames of cameras that came after it."""
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_release

    assert frame_admission_acquire(token="1:camera:holder:0") and frame_admission_acquire(token="1:camera:holder:1")
    assert not frame_admission_acquire(token="1:camera:slow:0", waited_s=0.6)  # aged, first in line
    assert not frame_admission_acquire(token="1:camera:fast:0", waited_s=0.0)
    frame_admission_release(token="1:camera:holder:0")
    assert frame_admission_acquire(token="1:camera:fast:0", waited_s=0.0)  # the fresh frame goes first
    assert not frame_admission_acquire(token="1:camera:fast:1", waited_s=0.0)  # full: back in line
    assert not frame_admission_acquire(token="1:camera:slow:1", waited_s=0.0)  # its next frame, fresh
    frame_admission_release(token="1:camera:holder:1")
    assert not frame_admission_acquire(token="1:camera:fast:1", waited_s=0.0)  # the slow camera is ahead
    assert frame_admission_acquire(token="1:camera:slow:1", waited_s=0.0)


def test_a_fresh_frame_behind_a_long_line_of_aged_ones_gets_the_free_slot(admission):
    """The script reads the line in chunks: a fresh frame behind a hundred aged ones (more than one chunk, more than
    the scan limit) still gets the free slot, and an aged one gets it only when no fresh frame waits."""
    from sessions_app.services.frames import ADMISSION_SCAN_LIMIT, frame_admission_acquire, frame_admission_release

    assert frame_admission_acquire(token="1:camera:holder:0") and frame_admission_acquire(token="1:camera:holder:1")
    aged = [f"1:camera:aged{n}" for n in range(ADMISSION_SCAN_LIMIT + 36)]
    for camera in aged:
        assert not frame_admission_acquire(token=f"{camera}:0", waited_s=1.0)
    assert not frame_admission_acquire(token="1:camera:fresh:0", waited_s=0.0)
    frame_admission_release(token="1:camera:holder:0")
    assert not frame_admission_acquire(token=f"{aged[0]}:0", waited_s=1.0)
    assert frame_admission_acquire(token="1:camera:fresh:0", waited_s=0.0)
    frame_admission_release(token="1:camera:holder:1")
    assert not frame_admission_acquire(token=f"{aged[1]}:0", waited_s=1.0)  # not first in line
    assert frame_admission_acquire(token=f"{aged[0]}:0", waited_s=1.0)


def test_a_freed_slot_wakes_the_first_camera_in_line_with_a_fresh_frame(admission):
    """The wake-up follows the admission rule: with an aged frame first in line and a fresh one behind it, the
    release wakes the camera with the fresh frame (the one that will get the slot), not the aged one."""
    from sessions_app.services.frames import frame_admission_acquire, frame_admission_release

    layer, inboxes = camera_inboxes(8, "camera:aged", "camera:fresh")
    assert frame_admission_acquire(token="8:camera:holder:0") and frame_admission_acquire(token="8:camera:holder:1")
    assert not frame_admission_acquire(token="8:camera:aged:0", waited_s=1.0)
    assert not frame_admission_acquire(token="8:camera:fresh:0", waited_s=0.0)
    frame_admission_release(token="8:camera:holder:0")
    assert next_event(layer, inboxes["camera:fresh"]) == {"type": "admission.wake"}
    assert no_event(layer, inboxes["camera:aged"])


def test_live_dispatch_queues_admitted_frames_refuses_beyond_the_slots_and_frees_the_slot_of_a_failed_send(
    admission, settings, monkeypatch
):
    from kombu.exceptions import OperationalError

    from sessions_app.services import frames
    from tests.helpers import idle_celery_queue

    client, key = admission
    frame = jpeg()
    with idle_celery_queue(settings, "FER_LIVE_QUEUE") as length:
        key = frames._admission_key()  # the idle queue's own admission set

        def dispatch(sequence: int) -> str:
            return frames.frame_live_dispatch(
                session_id=5, source="camera:d", sequence=sequence, captured_at_ms=0.0, data=frame, expires_s=10.0
            )

        try:
            assert [dispatch(0), dispatch(1), dispatch(2)] == [
                frames.DISPATCH_QUEUED,
                frames.DISPATCH_QUEUED,
                frames.DISPATCH_REFUSED,
            ]
            assert length() == 2  # the refused frame never reached the broker
            frames.frame_admission_release(token=frames.frame_admission_token(5, "camera:d", 0))

            def broker_refuses(**_kwargs):
                raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

            monkeypatch.setattr(frames, "frame_analyze_enqueue", broker_refuses)
            assert dispatch(3) == frames.DISPATCH_UNAVAILABLE
            assert [m.decode() for m in client.zrange(key, 0, -1)] == ["5:camera:d:1"]  # frame 3 holds no slot
        finally:
            client.delete(key, key + ":waiting", key + ":tried")
