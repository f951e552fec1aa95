"""REST API v1 (``sessions_app.api``): permission matrix, contents against the hand-computed fixture, bad input,
errors. (Rate limits: ``tests/sessions_app/test_throttling.py``; schema and docs: ``test_schema.py``.)"""

from __future__ import annotations

import pytest
from django.test import Client

from sessions_app.api import views as api_views
from sessions_app.models import EmotionSession
from sessions_app.services.sessions import session_end
from tests.helpers import (
    EXPECTED_DISTRIBUTION,
    EXPECTED_TIMELINE_5,
    EXPECTED_TIMELINE_10,
    PASSWORD,
    assert_timeline_equal,
    error_of,
    session_with_frames,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]

BASE = "/api/v1/sessions/"


SESSION_ENDPOINTS = [
    ("get", "{id}/"),
    ("get", "{id}/timeline/"),
    ("get", "{id}/faces/"),
    ("get", "{id}/export/?format=csv"),
    ("get", "{id}/export/?format=json"),
    ("get", "{id}/report/"),
    ("post", "{id}/end/"),
]
#: role -> expected status for teacher A's session
MATRIX = {"anonymous": 401, "teacher_a": 200, "teacher_b": 404, "admin": 200}


@pytest.mark.parametrize(("method", "path"), SESSION_ENDPOINTS)
@pytest.mark.parametrize("role", list(MATRIX))
def test_session_endpoints_follow_the_permission_matrix(clients, teacher_a, role, method, path):
    session = session_with_frames(teacher_a, ended_after_s=None)  # running, so "end" can succeed
    response = getattr(clients[role], method)(BASE + path.format(id=session.pk))
    assert response.status_code == MATRIX[role]
    if MATRIX[role] != 200:
        error = error_of(response)
        assert error["code"] == {401: "not_authenticated", 404: "not_found"}[MATRIX[role]]
        # a foreign session looks exactly like a missing one
        missing = getattr(clients[role], method)(BASE + path.format(id=session.pk + 10_000))
        assert missing.status_code == response.status_code
        assert missing.json() == response.json()
        assert session.name not in response.content.decode()


#: role -> expected status of POST /api/v1/sessions/ (create; the new session is always the requester's own)
CREATE_MATRIX = {"anonymous": 401, "teacher_a": 201, "teacher_b": 201, "admin": 201}


@pytest.mark.parametrize("role", list(CREATE_MATRIX))
def test_create_refuses_anonymous_users_and_makes_the_requester_the_owner(
    clients, role, teacher_a, teacher_b, admin_user
):
    response = clients[role].post(BASE, {"name": f"made by {role}"})
    assert response.status_code == CREATE_MATRIX[role], response.content
    if role == "anonymous":
        assert error_of(response)["code"] == "not_authenticated"
        assert not EmotionSession.objects.exists()
    else:
        owner = {"teacher_a": teacher_a, "teacher_b": teacher_b, "admin": admin_user}[role]
        assert EmotionSession.objects.get(pk=response.json()["id"]).owner == owner
        assert response.json()["owner"] == owner.username


@pytest.mark.parametrize(("path", "data"), [("", {"name": "x"}), ("{id}/end/", {})])
def test_browser_session_writes_need_csrf_token_403(teacher_a, path, data):
    """Session-cookie POSTs without a CSRF token are refused with 403 permission_denied (documented)."""
    session = session_with_frames(teacher_a, ended_after_s=None)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(teacher_a)
    response = browser.post(BASE + path.format(id=session.pk), data)
    assert response.status_code == 403
    assert error_of(response)["code"] == "permission_denied"
    assert "CSRF" in error_of(response)["message"]
    assert EmotionSession.objects.count() == 1
    session.refresh_from_db()
    assert session.status == "running"


def test_end_race_the_loser_gets_409(clients, teacher_a, monkeypatch):
    """Two end requests race: the second passes the visibility lookup while the session is still running, then
    the first one ends it. Only one request may answer 200."""
    session = session_with_frames(teacher_a, ended_after_s=None)
    lookup = api_views.visible_session_or_404

    def lookup_then_lose_the_race(**kwargs):
        found = lookup(**kwargs)  # still running here
        session_end(session=EmotionSession.objects.get(pk=found.pk))  # the other request wins
        return found

    monkeypatch.setattr(api_views, "visible_session_or_404", lookup_then_lose_the_race)
    response = clients["teacher_a"].post(f"{BASE}{session.pk}/end/")
    assert response.status_code == 409, response.content
    assert error_of(response)["code"] == "conflict"


