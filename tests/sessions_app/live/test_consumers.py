"""WebSocket consumers through the real ASGI stack (origin check, session-cookie auth, routing), real Redis channel
layer and real Celery broker. No worker runs here: frames go to a queue nobody consumes, so in-flight frames stay in
flight and backpressure is observable. (Results coming back from a real worker: ``tests/e2e/test_worker.py``.)"""

from __future__ import annotations

import asyncio
import json
import time

import cv2
import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from inference.imageio import FRAME_HEADER
from sessions_app.models import EmotionSession, Frame
from sessions_app.services.frames import frame_analysis_record, frame_outcome_claim, frame_result_store
from sessions_app.services.sessions import session_end
from tests.helpers import cookie, events, idle_celery_queue, jpeg, open_ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_async_thread_db_connections")]


def with_header(seq: int, data: bytes) -> bytes:
    import time

    return FRAME_HEADER.pack(b"FRM1", seq, time.time() * 1000) + data


@pytest.fixture
def idle_queue(settings):
    """Send frame tasks to a queue of their own that no worker consumes; yields a function giving its length."""
    with idle_celery_queue(settings, "FER_LIVE_QUEUE") as length:
        yield length


async def expect_close(comm: WebsocketCommunicator, code: int, error: str) -> None:
    first = json.loads(await comm.receive_from(timeout=5))
    assert first["type"] == "error" and first["code"] == error
    out = await comm.receive_output(timeout=5)
    assert out == {"type": "websocket.close", "code": code}


async def test_anonymous_unknown_foreign_and_ended_sessions_are_refused(
    teacher, other_teacher, staff_user, make_session
):
    mine = await sync_to_async(make_session)(teacher)
    theirs = await sync_to_async(make_session)(other_teacher)
    ended = await sync_to_async(make_session)(teacher)
    await sync_to_async(session_end)(session=ended)
    sid, admin_sid = await sync_to_async(cookie)(teacher), await sync_to_async(cookie)(staff_user)

    await expect_close(await open_ws(f"/ws/sessions/{mine.pk}/stream/"), 4401, "unauthenticated")
    await expect_close(await open_ws(f"/ws/sessions/{mine.pk}/watch/"), 4401, "unauthenticated")
    await expect_close(await open_ws("/ws/sessions/999999/stream/", sid), 4404, "not_found")
    await expect_close(await open_ws(f"/ws/sessions/{theirs.pk}/stream/", sid), 4404, "not_found")
    await expect_close(await open_ws(f"/ws/sessions/{theirs.pk}/watch/", sid), 4404, "not_found")
    await expect_close(await open_ws(f"/ws/sessions/{ended.pk}/stream/", sid), 4409, "session_ended")
    # an admin may watch someone's session live, but not stream into it
    await expect_close(await open_ws(f"/ws/sessions/{mine.pk}/stream/", admin_sid), 4403, "forbidden")
    watcher = await open_ws(f"/ws/sessions/{mine.pk}/watch/", admin_sid)
    assert (await events(watcher, 1))[0] == {"type": "ready", "session_id": mine.pk, "mode": "watch"}
    await watcher.send_to(bytes_data=jpeg())
    assert (await events(watcher, 1))[0]["code"] == "read_only"
    await watcher.disconnect()


