"""Report pages: permission matrix, numbers on the page and in the PDF (WeasyPrint), overview sort/filter."""

import datetime as dt
import io
import re

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from pypdf import PdfReader

from sessions_app.models import EmotionSession, ExportRecord
from sessions_app.reports import computations
from tests.helpers import session_with_frames

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]

#: role -> expected status for teacher A's session pages (anonymous users are sent to the login page)
MATRIX = {"anonymous": 302, "teacher_a": 200, "teacher_b": 404, "admin": 200}


@pytest.mark.parametrize("page", ["", "pdf/"])
@pytest.mark.parametrize("role", list(MATRIX))
def test_report_pages_follow_the_permission_matrix(clients, fixture_session, role, page):
    response = clients[role].get(f"/reports/sessions/{fixture_session.pk}/{page}")
    assert response.status_code == MATRIX[role]
    if role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")
    if MATRIX[role] != 200:
        assert b"Fixture class" not in response.content
        missing = clients[role].get(f"/reports/sessions/{fixture_session.pk + 10_000}/{page}")
        assert missing.status_code == response.status_code


def test_overview_lists_only_the_sessions_a_user_may_see(clients, fixture_session, teacher_b):
    other = session_with_frames(teacher_b, name="B's lesson", frames=[])
    assert clients["anonymous"].get("/reports/").status_code == 302
    pages = {role: clients[role].get("/reports/").content.decode() for role in ("teacher_a", "teacher_b", "admin")}
    assert "Fixture class" in pages["teacher_a"] and "B&#x27;s lesson" not in pages["teacher_a"]
    assert "Fixture class" not in pages["teacher_b"] and "B&#x27;s lesson" in pages["teacher_b"]
    assert "Fixture class" in pages["admin"] and "B&#x27;s lesson" in pages["admin"]
    assert f'href="/reports/sessions/{other.pk}/"' in pages["admin"]


def test_report_page_shows_the_numbers(clients, fixture_session):
    response = clients["teacher_a"].get(f"/reports/sessions/{fixture_session.pk}/", {"bucket": 5})
    assert response.status_code == 200
    html = response.content.decode()
    for text in [
        'data-testid="duration">25 s<',
        'data-testid="frames-processed">9<',
        'data-testid="frames-dropped">2<',
        'data-testid="mean-faces">2.67<',
        'data-testid="max-faces">4<',
        'data-testid="faces">24<',
        'data-testid="p-neutral">40.8%<',  # 9.8 / 24
        'data-testid="p-happy">29.2%<',  # 7.0 / 24
        'data-testid="p-sad">17.5%<',  # 4.2 / 24
        # 0.8 * 0.6/24 (angry) + 0.8 * 0.6/24 (fear) + 0.2 * 7/24 (happy) - 0.4 * 4.2/24 (sad) + 0.9 * 1.8/24 (surprise)
        'data-testid="arousal">+0.10<',
        'data-testid="attention">–<',  # the fixture's faces have no head pose
        "9 frames were analysed and 2 were dropped (18% of the frames).",
        "The largest change came at 20 s, when surprise rose by 60 percentage points and sad fell by 58.",
        "<td>surprise +60.0%</td>",
        "<td>sad −58.3%</td>",
        f'href="/api/v1/sessions/{fixture_session.pk}/export/?format=csv"',
        f'href="/reports/sessions/{fixture_session.pk}/pdf/?bucket=5"',
    ]:
        assert text in html, text
    # 5 timeline columns, one of them grey (2 faces only)
    assert html.count("<g><title>") == 5
    assert "10-15 s: fewer than the minimum faces" in html
    assert "15-20 s: angry 8%, disgust 0%, fear 0%, happy 2%, sad 58%, surprise 0%, neutral 32%" in html


def test_pdf_link_keeps_the_chosen_bucket(clients, fixture_session):
    page = f"/reports/sessions/{fixture_session.pk}/"
    pdf = f"/reports/sessions/{fixture_session.pk}/pdf/"
    html = clients["teacher_a"].get(page, {"bucket": 10}).content.decode()
    assert f'href="{pdf}?bucket=10"' in html
    assert f'href="{pdf}"' in clients["teacher_a"].get(page).content.decode()  # automatic bucket: no parameter


#: The whole site mounted under /mounted/ (as behind a path-prefix proxy without SCRIPT_NAME): links must follow.
urlpatterns = [path("mounted/", include("fer_platform.urls"))]


@override_settings(ROOT_URLCONF=__name__)
def test_report_links_are_reversed_not_hard_coded(clients, fixture_session):
    html = clients["teacher_a"].get(f"/mounted/reports/sessions/{fixture_session.pk}/").content.decode()
    assert f'href="/mounted/sessions/{fixture_session.pk}/"' in html  # the dashboard
    assert f'href="/mounted/reports/sessions/{fixture_session.pk}/pdf/"' in html
    assert f'href="/sessions/{fixture_session.pk}/"' not in html


