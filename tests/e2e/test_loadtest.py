"""``manage.py loadtest`` against the real stack: daphne and a Celery worker subprocess (``tests/conftest.py``) on the
test database, real Redis, a real group photo as the camera frames."""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import call_command

from sessions_app.models import EmotionSession

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KEYS = {
    "clients", "fps", "seconds", "frames_sent", "frames_processed", "frames_dropped", "faces_detected", "errors",
    "frame_errors", "unanswered", "latency_ms", "memory_mb", "wall_s", "session_ids",
}  # fmt: skip


def test_loadtest_two_clients_stream_a_group_photo(daphne_server, celery_worker, group_photo):
    path, hand_count = group_photo
    out = io.StringIO()
    call_command(
        "loadtest",
        "--url", daphne_server, "--clients", "2", "--fps", "2", "--seconds", "4", "--images", str(path), "--json",
        stdout=out,
    )  # fmt: skip
    result = json.loads(out.getvalue())
    assert KEYS <= set(result), KEYS - set(result)
    assert set(result["latency_ms"]) == {"p50", "p95", "max"}
    assert set(result["memory_mb"]) == {"web_peak", "workers_peak"}
    assert result["clients"] == 2 and result["errors"] == 0, result.get("error_messages")
    sent, processed, dropped = result["frames_sent"], result["frames_processed"], result["frames_dropped"]
    assert 14 <= sent <= 18  # 2 clients x 2 fps x 4 s
    # every frame accounted for, exactly once
    assert sent == processed + dropped + result["frame_errors"] + result["unanswered"]
    assert result["unanswered"] == 0 and result["frame_errors"] == 0
    assert processed >= sent // 2  # 4 frames/s of a 500x334 photo: a single worker keeps up (mostly)
    assert result["faces_detected"] > 0
    assert abs(result["faces_detected"] / processed - hand_count) <= 1
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert result["memory_mb"]["web_peak"] and result["memory_mb"]["workers_peak"]  # the local processes were found
    # the server's stored counters tell the same story (the streams store their last counts when they close)
    deadline = time.monotonic() + 10
    while True:
        sessions = list(EmotionSession.objects.filter(pk__in=result["session_ids"]))
        if sum(s.frames_received for s in sessions) == sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(sessions) == 2 and all(s.status == "ended" and s.kind == "crowd" for s in sessions)
    assert sum(s.frames_received for s in sessions) == sent
    assert sum(s.frames_processed for s in sessions) == processed
    assert sum(s.frames_dropped for s in sessions) == dropped
    assert sum(s.frames.count() for s in sessions) == processed