async def test_bad_messages_get_errors_and_the_socket_survives(teacher, make_session, idle_queue):
    s = await sync_to_async(make_session)(teacher)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    ready = (await events(comm, 1))[0]
    assert ready["type"] == "ready" and ready["max_frame_bytes"] == 1_000_000 and ready["source"].startswith("camera:")
    good = jpeg()
    big = cv2.imencode(".jpg", np.zeros((1200, 2000, 3), np.uint8))[1].tobytes()
    cases = [
        ({"text_data": "a text frame"}, "binary_expected"),
        ({"bytes_data": b"\x00\x01 not an image at all"}, "not_an_image"),
        ({"bytes_data": good[: len(good) // 2]}, "truncated"),
        ({"bytes_data": b"\xff\xd8\xff" + b"\x00" * 1_100_000 + b"\xff\xd9"}, "too_large"),
        ({"bytes_data": big}, "too_big_dimensions"),
        ({"bytes_data": b"FRM1\x00\x01"}, "bad_header"),
    ]
    for message, code in cases:
        await comm.send_to(**message)
        ev = (await events(comm, 1))[0]
        assert (ev["type"], ev["code"]) == ("error", code), ev
    # still alive: a valid frame is accepted and queued (no error, no close)
    await comm.send_to(bytes_data=with_header(0, good))
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_rejected, s.frames_received, s.frames_dropped) == (len(cases), 1, 0)
    assert await sync_to_async(idle_queue)() == 1
    assert not await sync_to_async(Frame.objects.filter(session=s).exists)()


async def test_flood_keeps_latest_frame_and_counts_drops(teacher, make_session, idle_queue, settings):
    """100 frames at once into a 2 fps session: 2 go to Celery, 1 waits, every other one is dropped and counted."""
    assert settings.FER_MAX_IN_FLIGHT == 2
    s = await sync_to_async(make_session)(teacher, target_fps=2.0)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    await events(comm, 1)
    frame = jpeg()
    n = 100
    for seq in range(n):
        await comm.send_to(bytes_data=with_header(seq, frame))
    dropped = await events(comm, n - 3)
    assert all(ev["type"] == "dropped" for ev in dropped)
    reasons = {ev["reason"] for ev in dropped}
    assert reasons == {"replaced", "rate_limited"}
    assert {0, 1}.isdisjoint(ev["sequence"] for ev in dropped)  # the first two went to Celery
    assert await comm.receive_nothing(timeout=0.3)
    assert await sync_to_async(idle_queue)() == 2  # bounded: never more than FER_MAX_IN_FLIGHT tasks queued
    await comm.send_to(text_data="still there?")
    assert (await events(comm, 1))[0]["code"] == "binary_expected"
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert s.frames_received == n
    assert s.frames_dropped == n - 2  # n - 3 dropped while streaming + the pending one at disconnect
    assert s.frames_rejected == 1


async def test_a_camera_that_stops_has_its_waiting_frame_dropped_and_keeps_its_socket(
    teacher, make_session, idle_queue, settings
):
    """Two frames in flight (no worker answers them), a third waits for a slot; ``{"type": "stop"}`` drops the waiting
    one as ``stopped`` and nothing else: the socket stays open for the answers, and any other text is still refused."""
    assert settings.FER_MAX_IN_FLIGHT == 2
    s = await sync_to_async(make_session)(teacher, target_fps=2.0)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    await events(comm, 1)
    frame = jpeg()
    for seq in range(3):
        await comm.send_to(bytes_data=with_header(seq, frame))
    assert await comm.receive_nothing(timeout=0.3)  # 0 and 1 queued, 2 waits
    await comm.send_to(text_data=' { "type" : "stop" } ')
    (ev,) = await events(comm, 1)
    assert (ev["type"], ev["sequence"], ev["reason"]) == ("dropped", 2, "stopped")
    await comm.send_to(text_data=json.dumps({"type": "stop"}))
    assert await comm.receive_nothing(timeout=0.3)  # nothing waits any more: nothing to drop, no error
    await comm.send_to(text_data=json.dumps({"type": "stop", "now": True}))
    assert (await events(comm, 1))[0]["code"] == "binary_expected"
    assert await sync_to_async(idle_queue)() == 2
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_dropped, s.frames_rejected) == (3, 1, 1)


def _queued_task_kwargs(queue: str) -> list[dict]:
    """Keyword arguments of the frame tasks waiting in the Celery queue ``queue`` (Redis list, kombu's envelope)."""
    import base64

    from fer_platform.celery import app

    with app.connection_for_write() as conn:
        raw = conn.default_channel.client.lrange(queue, 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[1] for m in raw]


async def test_a_classroom_cameras_frames_ask_for_classroom_faces_and_a_crowds_for_every_face(
    teacher, make_session, idle_queue, settings
):
    frame = jpeg()
    for kind, expected in (("classroom", 24), ("crowd", None)):
        s = await sync_to_async(make_session)(teacher, kind=kind)
        comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
        await events(comm, 1)
        await comm.send_to(bytes_data=with_header(0, frame))
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()
        (kwargs,) = [
            k for k in await sync_to_async(_queued_task_kwargs)(settings.FER_LIVE_QUEUE) if k["session_id"] == s.pk
        ]
        assert kwargs.get("min_face_px") == expected and kwargs["sequence"] == 0


async def test_results_reach_viewers_and_end_closes_streams(teacher, staff_user, make_session, idle_queue):
    s = await sync_to_async(make_session)(teacher)
    stream = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    viewer = await open_ws(f"/ws/sessions/{s.pk}/watch/", await sync_to_async(cookie)(staff_user))
    await events(stream, 1)
    await events(viewer, 1)
    face = {"box": [1, 2, 30, 40], "label": "happy", "score": 0.9, "probabilities": {"happy": 0.9, "angry": 0.1}}
    face["probabilities"] |= {k: 0.0 for k in ("disgust", "fear", "sad", "surprise", "neutral")}
    await sync_to_async(frame_result_store)(
        session=s,
        source="upload:1",
        sequence=0,
        captured_at=s.created_at,
        width=100,
        height=80,
        processing_ms=5.0,
        faces=[face],
    )
    for comm in (viewer, stream):
        ev = (await events(comm, 1))[0]
        assert ev["type"] == "result" and ev["source"] == "upload:1" and ev["faces"][0]["box"] == [1, 2, 30, 40]
    await sync_to_async(session_end)(session=s)
    for comm in (viewer, stream):
        assert (await events(comm, 1))[0]["type"] == "ended"
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1000}


