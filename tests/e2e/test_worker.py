"""The whole frame path with a real Celery worker subprocess: consumer -> broker -> worker (real model) -> PostgreSQL
-> channel layer -> consumer. Also stale-task expiry, undecodable frames and photo/video uploads."""

from __future__ import annotations

import asyncio
import json
import time

import cv2
import numpy as np
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from inference.imageio import FRAME_HEADER
from sessions_app.models import EmotionSession, Face, Frame
from sessions_app.services.frames import frame_analyze_enqueue
from tests.helpers import cookie, events, listen, next_event, open_ws

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_async_thread_db_connections"),
]


async def test_real_photos_streamed_through_the_worker_get_their_faces_counted(
    teacher, make_session, photos, celery_worker
):
    s = await sync_to_async(make_session)(teacher, target_fps=2.0)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    source = (await events(comm, 1))[0]["source"]
    group = {p: n for p, n in photos.items() if n > 1}
    results = {}
    for seq, (path, _) in enumerate(sorted(group.items())):
        await comm.send_to(bytes_data=FRAME_HEADER.pack(b"FRM1", seq, time.time() * 1000) + path.read_bytes())
        ev = (await events(comm, 1, timeout=60))[0]
        assert ev["type"] == "result" and ev["source"] == source and ev["sequence"] == seq, ev
        results[path] = ev
        await asyncio.sleep(0.5)  # the session's 2 fps
    await comm.disconnect()
    for path, ev in results.items():
        assert abs(ev["face_count"] - group[path]) <= 1, (path.name, ev["face_count"], group[path])
        assert len(ev["faces"]) == ev["face_count"]
        for f in ev["faces"]:
            x, y, w, h = f["box"]
            assert 0 <= x < ev["width"] and 0 <= y < ev["height"] and w > 10 and h > 10
    stored = await sync_to_async(lambda: list(Frame.objects.filter(session=s).order_by("sequence")))()
    assert [f.face_count for f in stored] == [ev["face_count"] for ev in results.values()]
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_processed, s.frames_dropped) == (len(group), len(group), 0)
    faces = await sync_to_async(Face.objects.filter(session=s).count)()
    assert faces == sum(ev["face_count"] for ev in results.values())


async def test_flood_through_worker_accounts_for_every_frame(teacher, make_session, group_photo, celery_worker):
    """30 frames sent 10x faster than the session rate: each gets exactly one answer (result or dropped)."""
    path, _ = group_photo
    s = await sync_to_async(make_session)(teacher, target_fps=2.0)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    await events(comm, 1)
    data = path.read_bytes()
    n = 30
    answers: dict[int, str] = {}

    async def read():
        while len(answers) < n:
            ev = json.loads(await comm.receive_from(timeout=60))
            assert ev["sequence"] not in answers, ev
            answers[ev["sequence"]] = ev["type"]

    reader = asyncio.create_task(read())
    for seq in range(n):
        await comm.send_to(bytes_data=FRAME_HEADER.pack(b"FRM1", seq, time.time() * 1000) + data)
        await asyncio.sleep(0.05)
    await asyncio.wait_for(reader, 90)
    await comm.disconnect()
    processed = [k for k, v in answers.items() if v == "result"]
    assert sorted(answers) == list(range(n)) and set(answers.values()) == {"result", "dropped"}
    assert 2 <= len(processed) < n
    await asyncio.sleep(0.3)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert s.frames_received == n and s.frames_processed == len(processed)
    assert s.frames_dropped == n - len(processed)
    assert await sync_to_async(Frame.objects.filter(session=s).count)() == len(processed)


async def test_skewed_client_clock_is_served_normally_through_the_worker(
    teacher, make_session, group_photo, celery_worker
):
    """A browser whose clock is 40 s behind: its frames are analysed (not dropped as stale) and stored at the right
    place of the session's timeline (offset on the server's clock), one client-clock second apart."""
    path, count = group_photo
    s = await sync_to_async(make_session)(teacher, target_fps=2.0)
    await asyncio.sleep(1.5)
    comm = await open_ws(f"/ws/sessions/{s.pk}/stream/", await sync_to_async(cookie)(teacher))
    await events(comm, 1)
    results = []
    t0 = time.time()
    for seq in range(2):
        await asyncio.sleep(max(0.0, t0 + seq - time.time()))
        client_ms = (t0 - 40.0 + seq) * 1000  # captured one second apart by the client's (late) clock
        await comm.send_to(bytes_data=FRAME_HEADER.pack(b"FRM1", seq, client_ms) + path.read_bytes())
        ev = (await events(comm, 1, timeout=60))[0]
        assert ev["type"] == "result" and ev["sequence"] == seq, ev
        results.append(ev)
    await comm.disconnect()
    elapsed = (time.time() * 1000 - results[0]["captured_at_ms"]) / 1000
    assert 0 <= elapsed < 30  # on the server's clock, not 40 s in the past
    assert 1.4 < results[0]["offset_s"] < 15, results[0]["offset_s"]  # was clamped to 0 (or dropped as stale)
    assert results[1]["offset_s"] - results[0]["offset_s"] == pytest.approx(1.0, abs=0.3)
    assert abs(results[0]["face_count"] - count) <= 1
    await asyncio.sleep(0.3)
    s = await sync_to_async(EmotionSession.objects.get)(pk=s.pk)
    assert (s.frames_received, s.frames_processed, s.frames_dropped) == (2, 2, 0)


