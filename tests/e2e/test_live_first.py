"""Live frames are served before uploads: with a backlog of upload frames queued, camera frames queued after them
are analysed next, all of them, not taking turns with uploads (a real Celery worker, real broker queues polled in
sorted order)."""

from __future__ import annotations

import time

import cv2
import pytest

from sessions_app.models import Frame
from sessions_app.services.frames import frame_analyze_enqueue

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_live_frames_overtake_a_backlog_of_upload_frames(teacher, make_session, group_photo, celery_worker):
    path, _ = group_photo
    data = path.read_bytes()
    s = make_session(teacher, target_fps=2.0)
    now_ms = time.time() * 1000
    for seq in range(30):
        frame_analyze_enqueue(
            session_id=s.pk, source="upload:1", sequence=seq, captured_at_ms=now_ms, data=data, expires_s=None,
            live=False,
        )  # fmt: skip
    small = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(path)), (160, 107)))[1].tobytes()  # quick to queue
    for seq in range(5):
        frame_analyze_enqueue(
            session_id=s.pk, source="camera:live", sequence=seq, captured_at_ms=now_ms, data=small, expires_s=60
        )
    deadline = time.monotonic() + 120
    while Frame.objects.filter(session=s).count() < 35 and time.monotonic() < deadline:
        time.sleep(0.2)
    order = list(Frame.objects.filter(session=s).order_by("id").values_list("source", flat=True))
    assert len(order) == 35
    live = [i for i, source in enumerate(order) if source == "camera:live"]
    # Before the first live frame only the uploads analysed while the live ones were being queued; between them at
    # most one upload (a poll that came while the next live frame was still on its way). Round-robin polling would
    # interleave them with uploads (positions 4, 6, 8, 10, 12 measured).
    assert live[0] <= 4 and live[-1] - live[0] <= 5, (live, order[:12])