@pytest.mark.parametrize("skew_s", [-30.0, -59.0, -3600.0, 20.0])
async def test_client_with_a_skewed_clock_is_served_normally(teacher, make_session, idle_queue, monkeypatch, skew_s):
    """A browser whose clock is off (e.g. 30 s behind) must not have its frames dropped as stale, and the capture
    time handed to the worker (hence the stored ``offset_s``) is on the server's clock."""
    import time

    from sessions_app.services import frames as frame_services

    queued = []
    original = frame_services.frame_analyze_enqueue

    def spy(**kwargs):
        queued.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(frame_services, "frame_analyze_enqueue", spy)
    s = await sync_to_async(make_session)(teacher, target_fps=2.0)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    await events(comm, 1)
    frame = jpeg()
    for seq in range(2):
        client_ms = (time.time() + skew_s) * 1000
        await comm.send_to(bytes_data=FRAME_HEADER.pack(b"FRM1", seq, client_ms) + frame)
        assert await comm.receive_nothing(timeout=0.6)  # no "dropped: stale"
    await comm.disconnect()
    await asyncio.sleep(0.2)
    assert [q["sequence"] for q in queued] == [0, 1] and await sync_to_async(idle_queue)() == 2
    for q in queued:
        assert abs(q["captured_at_ms"] - time.time() * 1000) < 5_000, q["captured_at_ms"]  # server time, not client
        assert q["expires_s"] == pytest.approx(10.0, abs=0.5)
    assert queued[1]["captured_at_ms"] - queued[0]["captured_at_ms"] == pytest.approx(600, abs=150)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_dropped) == (2, 0)


@pytest.fixture
def fast_lost(settings, monkeypatch):
    """Frames are overdue ~0.8 s after dispatch and housekeeping runs every 0.2 s."""
    from sessions_app.live import consumers, streaming

    settings.FER_FRAME_TASK_EXPIRES_S = 0.5
    monkeypatch.setattr(streaming, "LOST_GRACE_S", 0.3)
    monkeypatch.setattr(consumers, "FLUSH_INTERVAL_S", 0.2)


def _late_result(session, source, sequence):
    """What a worker does when it finally gets to a frame: record its analysis."""
    return frame_analysis_record(
        session_id=session.pk,
        source=source,
        sequence=sequence,
        captured_at_ms=session.created_at.timestamp() * 1000 + 500,
        width=96,
        height=72,
        processing_ms=5.0,
        faces=[],
    )


