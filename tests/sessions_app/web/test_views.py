"""Web pages: login required, roles (teachers see their own sessions, staff see all), create, live, dashboard,
end, upload validation and the timeline JSON."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from inference.labels import LABELS
from sessions_app.models import EmotionSession
from sessions_app.services.frames import frame_result_store

pytestmark = pytest.mark.django_db


@pytest.fixture
def teacher_client(client, teacher):
    client.force_login(teacher)
    return client


def add_frames(session, n=4, faces=3):
    p = {label: (0.6 if label == "happy" else 0.4 / 6) for label in LABELS}
    for i in range(n):
        frame_result_store(
            session=session,
            source="camera:v",
            sequence=i,
            captured_at=session.created_at + dt.timedelta(seconds=i * 2),
            width=640,
            height=480,
            processing_ms=20,
            faces=[{"box": [1, 1, 20, 20], "label": "happy", "score": 0.6, "probabilities": p}] * faces,
        )


def test_pages_require_login(client, teacher, make_session):
    s = make_session(teacher)
    for url in ("/", f"/sessions/{s.pk}/", f"/sessions/{s.pk}/live/", f"/sessions/{s.pk}/timeline.json"):
        resp = client.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/"), url


def test_teachers_log_in_see_the_menu_without_admin_and_log_out(client, teacher):
    resp = client.post("/accounts/login/", {"username": "teacher1", "password": "pw-teacher-1"})
    assert resp.status_code == 302 and resp["Location"] == "/"
    page = client.get("/").content.decode()
    for link in ('href="/reports/"', 'href="/api/docs/"', 'action="/accounts/logout/"'):
        assert link in page
    assert 'href="/admin/"' not in page  # teachers get no admin link
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_list_shows_own_sessions_only_and_staff_sees_all(client, teacher, other_teacher, staff_user, make_session):
    make_session(teacher, name="Mine 1A")
    make_session(other_teacher, name="Theirs 2B")
    client.force_login(teacher)
    page = client.get("/").content.decode()
    assert "Mine 1A" in page and "Theirs 2B" not in page
    client.force_login(staff_user)
    page = client.get("/").content.decode()
    assert "Mine 1A" in page and "Theirs 2B" in page and 'href="/admin/"' in page


def test_create_session_redirects_to_live_page(teacher_client, teacher):
    resp = teacher_client.post(
        reverse("sessions_app:session-create"),
        {"name": "Physics", "kind": "crowd", "target_fps": "4", "lawful_use_confirmed": "on"},
    )
    s = EmotionSession.objects.get(owner=teacher)
    assert (s.name, s.kind, s.target_fps) == ("Physics", "crowd", 4.0)
    assert resp.status_code == 302 and resp["Location"] == f"/sessions/{s.pk}/live/"
    live = teacher_client.get(resp["Location"]).content.decode()
    assert 'id="start-camera"' in live and "chart.umd.min.js" in live
    config = json.loads(live.split('id="live-config" type="application/json">')[1].split("</script>")[0])
    assert config["can_stream"] is True and config["stream_path"] == f"/ws/sessions/{s.pk}/stream/"
    assert config["target_fps"] == 4.0
    bad = teacher_client.post(reverse("sessions_app:session-create"), {"name": "", "kind": "x", "target_fps": "99"})
    assert bad.status_code == 400 and EmotionSession.objects.count() == 1


def test_the_create_form_says_what_the_session_kind_means_for_face_sizes(teacher_client, settings):
    page = teacher_client.get(reverse("sessions_app:session-list")).content.decode()
    assert "Classroom: a camera in front of a class (faces from about 24 px, faster)" in page
    settings.FER_CLASSROOM_MIN_FACE_PX = 0
    page = teacher_client.get(reverse("sessions_app:session-list")).content.decode()
    assert "Classroom: a camera in front of a class (every face)" in page


def test_foreign_sessions_are_404_and_admin_watches_without_camera(
    client, teacher, other_teacher, staff_user, make_session
):
    s = make_session(other_teacher)
    client.force_login(teacher)
    for url in (f"/sessions/{s.pk}/", f"/sessions/{s.pk}/live/", f"/sessions/{s.pk}/timeline.json"):
        assert client.get(url).status_code == 404
    assert client.post(f"/sessions/{s.pk}/end/").status_code == 404
    assert client.get(f"/sessions/{s.pk}/upload/").status_code == 404
    s.refresh_from_db()
    assert s.status == "running"
    client.force_login(staff_user)
    live = client.get(f"/sessions/{s.pk}/live/").content.decode()
    assert 'id="start-camera"' not in live and '"can_stream": false' in live
    assert client.get(f"/sessions/{s.pk}/upload/").status_code == 404  # admins watch, they do not stream


def test_dashboard_shows_the_timeline_and_ends_the_session(teacher_client, teacher, make_session):
    s = make_session(teacher)
    add_frames(s, n=4, faces=3)
    page = teacher_client.get(f"/sessions/{s.pk}/").content.decode()
    assert f'href="/reports/sessions/{s.pk}/"' in page and 'id="timeline-chart"' in page
    assert '<td class="dominant">happy</td>' in page
    data = teacher_client.get(f"/sessions/{s.pk}/timeline.json?bucket=2").json()
    assert [b["start_s"] for b in data["timeline"]] == [0, 2, 4, 6]
    assert data["distribution"]["dominant"] == "happy" and data["summary"]["frames"] == 4
    assert data["summary"]["frame_span_s"] == pytest.approx(6.0)
    assert 0.0 <= data["summary"]["duration_s"] < 60  # running: created a moment ago
    assert teacher_client.get(f"/sessions/{s.pk}/timeline.json?bucket=abc").status_code == 200
    assert teacher_client.get(f"/sessions/{s.pk}/end/").status_code == 405
    resp = teacher_client.post(f"/sessions/{s.pk}/end/")
    assert resp.status_code == 302 and resp["Location"] == f"/sessions/{s.pk}/"
    s.refresh_from_db()
    assert s.status == "ended"
    assert teacher_client.post(f"/sessions/{s.pk}/end/").status_code == 302  # idempotent


def test_dashboard_shows_the_sessions_duration_not_the_frame_span(teacher_client, teacher, make_session):
    """One frame in a session that ran 90 s: the dashboard says 90 s (the frame span, 0 s, is shown separately)."""
    s = make_session(teacher)
    add_frames(s, n=1, faces=1)
    EmotionSession.objects.filter(pk=s.pk).update(status="ended", ended_at=s.created_at + dt.timedelta(seconds=90))
    page = teacher_client.get(f"/sessions/{s.pk}/").content.decode()
    assert '<span class="big" id="duration">1 min 30 s</span>' in page
    assert '<span class="big" id="frame-span">0 s</span>' in page
    assert teacher_client.get(f"/sessions/{s.pk}/timeline.json").json()["summary"]["duration_s"] == 90.0


def test_upload_rejects_non_media_and_oversized(teacher_client, teacher, make_session, settings):
    s = make_session(teacher)
    resp = teacher_client.post(
        f"/sessions/{s.pk}/upload/", {"file": SimpleUploadedFile("a.txt", b"just text " * 20, "text/plain")}
    )
    assert resp.status_code == 400 and b"not a JPEG/PNG photo or a readable video" in resp.content
    resp = teacher_client.post(
        f"/sessions/{s.pk}/upload/", {"file": SimpleUploadedFile("t.jpg", b"\xff\xd8\xff\xe0broken", "image/jpeg")}
    )
    assert resp.status_code == 400
    settings.FER_MAX_UPLOAD_BYTES = 100
    resp = teacher_client.post(
        f"/sessions/{s.pk}/upload/", {"file": SimpleUploadedFile("b.jpg", b"\xff\xd8\xff" + b"0" * 200, "image/jpeg")}
    )
    assert resp.status_code == 400 and b"larger than" in resp.content
    s.refresh_from_db()
    assert (s.frames_received, s.uploads_count) == (0, 0)
