"""Django admin: session list with filters/search for admins; the export audit log is read-only."""

import pytest

from sessions_app.models import ExportRecord

from .reports_fixtures import *  # noqa: F403
from .reports_fixtures import make_session

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/sessions_app/emotionsession/"


@pytest.mark.parametrize(
    ("role", "status"), [("anonymous", 302), ("teacher_a", 302), ("teacher_b", 302), ("admin", 200)]
)
def test_admin_permission_matrix(clients, fixture_session, role, status):
    for url in (CHANGELIST, f"{CHANGELIST}{fixture_session.pk}/change/", "/admin/sessions_app/exportrecord/"):
        response = clients[role].get(url)
        assert response.status_code == status, url
        if status == 302:
            assert response["Location"].startswith("/admin/login/")


def test_admin_filters_and_search(clients, teacher_a, teacher_b):
    make_session(teacher_a, name="Algebra", frames=[])
    make_session(teacher_b, name="Concert", kind="crowd", frames=[])
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