async def test_lost_frame_whose_result_comes_late_is_counted_once(teacher, make_session, idle_queue, fast_lost):
    """A frame declared lost is counted as dropped; its result arriving later is neither stored nor counted as
    processed nor sent to the client (before: counted twice, dropped and processed)."""
    s = await sync_to_async(make_session)(teacher)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    source = (await events(comm, 1))[0]["source"]
    await comm.send_to(bytes_data=with_header(0, jpeg()))
    ev = (await events(comm, 1, timeout=5))[0]
    assert (ev["type"], ev["sequence"], ev["reason"]) == ("dropped", 0, "lost")
    assert await sync_to_async(_late_result)(s, source, 0) is None
    assert await comm.receive_nothing(timeout=0.5)
    await comm.send_to(bytes_data=with_header(1, jpeg()))  # the stream goes on: the slot was freed
    ev = (await events(comm, 1, timeout=5))[0]
    assert (ev["type"], ev["sequence"], ev["reason"]) == ("dropped", 1, "lost")
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_processed, s.frames_dropped) == (2, 0, 2)
    assert not await sync_to_async(Frame.objects.filter(session=s).exists)()


async def test_counter_deltas_whose_write_waits_for_the_database_thread_survive_a_disconnect(teacher, make_session):
    """Housekeeping takes the counter deltas out of the stream's state, then stores them through the database
    thread. When that thread is busy, the write waits in its queue; a disconnect then cancels housekeeping, which
    used to cancel the queued write too, and the deltas already taken were lost (a CI run counted 1 of 2 dropped
    frames). The write must happen anyway (``disconnect`` then waits for writes in flight)."""
    from channels.db import database_sync_to_async

    from sessions_app.live.consumers import SessionStreamConsumer

    class Taken:  # the state's part in this: deltas handed over once
        def __init__(self):
            self.delta = {"received": 3, "dropped": 2, "rejected": 0}

        def take_counter_delta(self):
            delta, self.delta = self.delta, {"received": 0, "dropped": 0, "rejected": 0}
            return delta

    s = await sync_to_async(make_session)(teacher)
    consumer = SessionStreamConsumer()
    consumer.session, consumer.state, consumer._counter_writes = s, Taken(), set()
    busy = asyncio.ensure_future(database_sync_to_async(time.sleep)(0.5))  # another consumer's query
    await asyncio.sleep(0.05)
    housekeeping = asyncio.ensure_future(consumer._flush())
    await asyncio.sleep(0.05)  # the write is queued behind the busy thread
    housekeeping.cancel()  # the camera disconnected
    for _ in range(100):
        if housekeeping.done() and busy.done() and not consumer._counter_writes:
            break
        await asyncio.sleep(0.05)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_dropped) == (3, 2)


async def test_overdue_frame_already_answered_by_the_worker_is_not_declared_lost(
    teacher, make_session, idle_queue, fast_lost
):
    """The worker claimed the frame's outcome just before the stream's deadline, its result event still on the way:
    the stream frees the slot without counting a drop, and the result counts once, as processed."""
    s = await sync_to_async(make_session)(teacher)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    source = (await events(comm, 1))[0]["source"]
    await comm.send_to(bytes_data=with_header(0, jpeg()))
    claimed = await sync_to_async(frame_outcome_claim)(session=s, source=source, sequence=0, outcome="result")
    assert claimed
    assert await comm.receive_nothing(timeout=1.5)  # overdue by now, but no "lost"
    face = {"box": [1, 2, 30, 40], "label": "happy", "score": 0.9, "probabilities": {"happy": 0.9, "angry": 0.1}}
    face["probabilities"] |= {k: 0.0 for k in ("disgust", "fear", "sad", "surprise", "neutral")}
    await sync_to_async(frame_result_store)(
        session=s, source=source, sequence=0, captured_at=s.created_at, width=96, height=72, processing_ms=5.0,
        faces=[face],
    )  # fmt: skip
    ev = (await events(comm, 1))[0]
    assert (ev["type"], ev["sequence"]) == ("result", 0)
    assert ev["stream"] == {"sent": 1, "processed": 1, "dropped": 0, "rejected": 0}
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_processed, s.frames_dropped) == (1, 1, 0)


