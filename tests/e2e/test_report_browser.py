"""Browser end to end for reports (issue #4): headless Chromium logs in, opens a session report served by a live
server, sees the session's numbers and chart, downloads the PDF, and opens the Swagger UI - all without a single
request leaving the server (no CDN)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sessions_app.models import ExportRecord
from tests.helpers import PASSWORD, session_with_frames

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("isolated_cache_and_fast_passwords"),
]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(live_server, monkeypatch):
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        subprocess.run(["scripts/ensure_chromium.sh"], check=False, timeout=600)
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run scripts/ensure_chromium.sh")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM checks below run beside Playwright's loop
    server_host = urlsplit(live_server.url).netloc
    foreign: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on(
                "request",
                lambda r: (
                    foreign.append(r.url)
                    if urlsplit(r.url).scheme in ("http", "https") and urlsplit(r.url).netloc != server_host
                    else None
                ),
            )
            yield page
        finally:
            browser.close()
    assert foreign == [], f"requests left the server: {foreign}"


def _login(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_teacher_reads_the_report_and_downloads_the_pdf_in_chromium(live_server, browser_page, teacher_a, teacher_b):
    from playwright.sync_api import expect

    session = session_with_frames(teacher_a)
    page, base = browser_page, live_server.url
    _login(page, base, "teacher_a")

    page.goto(f"{base}/reports/")
    page.click("text=Fixture class")
    expect(page.locator("h1")).to_have_text("Report: Fixture class")
    assert page.url == f"{base}/reports/sessions/{session.pk}/"
    expect(page.get_by_test_id("duration")).to_have_text("25 s")
    expect(page.get_by_test_id("frames-processed")).to_have_text("9")
    expect(page.get_by_test_id("frames-dropped")).to_have_text("2")
    expect(page.get_by_test_id("mean-faces")).to_have_text("2.67")
    expect(page.get_by_test_id("max-faces")).to_have_text("4")
    expect(page.get_by_test_id("p-neutral")).to_have_text("40.8%")
    expect(page.get_by_test_id("p-happy")).to_have_text("29.2%")
    expect(page.locator(".summary-sentence").first).to_have_text('The classroom session "Fixture class" lasted 25 s.')
    # the chart is drawn: 25 s at 1-second buckets -> 9 columns with frames, stacked rects with real size
    chart = page.locator("svg.timeline-chart")
    expect(chart).to_be_visible()
    assert chart.locator("g").count() == 9
    box = chart.bounding_box()
    assert box["width"] > 600 and box["height"] > 150
    # stylesheet from our static files applied
    assert page.evaluate("getComputedStyle(document.querySelector('.timeline-chart')).borderTopStyle") == "solid"

    with page.expect_download() as download_info:
        page.click("a.button:has-text('PDF')")
    download = download_info.value
    assert download.suggested_filename == f"report-{session.pk}-fixture-class.pdf"
    assert Path(download.path()).read_bytes().startswith(b"%PDF-")
    assert ExportRecord.objects.filter(session=session, format="pdf", user=teacher_a).count() == 1

    # another teacher gets a 404 for the same URL
    page.context.clear_cookies()
    _login(page, base, "teacher_b")
    response = page.goto(f"{base}/reports/sessions/{session.pk}/")
    assert response.status == 404
    assert "Fixture class" not in page.content()


def test_swagger_ui_renders_offline(live_server, browser_page, teacher_a):
    from playwright.sync_api import expect

    page, base = browser_page, live_server.url
    _login(page, base, "teacher_a")
    page.goto(f"{base}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("FER platform API")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/sessions/{session_id}/export/")).to_be_visible()