def test_list_is_scoped(clients, teacher_a, teacher_b):
    mine = session_with_frames(teacher_a, name="A1", frames=[])
    theirs = session_with_frames(teacher_b, name="B1", frames=[])
    ids = {role: [s["id"] for s in clients[role].get(BASE).json()["results"]] for role in MATRIX if role != "anonymous"}
    assert ids["teacher_a"] == [mine.pk]
    assert ids["teacher_b"] == [theirs.pk]
    assert sorted(ids["admin"]) == sorted([mine.pk, theirs.pk])
    response = clients["anonymous"].get(BASE)
    assert response.status_code == 401 and error_of(response)["code"] == "not_authenticated"
    # teachers cannot widen their scope with the owner filter
    assert clients["teacher_b"].get(BASE, {"owner": teacher_a.pk}).json()["count"] == 0


def test_list_filters_and_orders_sessions(clients, teacher_a, teacher_b):
    s1 = session_with_frames(teacher_a, name="b-class", frames=[])
    s2 = session_with_frames(teacher_a, name="a-crowd", kind="crowd", frames=[])
    s3 = session_with_frames(teacher_b, name="c-class", frames=[])
    EmotionSession.objects.filter(pk=s1.pk).update(created_at="2024-03-01T10:00:00Z")
    EmotionSession.objects.filter(pk=s2.pk).update(created_at="2024-03-05T10:00:00Z")
    EmotionSession.objects.filter(pk=s3.pk).update(created_at="2024-03-09T10:00:00Z")
    admin = clients["admin"]

    def ids(**params):
        response = admin.get(BASE, params)
        assert response.status_code == 200, response.content
        return [s["id"] for s in response.json()["results"]]

    assert ids() == [s3.pk, s2.pk, s1.pk]
    assert ids(kind="crowd") == [s2.pk]
    assert ids(owner=teacher_b.pk) == [s3.pk]
    assert ids(date_from="2024-03-02", date_to="2024-03-09") == [s3.pk, s2.pk]
    assert ids(date_to="2024-03-01") == [s1.pk]
    assert ids(ordering="name") == [s2.pk, s1.pk, s3.pk]
    assert ids(ordering="-name") == [s3.pk, s1.pk, s2.pk]
    assert ids(ordering="created_at", page_size=2) == [s1.pk, s2.pk]
    assert ids(ordering="created_at", page_size=2, page=2) == [s3.pk]


def test_retrieve_returns_the_session_and_its_counters(clients, fixture_session):
    body = clients["teacher_a"].get(f"{BASE}{fixture_session.pk}/").json()
    assert body["id"] == fixture_session.pk
    assert body["name"] == "Fixture class"
    assert body["owner"] == "teacher_a"
    assert body["status"] == "ended"
    assert body["duration_s"] == 25.0
    assert (body["frames_processed"], body["frames_dropped"], body["frames_rejected"]) == (9, 2, 1)
    assert body["links"]["report"].endswith(f"/reports/sessions/{fixture_session.pk}/")


def test_a_created_session_can_be_ended_once(clients, teacher_a):
    response = clients["teacher_a"].post(BASE, {"name": "Period 3", "kind": "crowd", "target_fps": 1.5})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["kind"], body["target_fps"], body["status"]) == ("Period 3", "crowd", 1.5, "running")
    session = EmotionSession.objects.get(pk=body["id"])
    assert session.owner == teacher_a
    ended = clients["teacher_a"].post(f"{BASE}{session.pk}/end/")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    assert ended.json()["ended_at"] is not None
    again = clients["teacher_a"].post(f"{BASE}{session.pk}/end/")
    assert again.status_code == 409 and error_of(again)["code"] == "conflict"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "classroom"}, "name"),
        ({"name": "x", "kind": "party"}, "kind"),
        ({"name": "x", "target_fps": 100}, "target_fps"),
        ({"name": "x", "target_fps": "fast"}, "target_fps"),
        ({"name": "x" * 201}, "name"),
    ],
)
def test_create_refuses_bad_input_with_400(clients, data, field):
    response = clients["teacher_a"].post(BASE, data)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid" and field in error["details"]