async def test_a_result_whose_event_the_channel_layer_lost_reaches_the_camera_from_the_database(
    teacher, make_session, idle_queue, fast_lost, monkeypatch, caplog
):
    """The worker stored the frame but its ``frame.result`` event never arrived (a Redis restart forgets groups):
    at the frame's deadline the stream finds it stored and sends the result from the database, counted once as
    processed, not as lost, and says so in the log."""
    from sessions_app.services import frames as frame_services

    s = await sync_to_async(make_session)(teacher)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    source = (await events(comm, 1))[0]["source"]
    await comm.send_to(bytes_data=with_header(0, jpeg()))
    assert await sync_to_async(frame_outcome_claim)(session=s, source=source, sequence=0, outcome="result")
    face = {"box": [1, 2, 30, 40], "label": "happy", "score": 0.9, "probabilities": {"happy": 0.9, "angry": 0.1}}
    face["probabilities"] |= {k: 0.0 for k in ("disgust", "fear", "sad", "surprise", "neutral")}
    monkeypatch.setattr(frame_services, "event_publish", lambda *_args: None)  # the event is lost on the way
    with caplog.at_level("WARNING", logger="sessions_app.live.consumers"):
        await sync_to_async(frame_result_store)(
            session=s, source=source, sequence=0, captured_at=s.created_at, width=96, height=72, processing_ms=5.0,
            faces=[face],
        )  # fmt: skip
        ev = (await events(comm, 1, timeout=5))[0]
    assert (ev["type"], ev["sequence"], ev["faces"][0]["label"]) == ("result", 0, "happy")
    assert ev["stream"] == {"sent": 1, "processed": 1, "dropped": 0, "rejected": 0}
    assert any("never arrived through the channel layer" in r.getMessage() for r in caplog.records)
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_processed, s.frames_dropped) == (1, 1, 0)


async def test_a_result_whose_event_the_channel_layer_lost_reaches_the_camera_within_seconds_and_only_once(
    teacher, make_session, idle_queue, settings, monkeypatch, caplog
):
    """The worker stored the frame but its event was lost (channels_redis can lose a consumer's message while many
    consumers of its process leave at once): the stream looks the frame up ``RESULT_LOOKUP_S`` after dispatch, long
    before the deadline, and sends the result from the database; the event arriving after all is not sent again
    and not counted twice."""
    from sessions_app.live import consumers, streaming
    from sessions_app.services import frames as frame_services

    settings.FER_FRAME_TASK_EXPIRES_S = 30.0  # the deadline (40 s) is far away
    monkeypatch.setattr(streaming, "RESULT_LOOKUP_S", 0.6)
    monkeypatch.setattr(consumers, "FLUSH_INTERVAL_S", 0.2)
    s = await sync_to_async(make_session)(teacher)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    source = (await events(comm, 1))[0]["source"]
    await comm.send_to(bytes_data=with_header(0, jpeg()))
    sent_at = time.monotonic()
    lost = []
    real_publish = frame_services.event_publish
    monkeypatch.setattr(frame_services, "event_publish", lambda *args: lost.append(args))
    face = {"box": [1, 2, 30, 40], "label": "happy", "score": 0.9, "probabilities": {"happy": 0.9, "angry": 0.1}}
    face["probabilities"] |= {k: 0.0 for k in ("disgust", "fear", "sad", "surprise", "neutral")}
    with caplog.at_level("WARNING", logger="sessions_app.live.consumers"):
        assert await sync_to_async(frame_outcome_claim)(session=s, source=source, sequence=0, outcome="result")
        await sync_to_async(frame_result_store)(
            session=s, source=source, sequence=0, captured_at=s.created_at, width=96, height=72, processing_ms=5.0,
            faces=[face],
        )  # fmt: skip
        ev = (await events(comm, 1, timeout=5))[0]
    waited = time.monotonic() - sent_at
    assert (ev["type"], ev["sequence"], ev["faces"][0]["label"]) == ("result", 0, "happy")
    assert ev["stream"] == {"sent": 1, "processed": 1, "dropped": 0, "rejected": 0}
    assert 0.6 <= waited < 5.0  # looked up after RESULT_LOOKUP_S, not at the 40-s deadline
    assert any("had not arrived through the channel layer" in r.getMessage() for r in caplog.records)
    assert len(lost) == 1
    await sync_to_async(real_publish)(*lost[0])  # the event comes after all
    assert await comm.receive_nothing(timeout=1.0)
    await comm.send_to(bytes_data=with_header(1, jpeg()))  # the slot was freed once: the stream goes on
    assert await comm.receive_nothing(timeout=0.3)
    await comm.disconnect()
    await asyncio.sleep(0.2)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_processed, s.frames_dropped) == (2, 1, 0)
    assert idle_queue() == 2  # both frames went to the (unconsumed) queue