def test_chart_of_a_30_hour_session_stays_readable(clients, teacher_a):
    """30 hours: at most 7 tick labels and 120 columns (automatic bucket 15 min); a 1-second bucket is refused."""
    frames = [(h * 3600.0 + m * 60.0, "HHH") for h in range(30) for m in (0, 20, 40)]
    session = session_with_frames(teacher_a, name="Marathon", frames=frames, ended_after_s=30 * 3600)
    chart = computations.timeline_chart(
        [
            {"start_s": k * 900, "end_s": (k + 1) * 900, "probabilities": None}
            for k in range(120)  # every bucket of 30 hours
        ],
        bucket_s=900,
    )
    assert 2 <= len(chart["ticks"]) <= 7
    assert [t["label"] for t in chart["ticks"]] == ["0 s", "6 h", "12 h", "18 h", "24 h", "30 h"]
    assert len(chart["columns"]) == 120
    url = f"/reports/sessions/{session.pk}/"
    html = clients["teacher_a"].get(url).content.decode()
    assert html.count("<g><title>") == 90  # one column per 15-minute bucket with frames (3 frames per hour)
    svg = html.split('class="timeline-chart"')[1].split("</svg>")[0]
    # the last frame is at 29 h 40 min, so the chart (and its ticks) end at 29 h 45 min
    assert re.findall(r"<text[^>]*>([^<]*)</text>", svg) == ["0 s", "6 h", "12 h", "18 h", "24 h"]
    for page in ("", "pdf/"):
        refused = clients["teacher_a"].get(url + page, {"bucket": 1})
        assert refused.status_code == 400 and b"at least 30 seconds" in refused.content


def test_report_hides_aggregates_below_min_faces(clients, teacher_a):
    session = session_with_frames(teacher_a, name="Tutoring", frames=[(1.0, "H"), (2.0, "S")])
    html = clients["teacher_a"].get(f"/reports/sessions/{session.pk}/").content.decode()
    assert 'data-testid="too-few-faces"' in html
    assert 'data-testid="p-' not in html
    summary = html.split('id="summary"')[1].split("</section>")[0]
    assert "no emotion figures are shown" in summary
    assert not any(label in summary for label in ("happy", "sad", "neutral"))
    overview = clients["teacher_a"].get("/reports/").content.decode()
    assert "too few faces" in overview and "happy" not in overview


@pytest.mark.parametrize("bucket", ["0", "abc", "3601", "-1", "1.5"])
def test_report_bad_bucket_is_400(clients, fixture_session, bucket):
    for page in ("", "pdf/"):
        response = clients["teacher_a"].get(f"/reports/sessions/{fixture_session.pk}/{page}", {"bucket": bucket})
        assert response.status_code == 400
        assert b"bucket" in response.content


def test_pdf_contains_the_numbers_and_is_audited(clients, fixture_session, teacher_a):
    response = clients["teacher_a"].get(f"/reports/sessions/{fixture_session.pk}/pdf/", {"bucket": 5})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="report-{fixture_session.pk}-fixture-class.pdf"'
    assert response.content.startswith(b"%PDF-")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    text = " ".join(text.split())
    for expected in [
        "Report: Fixture class",
        "25 s",
        "2.67",
        "40.8%",
        "29.2%",
        "17.5%",
        "9 frames were analysed and 2 were dropped",
        "The largest change came at 20 s",
        "Dominant-emotion segments",
    ]:
        assert expected in text, expected
    # the timeline chart (inline SVG) is drawn: its background and every label colour fill (chart + legend)
    content = " ".join(
        p.get_contents().get_data().decode("latin1") for p in PdfReader(io.BytesIO(response.content)).pages
    )
    assert "0.956863 0.956863 0.956863 rg" in content  # chart background #f4f4f4
    assert content.count("0 0.447059 0.698039 rg") >= 3  # sad (#0072B2, Okabe-Ito): 3 chart columns + legend + bar
    record = ExportRecord.objects.get()
    assert (record.user, record.session, record.format) == (teacher_a, fixture_session, "pdf")


def test_pdf_shares_the_export_rate_limit(clients, fixture_session, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "export": "2/hour"},
    }
    url = f"/reports/sessions/{fixture_session.pk}/pdf/"
    assert clients["teacher_a"].get(url).status_code == 200
    assert clients["teacher_a"].get(f"/api/v1/sessions/{fixture_session.pk}/export/").status_code == 200
    refused = clients["teacher_a"].get(url)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"Too many downloads" in refused.content
    assert ExportRecord.objects.count() == 2
    assert clients["admin"].get(url).status_code == 200