def test_report_bucket_too_small_for_a_long_session_is_400(clients, teacher_a):
    session = session_with_frames(teacher_a, name="Marathon", frames=[(10.0, "HHH")], ended_after_s=30 * 3600)
    url = f"{BASE}{session.pk}/report/"
    response = clients["teacher_a"].get(url, {"bucket": 1})  # 108000 points
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid" and "at least 30 seconds" in error["details"]["bucket"][0]
    assert clients["teacher_a"].get(url, {"bucket": 30}).json()["bucket_s"] == 30
    assert clients["teacher_a"].get(url).json()["bucket_s"] == 900  # automatic: 120 points


def test_timeline_endpoint_matches_the_hand_computation(clients, fixture_session):
    url = f"{BASE}{fixture_session.pk}/timeline/"
    body = clients["teacher_a"].get(url, {"bucket": 5}).json()
    assert (body["session_id"], body["bucket_s"], body["min_faces"]) == (fixture_session.pk, 5, 3)
    assert_timeline_equal(body["buckets"], EXPECTED_TIMELINE_5)
    assert_timeline_equal(clients["admin"].get(url, {"bucket": 10}).json()["buckets"], EXPECTED_TIMELINE_10)
    assert clients["teacher_a"].get(url).json()["bucket_s"] == 5  # default


def test_report_endpoint_matches_the_hand_computation(clients, fixture_session):
    body = clients["teacher_a"].get(f"{BASE}{fixture_session.pk}/report/", {"bucket": 5}).json()
    assert body["session"] == {"id": fixture_session.pk, "name": "Fixture class", "kind": "classroom"}
    assert body["faces"] == 24 and body["max_face_count"] == 4
    assert body["distribution"]["dominant"] == EXPECTED_DISTRIBUTION["dominant"]
    assert body["distribution"]["probabilities"] == pytest.approx(EXPECTED_DISTRIBUTION["probabilities"], abs=1e-6)
    assert_timeline_equal(body["timeline"], EXPECTED_TIMELINE_5)
    assert [c["at_s"] for c in body["changes"]] == [20, 15, 5]
    assert body["summary"][0] == 'The classroom session "Fixture class" lasted 25 s.'


def test_faces_endpoint_lists_every_face_and_filters_by_time_range(clients, fixture_session):
    url = f"{BASE}{fixture_session.pk}/faces/"
    body = clients["teacher_a"].get(url, {"page_size": 100}).json()
    assert body["count"] == 24
    first = body["results"][0]
    assert (first["offset_s"], first["source"], first["label"]) == (0.5, "camera", "neutral")
    assert (first["x"], first["y"], first["w"], first["h"]) == (10, 20, 48, 50)
    assert first["probabilities"] == pytest.approx(
        {"angry": 0, "disgust": 0, "fear": 0, "happy": 0.1, "sad": 0, "surprise": 0, "neutral": 0.9}
    )
    assert [f["offset_s"] for f in body["results"]] == sorted(f["offset_s"] for f in body["results"])
    # [5, 11): frames at 5.0 (3 faces) and 7.5 (4 faces); 11.0 is excluded (to_s is exclusive)
    ranged = clients["teacher_a"].get(url, {"from_s": 5, "to_s": 11}).json()
    assert ranged["count"] == 7
    assert {f["offset_s"] for f in ranged["results"]} == {5.0, 7.5}
    assert clients["teacher_a"].get(url, {"from_s": 21}).json()["count"] == 3
    page = clients["teacher_a"].get(url, {"page_size": 5, "page": 5}).json()
    assert page["count"] == 24 and len(page["results"]) == 4 and page["next"] is None


