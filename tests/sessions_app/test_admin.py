"""Django admin: session list with filters/search for admins; the export audit log is read-only."""

import pytest

from sessions_app.models import ExportRecord
from tests.helpers import session_with_frames

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]

CHANGELIST = "/admin/sessions_app/emotionsession/"


@pytest.mark.parametrize(
    ("role", "status"), [("anonymous", 302), ("teacher_a", 302), ("teacher_b", 302), ("admin", 200)]
)
def test_only_admins_get_into_the_admin(clients, fixture_session, role, status):
    for url in (CHANGELIST, f"{CHANGELIST}{fixture_session.pk}/change/", "/admin/sessions_app/exportrecord/"):
        response = clients[role].get(url)
        assert response.status_code == status, url
        if status == 302:
            assert response["Location"].startswith("/admin/login/")


def test_admin_filters_and_searches_sessions(clients, teacher_a, teacher_b):
    session_with_frames(teacher_a, name="Algebra", frames=[])
    session_with_frames(teacher_b, name="Concert", kind="crowd", frames=[])
    admin = clients["admin"]
    page = admin.get(CHANGELIST).content.decode()
    assert "Algebra" in page and "Concert" in page
    for flt in ("By kind", "By status", "By owner", "By created at"):
        assert flt in page
    assert "Concert" not in admin.get(CHANGELIST, {"kind__exact": "classroom"}).content.decode()
    assert "Algebra" not in admin.get(CHANGELIST, {"q": "teacher_b"}).content.decode()
    assert "Concert" not in admin.get(CHANGELIST, {"q": "algeb"}).content.decode()
    assert "/reports/sessions/" in page


def test_audit_log_is_read_only(clients, fixture_session, teacher_a):
    clients["teacher_a"].get(f"/api/v1/sessions/{fixture_session.pk}/export/", {"format": "csv"})
    record = ExportRecord.objects.get()
    admin = clients["admin"]
    page = admin.get("/admin/sessions_app/exportrecord/").content.decode()
    assert f"Fixture class (#{fixture_session.pk})" in page and "teacher_a" in page
    assert admin.get("/admin/sessions_app/exportrecord/add/").status_code == 403
    assert admin.post(f"/admin/sessions_app/exportrecord/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ExportRecord.objects.count() == 1


def test_status_is_read_only_and_sessions_end_through_the_service(
    clients, teacher_a, django_capture_on_commit_callbacks
):
    """Editing ``status`` in the admin would "end" a session without ``ended_at`` or the ``session.ended`` event:
    it is read-only, and the "End selected sessions" action calls ``session_end``."""
    from unittest import mock

    from sessions_app.models import EmotionSession
    from sessions_app.services import sessions as session_services

    running = session_with_frames(teacher_a, name="Running A", frames=[], ended_after_s=None)
    other = session_with_frames(teacher_a, name="Running B", frames=[], ended_after_s=None)
    done = session_with_frames(teacher_a, name="Done", frames=[])
    admin = clients["admin"]
    change_url = f"{CHANGELIST}{running.pk}/change/"
    page = admin.get(change_url).content.decode()
    assert 'name="status"' not in page and "Running" in page  # shown, not editable
    form = {"name": "Renamed", "owner": teacher_a.pk, "kind": "classroom", "target_fps": "2.0", "status": "ended"}
    assert admin.post(change_url, form).status_code == 302
    running.refresh_from_db()
    assert (running.name, running.status, running.ended_at) == ("Renamed", "running", None)

    assert "End selected sessions" in admin.get(CHANGELIST).content.decode()
    with (
        mock.patch.object(session_services, "event_publish", wraps=session_services.event_publish) as publish,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin.post(
            CHANGELIST,
            {"action": "end_sessions", "_selected_action": [running.pk, done.pk]},
            follow=True,
        )
    assert "Ended 1 session(s). 1 had already ended." in response.content.decode()
    running.refresh_from_db()
    assert running.status == "ended" and running.ended_at is not None
    events = [call.args[1] for call in publish.call_args_list]
    assert events == [{"type": "session.ended", "session_id": running.pk}]
    assert EmotionSession.objects.get(pk=other.pk).status == "running"
    done_before = done.ended_at
    done.refresh_from_db()
    assert done.ended_at == done_before  # the first end time is kept
