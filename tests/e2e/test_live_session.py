"""Browser end to end: headless Chromium with a fake camera showing a real group photo, against real daphne, a real
Celery worker, PostgreSQL and Redis. Log in, create a session, start the camera, see face boxes and labels; a second
tab of the owner and an admin (no camera) see the live results too; stop, end, open the dashboard and see the
timeline; the stored face counts match the photo's hand count."""

from __future__ import annotations

import re
import statistics

import pytest

from inference.labels import LABELS
from sessions_app.models import EmotionSession, Frame
from tests.helpers import CHROMIUM

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_teacher_streams_camera_and_sees_the_dashboard(
    django_user_model, daphne_server, celery_worker, chromium_args, group_photo, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM checks below run beside Playwright's loop
    _, hand_count = group_photo
    django_user_model.objects.create_user(username="e2e-teacher", password="e2e-password-1")
    django_user_model.objects.create_user(username="e2e-admin", password="e2e-password-2", is_staff=True)
    base = daphne_server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/accounts/login/")
            page.fill("#id_username", "e2e-teacher")
            page.fill("#id_password", "e2e-password-1")
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Sessions")

            page.fill("#id_name", "E2E class 7A")
            page.select_option("#id_kind", "classroom")
            page.fill("#id_target_fps", "2")
            page.check("#id_lawful_use_confirmed")  # issue 12: the operator confirms the use is lawful
            page.click("#create-form button[type=submit]")
            page.wait_for_url("**/sessions/*/live/")
            session_id = int(page.url.rstrip("/").split("/")[-2])

            page.click("#start-camera")
            boxes = page.locator("#overlay .face-box")
            expect(boxes.first).to_be_visible(timeout=45_000)  # within seconds of starting the camera
            expect(page.locator("#conn-status")).to_have_text("streaming")
            labels = page.locator("#overlay .face-label").all_inner_texts()
            assert labels and set(labels) <= set(LABELS)
            assert abs(int(page.locator("#face-count").inner_text()) - hand_count) <= 2
            page.wait_for_function(
                "Number(document.getElementById('frames-processed').textContent) >= 6", timeout=60_000
            )
            expect(page.locator("#distribution .bar-row")).to_have_count(len(LABELS))

            # second viewers without a camera: the owner's other tab and an admin see the live results
            admin_context = browser.new_context()
            admin_page = admin_context.new_page()
            admin_page.goto(f"{base}/accounts/login/")
            admin_page.fill("#id_username", "e2e-admin")
            admin_page.fill("#id_password", "e2e-password-2")
            admin_page.click("button[type=submit]")
            expect(admin_page.locator("h1")).to_have_text("Sessions")
            for viewer in (context.new_page(), admin_page):  # the owner's second tab shares the login
                viewer.set_default_timeout(30_000)
                viewer.goto(f"{base}/sessions/{session_id}/live/")
                expect(viewer.locator("#conn-status")).to_have_text("watching")
                viewer.wait_for_function("Number(document.getElementById('face-count').dataset.faceCount) > 0")
                assert abs(int(viewer.locator("#face-count").inner_text()) - hand_count) <= 2
                assert set(viewer.locator("#faces li").all_inner_texts()) and not viewer.locator(".face-box").count()
                viewer.close()
            admin_context.close()
            page.wait_for_function(
                "Number(document.getElementById('timeline-chart').dataset.points || 0) >= 1", timeout=20_000
            )

            page.click("#stop-camera")
            expect(page.locator("#conn-status")).to_have_text(re.compile(r"^stopped"))
            page.click("#end-session")
            page.click("#end-confirm")  # issue 12: ending asks for confirmation
            page.wait_for_url(f"**/sessions/{session_id}/")
            expect(page.locator("#report-link")).to_have_attribute("href", f"/reports/sessions/{session_id}/")
            page.wait_for_function("Number(document.getElementById('timeline-chart').dataset.points) >= 1")
            assert int(page.locator("#frame-count").inner_text()) >= 6
            dominant = page.locator("#timeline-table td.dominant").all_inner_texts()
            assert dominant and set(dominant) <= set(LABELS) | {"–"}
        finally:
            browser.close()

    session = EmotionSession.objects.get(pk=session_id)
    assert session.status == "ended" and session.frames_processed >= 6
    counts = list(Frame.objects.filter(session=session).values_list("face_count", flat=True))
    assert len(counts) == session.frames_processed
    assert abs(statistics.median(counts) - hand_count) <= 1, counts
    assert all(abs(c - hand_count) <= 2 for c in counts), counts
    assert session.frames_received >= len(counts)