async def test_under_overload_frames_wait_at_the_edge_instead_of_queueing(teacher, make_session, idle_queue, settings):
    """One analysis slot for the whole system and no worker: the first camera's frame is queued; the second
    camera's frames are not (the broker queue stays at 1), they wait in that stream's pending slot, latest frame
    wins, and the last waiting one is dropped as stale once too old; every frame is answered."""
    settings.FER_ANALYSIS_SLOTS = 1
    settings.FER_FRAME_TASK_EXPIRES_S = 1.0
    sessions = [await sync_to_async(make_session)(teacher, target_fps=2.0) for _ in range(2)]
    cams = []
    for s in sessions:
        comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
        await events(comm, 1)
        cams.append(comm)
    frame = jpeg()
    await cams[0].send_to(bytes_data=with_header(0, frame))
    await asyncio.sleep(0.3)
    for seq in range(3):
        await cams[1].send_to(bytes_data=with_header(seq, frame))
        await asyncio.sleep(0.05)
    answers = await events(cams[1], 3, timeout=8)  # 2 replaced while waiting, then the last one goes stale
    assert sorted((ev["sequence"], ev["reason"]) for ev in answers) == [(0, "replaced"), (1, "replaced"), (2, "stale")]
    assert await sync_to_async(idle_queue)() == 1  # only camera 1's admitted frame reached the broker
    for comm in cams:
        await comm.disconnect()


async def test_an_end_whose_event_was_lost_still_reaches_every_socket(teacher, make_session, idle_queue, monkeypatch):
    """An ``ended`` event published while Redis was down is lost; sockets learn of the end from the database at
    their next status check (``STATUS_CHECK_S``) and close, the camera stream and the viewer alike."""
    from sessions_app.live import consumers

    monkeypatch.setattr(consumers, "FLUSH_INTERVAL_S", 0.2)
    monkeypatch.setattr(consumers, "STATUS_CHECK_S", 0.5)
    s = await sync_to_async(make_session)(teacher)
    sessionid = await sync_to_async(cookie)(teacher)
    stream = await open_ws(f"/ws/sessions/{s.pk}/stream/", sessionid)
    viewer = await open_ws(f"/ws/sessions/{s.pk}/watch/", sessionid)
    await events(stream, 1)
    await events(viewer, 1)
    # ended in the database only: no event published (as if the channel layer had been down)
    await sync_to_async(EmotionSession.objects.filter(pk=s.pk).update)(status=EmotionSession.Status.ENDED)
    for comm in (stream, viewer):
        (ended,) = await events(comm, 1, timeout=5)
        assert ended == {"type": "ended", "session_id": s.pk}
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1000}


async def test_a_busy_database_thread_does_not_hold_up_a_cameras_messages(teacher, make_session, idle_queue):
    """Channels' dispatch hopped into the one shared sync thread (``close_old_connections``) for every message: while
    any consumer's database call ran there, every camera waited. The thread is kept busy here until the camera's
    reply has arrived."""
    import threading

    s = await sync_to_async(make_session)(teacher)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    assert (await events(comm, 1))[0]["type"] == "ready"
    release = threading.Event()
    busy = asyncio.ensure_future(sync_to_async(release.wait)(30))  # thread-sensitive: the shared sync thread
    try:
        await comm.send_to(text_data="a text frame")
        assert (await events(comm, 1))[0]["code"] == "binary_expected"
        assert not busy.done()
    finally:
        release.set()
        await busy
    await comm.disconnect()
