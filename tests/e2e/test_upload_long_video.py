"""Browser end to end (issue 12): a teacher uploads a 15-minute video (real photos: smiling faces for the first half,
calm faces for the second) into a running session. With a frame cap far below the video's length at the session
rate, the frames are spread over the whole video, on the video's own timeline; the dashboard says how it was sampled,
shows the analysis progress, and reloads itself with the results when the real Celery worker has finished; an ended
session refuses uploads with a clear message.

The page is served by the in-process live server, so the test can lower ``FER_MAX_UPLOAD_FRAMES``; the frames are
analysed by the real worker subprocess.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import pytest

from sessions_app.models import EmotionSession, Frame
from tests.conftest import FACES_DIR
from tests.e2e.test_live_mood_and_alerts import NEUTRAL, SMILING, _canvas, _shot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIDEO_S = 900  # 15 minutes
CONTAINER_FPS = 0.5


def _long_video(path: Path) -> Path:
    """A 15-minute MJPG AVI at 0.5 fps (450 frames): the smiling group for 7.5 min, then the calm group."""
    smiling, neutral = _canvas(FACES_DIR / SMILING), _canvas(FACES_DIR / NEUTRAL)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), CONTAINER_FPS, (640, 480))
    n = int(VIDEO_S * CONTAINER_FPS)
    for i in range(n):
        writer.write(smiling if i < n // 2 else neutral)
    writer.release()
    return path


def test_a_long_video_is_sampled_over_its_whole_length_with_progress(
    live_server, celery_worker, django_user_model, settings, tmp_path, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    from sessions_app.services.sessions import session_create, session_end

    if not (FACES_DIR / SMILING).exists():
        pytest.skip(f"face photos not found under {FACES_DIR}")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.FER_MAX_UPLOAD_FRAMES = 40  # 15 min at 2 fps would be 1801 frames
    teacher = django_user_model.objects.create_user(username="video-teacher", password="video-password-1")
    session = session_create(owner=teacher, name="Recorded lesson", target_fps=2)
    ended = session_create(owner=teacher, name="Yesterday")
    session_end(session=ended)
    video = _long_video(tmp_path / "lesson.avi")
    if not CHROMIUM.exists():
        subprocess.run(["scripts/ensure_chromium.sh"], check=False, timeout=600)
    base = live_server.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/accounts/login/")
            page.fill("#id_username", "video-teacher")
            page.fill("#id_password", "video-password-1")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")

            response = page.goto(f"{base}/sessions/{ended.pk}/upload/")
            assert response.status == 409
            expect(page.locator("#upload-ended")).to_contain_text("This session has ended")

            page.goto(f"{base}/sessions/{session.pk}/upload/")
            page.set_input_files("input[type=file]", str(video))
            page.click("#upload-submit")
            page.wait_for_url(lambda url: "upload=upload" in url, timeout=120_000)
            expect(page.locator("#upload-progress")).to_be_visible()
            expect(page.locator("#upload-sampling")).to_contain_text("evenly over its whole length")
            expect(page.locator("#upload-sampling")).to_contain_text("15 min")
            _shot(page, "upload-progress-phone")
            # the page reloads itself without the upload parameters once the worker has stored every frame
            page.wait_for_url(f"{base}/sessions/{session.pk}/", timeout=240_000)
            expect(page.locator("#frame-count")).to_have_text("40")
            page.goto(f"{base}/reports/sessions/{session.pk}/")
            expect(page.get_by_test_id("frames-processed")).to_have_text("40")
        finally:
            browser.close()

    offsets = sorted(Frame.objects.filter(session=session).values_list("offset_s", flat=True))
    assert len(offsets) == 40
    # the video's own timeline: the first frame at 0 s of the session, the last near the video's end
    assert offsets[0] == pytest.approx(0.0, abs=1.0)
    assert offsets[-1] >= VIDEO_S - 30
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert max(gaps) <= 30  # evenly spread (900 s / 40 = 22.5 s), not the first 20 s at 2 fps
    early = Frame.objects.filter(session=session, offset_s__lt=VIDEO_S / 2 - 30).values_list("faces__label", flat=True)
    late = Frame.objects.filter(session=session, offset_s__gt=VIDEO_S / 2 + 30).values_list("faces__label", flat=True)
    assert max(set(early), key=list(early).count) == "happy"
    assert max(set(late), key=list(late).count) == "neutral"
    assert EmotionSession.objects.get(pk=session.pk).frames_processed == 40