@pytest.mark.parametrize(
    ("path", "params", "code", "status"),
    [
        ("{id}/timeline/", {"bucket": 0}, "invalid", 400),
        ("{id}/timeline/", {"bucket": "abc"}, "invalid", 400),
        ("{id}/timeline/", {"bucket": 10**9}, "invalid", 400),
        ("{id}/timeline/", {"bucket": 2.5}, "invalid", 400),
        ("{id}/report/", {"bucket": -5}, "invalid", 400),
        ("{id}/export/", {"format": "xml"}, "invalid", 400),
        ("{id}/faces/", {"from_s": -1}, "invalid", 400),
        ("{id}/faces/", {"from_s": "soon"}, "invalid", 400),
        ("{id}/faces/", {"from_s": 10, "to_s": 5}, "invalid", 400),
        ("{id}/faces/", {"from_s": "nan"}, "invalid", 400),
        ("{id}/faces/", {"page_size": 100000}, "invalid", 400),
        ("{id}/faces/", {"page_size": 0}, "invalid", 400),
        ("{id}/faces/", {"page_size": "many"}, "invalid", 400),
        ("{id}/faces/", {"page": 99}, "not_found", 404),
        ("{id}/faces/", {"page": "x"}, "not_found", 404),
        ("", {"page_size": 10**12}, "invalid", 400),
        ("", {"date_from": "2024-13-01"}, "invalid", 400),
        ("", {"date_from": "yesterday"}, "invalid", 400),
        ("", {"date_from": "2024-03-05", "date_to": "2024-03-01"}, "invalid", 400),
        ("", {"kind": "party"}, "invalid", 400),
        ("", {"ordering": "password"}, "invalid", 400),
        ("", {"owner": "bob"}, "invalid", 400),
        ("", {"owner": "-1.7976931348623155e+308"}, "invalid", 400),  # found by schemathesis: was a 500
        ("", {"owner": 2**63}, "invalid", 400),
        ("", {"owner": 1.5}, "invalid", 400),
        ("abc/", {}, "not_found", 404),
        ("99999999999999999999999/timeline/", {}, "not_found", 404),
        ("-1/faces/", {}, "not_found", 404),
    ],
)
def test_bad_input_is_a_clear_4xx(clients, fixture_session, path, params, code, status):
    response = clients["teacher_a"].get(BASE + path.format(id=fixture_session.pk), params)
    assert response.status_code == status, response.content
    error = error_of(response)
    assert error["code"] == code
    assert error["message"]
    if code == "invalid":
        assert error["details"]


@pytest.mark.parametrize("path", ["/api/v1/nothing/", "/api/v2/sessions/", "/api/v1/sessions/1/frames/"])
def test_unknown_api_paths_are_json_404(clients, path):
    for role in ("anonymous", "teacher_a"):
        response = clients[role].get(path)
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"


def test_export_format_is_not_drf_format_override(clients, fixture_session):
    """?format=csv|json is the export's own parameter; other endpoints keep DRF's JSON."""
    response = clients["teacher_a"].get(f"{BASE}{fixture_session.pk}/export/", {"format": "json"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    response = clients["teacher_a"].get(f"{BASE}{fixture_session.pk}/export/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")


def test_token_auth_gives_one_token_per_user_and_refuses_bad_credentials(teacher_a, fixture_session):
    anonymous = Client()
    response = anonymous.post("/api/v1/auth/token/", {"username": "teacher_a", "password": PASSWORD})
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert len(token) == 40
    authed = Client(HTTP_AUTHORIZATION=f"Token {token}")
    assert authed.get(f"{BASE}{fixture_session.pk}/").json()["id"] == fixture_session.pk
    # the same token again
    again = anonymous.post("/api/v1/auth/token/", {"username": "teacher_a", "password": PASSWORD}).json()
    assert again["token"] == token
    wrong = anonymous.post("/api/v1/auth/token/", {"username": "teacher_a", "password": "nope"})
    assert wrong.status_code == 400 and error_of(wrong)["code"] == "invalid"
    bad_token = Client(HTTP_AUTHORIZATION="Token " + "0" * 40).get(BASE)
    assert bad_token.status_code == 401 and error_of(bad_token)["code"] == "authentication_failed"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b""),
        ("multipart/form-data; boundary=xyz", b""),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\n"),
        ("application/json", b"{not json"),
        ("application/x-www-form-urlencoded", b""),
    ],
)
def test_empty_or_malformed_create_bodies_get_a_json_400(clients, content_type, body):
    response = clients["teacher_a"].post(BASE, data=body, content_type=content_type)
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert error_of(response)["code"] in {"invalid", "parse_error"}
    assert not EmotionSession.objects.filter(owner__username="teacher_a", name="").exists()