def test_overview_sorts_and_filters_sessions(clients, teacher_a, teacher_b):
    short = session_with_frames(teacher_a, name="short", frames=[(1.0, "NNN")], ended_after_s=10)
    long = session_with_frames(teacher_b, name="long", kind="crowd", frames=[(1.0, "HHHHHH")], ended_after_s=600)
    mid = session_with_frames(teacher_a, name="mid", frames=[(1.0, "SSSS")], ended_after_s=60)
    for session, day in ((short, "2024-05-01"), (long, "2024-05-02"), (mid, "2024-05-03")):
        EmotionSession.objects.filter(pk=session.pk).update(
            created_at=f"{day}T10:00:00Z",
            ended_at=dt.datetime.fromisoformat(f"{day}T10:00:00+00:00")
            + dt.timedelta(seconds={short.pk: 10, long.pk: 600, mid.pk: 60}[session.pk]),
        )
    admin = clients["admin"]

    def names(**params):
        response = admin.get("/reports/", params)
        assert response.status_code == 200
        html = response.content.decode()
        order = sorted((html.index(f">{n}</a>"), n) for n in ("short", "long", "mid") if f">{n}</a>" in html)
        return [n for _, n in order]

    assert names() == ["mid", "long", "short"]  # newest first
    assert names(sort="duration") == ["short", "mid", "long"]
    assert names(sort="-duration") == ["long", "mid", "short"]
    assert names(sort="-mean_faces") == ["long", "mid", "short"]
    assert names(sort="owner") in (["short", "mid", "long"], ["mid", "short", "long"])
    assert names(kind="crowd") == ["long"]
    assert names(q="MI") == ["mid"]
    assert names(q="teacher_b") == ["long"]
    assert names(owner="teacher_a", sort="date") == ["short", "mid"]
    assert names(date_from="2024-05-02", date_to="2024-05-02") == ["long"]
    # dominant emotion: alphabetical (happy, neutral, sad), sessions with too few faces last either way
    few = session_with_frames(teacher_a, name="few", frames=[(1.0, "HS")], ended_after_s=5)
    EmotionSession.objects.filter(pk=few.pk).update(created_at="2024-05-04T10:00:00Z")

    def all_names(**params):
        html = admin.get("/reports/", params).content.decode()
        return [n for _, n in sorted((html.index(f">{n}</a>"), n) for n in ("short", "long", "mid", "few"))]

    assert all_names(sort="dominant") == ["long", "short", "mid", "few"]
    assert all_names(sort="-dominant") == ["mid", "short", "long", "few"]
    assert 'href="?sort=dominant">Dominant emotion</a>' in admin.get("/reports/").content.decode()
    html = admin.get("/reports/", {"sort": "duration"}).content.decode()
    row = html.split(f'data-session-id="{long.pk}"')[1].split("</tr>")[0]
    assert "teacher_b" in row and "Crowd" in row and "10 min" in row and "6.00" in row and "happy" in row
    # teachers: the owner filter cannot reveal other sessions
    assert "long" not in clients["teacher_a"].get("/reports/", {"owner": "teacher_b"}).content.decode()


def test_overview_query_count_does_not_grow_with_the_sessions(clients, teacher_a):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert clients["admin"].get("/reports/").status_code == 200
        return len(captured)

    session_with_frames(teacher_a, name="first", frames=[(1.0, "HHH")])
    few = queries()
    for i in range(5):
        session_with_frames(teacher_a, name=f"more {i}", frames=[(1.0, "SSS")])
    assert queries() == few


@pytest.mark.parametrize(
    "params", [{"sort": "password"}, {"date_from": "2024-02-30"}, {"date_from": "2024-05-03", "date_to": "2024-05-01"}]
)
def test_overview_bad_parameters_are_400(clients, params):
    response = clients["admin"].get("/reports/", params)
    assert response.status_code == 400
    assert b'class="error"' in response.content


def test_the_report_shows_people_seen_and_their_time_in_view(clients, teacher_a, make_session):
    from tests.helpers import face_result, store_frame

    s = make_session(teacher_a)
    for n in range(9):  # two people over 4 s, one of them for the first second only
        tracks = (1, 2) if n < 3 else (1,)
        store_frame(s, n * 0.5, [face_result("happy", box=(10 + 50 * t, 20, 30, 40)) | {"track": t} for t in tracks], n)
    page = clients["teacher_a"].get(f"/reports/sessions/{s.pk}/").content.decode()
    assert re.search(r'data-testid="people">2<', page)
    assert re.search(r'data-testid="dwell">2 s / 4 s<', page), re.search(r'data-testid="dwell">[^<]*', page)