def test_stale_task_expires_and_bad_bytes_do_not_kill_the_worker(teacher, make_session, group_photo, celery_worker):
    path, count = group_photo
    s = make_session(teacher)
    layer, channel = listen(s.pk)
    now_ms = time.time() * 1000
    frame_analyze_enqueue(
        session_id=s.pk, source="camera:x", sequence=1, captured_at_ms=now_ms, data=path.read_bytes(), expires_s=0.001
    )
    time.sleep(0.05)
    ev = next_event(layer, channel, timeout=60)
    assert (ev["type"], ev["sequence"], ev["reason"]) == ("frame.dropped", 1, "expired")
    frame_analyze_enqueue(
        session_id=s.pk, source="camera:x", sequence=2, captured_at_ms=now_ms, data=b"\xff\xd8\xffjunk", expires_s=30
    )
    ev = next_event(layer, channel, timeout=60)
    assert (ev["type"], ev["sequence"], ev["code"]) == ("frame.error", 2, "undecodable")
    frame_analyze_enqueue(
        session_id=s.pk, source="camera:x", sequence=3, captured_at_ms=now_ms, data=path.read_bytes(), expires_s=30
    )
    ev = next_event(layer, channel, timeout=60)
    assert ev["type"] == "frame.result" and ev["sequence"] == 3 and abs(ev["face_count"] - count) <= 1
    assert celery_worker["proc"].poll() is None
    s.refresh_from_db()
    assert (s.frames_dropped, s.frames_rejected, s.frames_processed) == (1, 1, 1)
    assert list(Frame.objects.filter(session=s).values_list("sequence", flat=True)) == [3]


def _video_bytes(photo, tmp_path, seconds=3, fps=10) -> bytes:
    image = cv2.resize(cv2.imread(str(photo)), (640, 480))
    out = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for _ in range(seconds * fps):
        writer.write(image)
    writer.release()
    return out.read_bytes()


def test_photo_and_video_uploads_land_in_the_timeline(teacher, make_session, photos, celery_worker, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    s = make_session(teacher, target_fps=2.0)
    portrait = next(p for p, n in photos.items() if n == 1 and "obama" in p.name)  # 910x1137: gets downscaled
    group = next(p for p, n in photos.items() if n == 3)
    client = Client()
    client.force_login(teacher)
    layer, channel = listen(s.pk)
    resp = client.post(
        f"/sessions/{s.pk}/upload/",
        {"file": SimpleUploadedFile("p.jpg", portrait.read_bytes(), "image/jpeg")},
    )
    assert resp.status_code == 302
    video = _video_bytes(group, tmp_path)
    resp = client.post(f"/sessions/{s.pk}/upload/", {"file": SimpleUploadedFile("clip.avi", video, "video/x-msvideo")})
    assert resp.status_code == 302
    resp = client.post(f"/sessions/{s.pk}/upload/", {"file": SimpleUploadedFile("x.txt", b"hello " * 50, "text/plain")})
    assert resp.status_code == 400 and b"not a JPEG/PNG photo or a readable video" in resp.content
    got = [next_event(layer, channel, timeout=60) for _ in range(1 + 6)]
    assert all(ev["type"] == "frame.result" for ev in got)
    by_source = {}
    for ev in got:
        by_source.setdefault(ev["source"], []).append(ev)
    assert sorted(by_source) == ["upload:1", "upload:2"]
    (photo_ev,) = by_source["upload:1"]
    assert photo_ev["face_count"] == 1 and photo_ev["height"] <= 1080
    assert len(by_source["upload:2"]) == 6  # 3 s of video sampled at 2 fps
    assert all(abs(ev["face_count"] - 3) <= 1 for ev in by_source["upload:2"])
    offsets = sorted(ev["offset_s"] for ev in by_source["upload:2"])
    assert offsets[-1] - offsets[0] == pytest.approx(2.5, abs=0.2)
    s.refresh_from_db()
    assert s.frames_processed == 7 and s.frames_received == 7 and s.uploads_count == 2
    timeline = client.get(f"/sessions/{s.pk}/timeline.json?bucket=1").json()["timeline"]
    assert sum(b["frames"] for b in timeline) == 7
    assert np.isclose(sum(timeline[-1]["probabilities"].values()), 1.0, atol=1e-3)
    # once its last frame is stored, the video's faces are linked into tracks (one per man, in all 6 frames);
    # the photo's face stays untracked
    deadline = time.monotonic() + 20
    while not Face.objects.filter(session=s, frame__source="upload:2", track__isnull=False).exists():
        assert time.monotonic() < deadline, "the video's tracks were not assigned"
        time.sleep(0.2)
    video_faces = Face.objects.filter(session=s, frame__source="upload:2")
    tracks = {t: video_faces.filter(track=t).count() for t in video_faces.values_list("track", flat=True)}
    assert None not in tracks and len(tracks) <= 4 and sorted(tracks.values())[-3:] >= [5, 5, 5], tracks
    assert all(f.smoothed_probabilities is not None for f in video_faces)
    assert Face.objects.get(session=s, frame__source="upload:1").track is None
