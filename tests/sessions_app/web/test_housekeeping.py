"""Issue 12 on the server side, against real PostgreSQL: idle sessions end by themselves, rename, delete, settings,
the lawful-use confirmation, the public participant notice, compare, paginated lists, branded error pages, upload
refusal and sampling, and the mood and alert computations."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from inference.labels import LABELS
from sessions_app.models import EmotionSession, ExportRecord, Frame
from sessions_app.reports import computations
from sessions_app.services.frames import frame_result_store
from sessions_app.services.sessions import (
    NOTICE_ALPHABET,
    session_end,
    session_notice_code_ensure,
    session_settings_update,
    sessions_end_idle,
)
from sessions_app.services.uploads import video_sampling_plan

pytestmark = pytest.mark.django_db


def probs(**nonzero: float) -> dict[str, float]:
    return {label: nonzero.get(label, 0.0) for label in LABELS}


def store(session, t: float, p: dict[str, float], faces: int = 3, sequence: int | None = None):
    label = max(p, key=p.get)
    return frame_result_store(
        session=session,
        source="camera:test",
        sequence=int(t * 10) if sequence is None else sequence,
        captured_at=session.created_at + dt.timedelta(seconds=t),
        width=640,
        height=480,
        processing_ms=10,
        faces=[{"box": [1, 1, 9, 9], "label": label, "score": p[label], "probabilities": p}] * faces,
        publish=False,
    )


def bucket(start, p=None, faces=10, size=5):
    """A timeline item as ``selectors.session_timeline`` returns it (``p`` None: too few faces)."""
    valence = None if p is None else computations.valence_of(p)
    return {"start_s": start, "end_s": start + size, "frames": 2, "faces": faces, "mean_face_count": 1.0,
            "probabilities": p, "dominant": None if p is None else max(p, key=p.get), "valence": valence}  # fmt: skip


@pytest.fixture
def teacher_client(client, teacher):
    client.force_login(teacher)
    return client


# ------------------------------------------------------------------------------------------------ idle sessions
def test_sessions_without_frames_for_the_idle_time_end_at_their_last_activity(teacher, make_session):
    now = timezone.now()
    stale = make_session(teacher, name="tab closed")
    fresh = make_session(teacher, name="still streaming")
    empty = make_session(teacher, name="never streamed")
    done = make_session(teacher, name="already ended")
    session_end(session=done)
    store(stale, 1.0, probs(happy=1.0))
    store(fresh, 1.0, probs(happy=1.0))
    last = now - dt.timedelta(minutes=45)
    Frame.objects.filter(session=stale).update(processed_at=last)
    EmotionSession.objects.filter(pk=empty.pk).update(created_at=now - dt.timedelta(hours=2))
    done_end = EmotionSession.objects.get(pk=done.pk).ended_at

    assert sessions_end_idle(idle_s=0) == []  # 0 = never
    assert sessions_end_idle(idle_s=1800, now=now) == sorted([stale.pk, empty.pk])
    stale.refresh_from_db(), fresh.refresh_from_db(), empty.refresh_from_db(), done.refresh_from_db()
    assert (stale.status, stale.ended_at) == ("ended", last)  # the idle half hour is not counted
    assert empty.status == "ended" and empty.ended_at == empty.created_at
    assert fresh.status == "running"
    assert done.ended_at == done_end
    assert sessions_end_idle(idle_s=1800, now=now) == []  # nothing left to end


def test_the_idle_check_is_scheduled_in_celery_beat(settings):
    from fer_platform.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["end-idle-sessions"]
    assert entry == {"task": "sessions_app.end_idle_sessions", "schedule": settings.FER_SESSION_IDLE_CHECK_S}
    app.loader.import_default_modules()
    assert "sessions_app.end_idle_sessions" in app.tasks
    assert settings.FER_SESSION_IDLE_END_S == 1800


# ------------------------------------------------------------------------------------------------ create, notice
def test_creating_a_session_needs_the_lawful_use_confirmation_and_records_its_time(teacher_client, teacher):
    url = reverse("sessions_app:session-create")
    form = {"name": "Art 3C", "kind": "classroom", "target_fps": "2", "operator_name": "Ms Rivera"}
    refused = teacher_client.post(url, form)
    assert refused.status_code == 400 and not EmotionSession.objects.exists()
    assert "AI Act" in refused.content.decode()
    before = timezone.now()
    alert = {"alerts_enabled": "on", "alert_emotion": "fear", "alert_threshold_pct": "40", "alert_duration_s": "20"}
    resp = teacher_client.post(url, {**form, **alert, "lawful_use_confirmed": "on"})
    session = EmotionSession.objects.get()
    assert resp.status_code == 302
    assert before <= session.lawful_use_confirmed_at <= timezone.now()
    assert (session.alerts_enabled, session.alert_emotion, session.alert_threshold, session.alert_duration_s) == (
        True, "fear", 0.4, 20,
    )  # fmt: skip
    assert len(session.notice_code) == 8 and set(session.notice_code) <= set(NOTICE_ALPHABET)
    live = teacher_client.get(resp["Location"]).content.decode()
    assert f'data-qr="http://testserver/n/{session.notice_code}/"' in live


def test_the_participant_notice_is_public_and_says_what_is_analysed_and_kept(client, teacher, make_session, settings):
    session = make_session(teacher, name="Assembly hall")
    session_settings_update(session=session, operator_name="Mr Okafor, Riverside School", lawful_use_confirmed=True)
    code = session_notice_code_ensure(session=session)
    assert session_notice_code_ensure(session=session) == code  # stable
    page = client.get(f"/n/{code}/")  # anonymous
    assert page.status_code == 200
    text = page.content.decode()
    retention = f"{settings.FER_RETENTION_DAYS} days after the session ends"
    for expected in ("Assembly hall", "Mr Okafor, Riverside School", "No picture and no video is stored",
                     "Art. 5(1)(f)", retention, "Print this notice"):  # fmt: skip
        assert expected in text, expected
    missing = client.get("/n/nosuchcode/")
    assert missing.status_code == 404 and "Page not found" in missing.content.decode()


# ------------------------------------------------------------------------------------------------ settings, delete
def test_owners_rename_sessions_and_set_their_alert_others_get_404(
    teacher_client, teacher, other_teacher, make_session, client
):
    session = make_session(teacher, name="Old name")
    url = reverse("sessions_app:session-settings", args=[session.pk])
    assert teacher_client.get(url).status_code == 200
    bad = teacher_client.post(url, {"name": "  ", "alert_threshold_pct": "50"})
    assert bad.status_code == 400
    alert = {"alerts_enabled": "on", "alert_emotion": "negative", "alert_threshold_pct": "35", "alert_duration_s": "15"}
    ok = teacher_client.post(url, {"name": " New name ", "operator_name": "Ms R", **alert})
    assert ok.status_code == 302
    session.refresh_from_db()
    assert (session.name, session.operator_name, session.alerts_enabled, session.alert_threshold) == (
        "New name", "Ms R", True, 0.35,
    )  # fmt: skip
    client.force_login(other_teacher)
    assert client.get(url).status_code == 404


def test_deleting_asks_first_refuses_running_sessions_and_keeps_the_audit_log(teacher_client, teacher, make_session):
    session = make_session(teacher, name="To delete")
    store(session, 1.0, probs(happy=1.0))
    ExportRecord.objects.create(
        user=teacher, username="teacher1", session=session, session_label="To delete", format="csv"
    )
    url = reverse("sessions_app:session-delete", args=[session.pk])
    running = teacher_client.post(url)
    assert running.status_code == 409 and EmotionSession.objects.filter(pk=session.pk).exists()
    session_end(session=session)
    confirm = teacher_client.get(url)
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert EmotionSession.objects.filter(pk=session.pk).exists()  # GET deletes nothing
    gone = teacher_client.post(url)
    assert gone.status_code == 302 and not EmotionSession.objects.filter(pk=session.pk).exists()
    assert not Frame.objects.filter(session_id=session.pk).exists()
    record = ExportRecord.objects.get()
    assert record.session is None and record.session_label == "To delete"


def test_the_session_list_is_paginated(teacher_client, teacher, make_session, settings):
    settings.FER_SESSIONS_PER_PAGE = 4
    for i in range(10):
        make_session(teacher, name=f"Lesson {i}")
    first = teacher_client.get("/").content.decode()
    assert first.count('class="cmp-check"') == 4 and 'aria-current="page">1<' in first
    last = teacher_client.get("/?page=3").content.decode()
    assert last.count('class="cmp-check"') == 2 and "Lesson 0" in last


def test_unknown_pages_and_forbidden_pages_are_branded(teacher_client):
    resp = teacher_client.get("/sessions/424242/")
    assert resp.status_code == 404
    page = resp.content.decode()
    assert 'id="error-page"' in page and "Go to your sessions" in page


# ------------------------------------------------------------------------------------------------ uploads
def test_uploads_into_an_ended_session_are_refused_with_a_clear_message(teacher_client, teacher, make_session):
    from django.core.files.uploadedfile import SimpleUploadedFile

    session = make_session(teacher)
    session_end(session=session)
    url = reverse("sessions_app:session-upload", args=[session.pk])
    page = teacher_client.get(url)
    assert page.status_code == 409 and "This session has ended" in page.content.decode()
    resp = teacher_client.post(url, {"file": SimpleUploadedFile("a.jpg", b"\xff\xd8\xff" + b"0" * 50, "image/jpeg")})
    assert resp.status_code == 400 and "This session has ended" in resp.content.decode()
    session.refresh_from_db()
    assert session.frames_received == 0 and session.uploads_count == 0


@pytest.mark.parametrize(
    ("duration_s", "fps", "cap", "step_s", "spread", "frames"),
    [
        (3.0, 2.0, 600, 0.5, False, 7),  # short: the session rate
        (299.5, 2.0, 600, 0.5, False, 600),  # exactly the cap
        (900.0, 2.0, 600, 1.5, True, 600),  # a 15-min video: 600 frames over all 15 min, not the first 5
        (None, 2.0, 600, 0.5, False, None),  # unknown length: the session rate, capped while reading
    ],
)
def test_long_videos_are_sampled_over_their_whole_length(duration_s, fps, cap, step_s, spread, frames):
    plan = video_sampling_plan(duration_s=duration_s, fps=fps, max_frames=cap)
    assert plan == {"step_s": pytest.approx(step_s), "spread": spread, "expected_frames": frames}
    if spread:
        assert (frames - 1) * plan["step_s"] < duration_s <= frames * plan["step_s"] + 1e-9


# ------------------------------------------------------------------------------------------------ mood, alerts
def test_mood_word_and_trend_over_the_last_minute():
    happy, calm, sad = probs(happy=0.8, neutral=0.2), probs(neutral=1.0), probs(sad=0.8, neutral=0.2)
    assert computations.mood_now([]) == {
        "valence": None, "word": None, "negative": None, "as_of_s": None, "trend": None, "trend_delta": None,
    }  # fmt: skip
    falling = [bucket(t, happy) for t in range(0, 30, 5)] + [bucket(t, calm) for t in range(30, 60, 5)]
    mood = computations.mood_now(falling)
    assert (mood["word"], mood["trend"], mood["as_of_s"], mood["valence"]) == ("neutral", "falling", 55, 0.0)
    assert mood["trend_delta"] == pytest.approx(-0.72)
    rising = [bucket(t, sad) for t in range(0, 30, 5)] + [bucket(t, happy) for t in range(30, 60, 5)]
    assert computations.mood_now(rising)["trend"] == "rising"
    steady = [bucket(t, sad) for t in range(0, 60, 5)]
    mood = computations.mood_now(steady)
    assert (mood["word"], mood["trend"], mood["negative"]) == ("negative", "steady", pytest.approx(0.8))
    # too few faces in the newest bucket: the mood is that of the newest bucket with enough faces
    assert computations.mood_now([bucket(0, happy), bucket(5, None)])["as_of_s"] == 0
    assert computations.mood_word(0.149) == "neutral" and computations.mood_word(-0.15) == "negative"


def test_alerts_need_the_share_above_the_threshold_for_the_whole_duration_with_enough_faces():
    neg, calm = probs(angry=0.3, sad=0.3, neutral=0.4), probs(neutral=1.0)
    # 0-20 s negative (60% > 50%), a stretch with too few faces, 25-40 s negative, a gap, 50-60 s negative
    timeline = [bucket(t, neg) for t in (0, 5, 10, 15)] + [bucket(20, None, faces=2)]
    timeline += [bucket(t, neg) for t in (25, 30, 35)] + [bucket(50, neg), bucket(55, neg), bucket(60, calm)]
    episodes = computations.alert_episodes(timeline, target="negative", threshold=0.5, duration_s=15)
    assert [(e["start_s"], e["end_s"], e["fired_at_s"]) for e in episodes] == [(0, 20, 15), (25, 40, 40)]
    assert episodes[0]["peak"] == pytest.approx(0.6)
    assert computations.alert_episodes(timeline, target="negative", threshold=0.6, duration_s=5) == []  # strictly
    assert len(computations.alert_episodes(timeline, target="neutral", threshold=0.5, duration_s=5)) == 1


def test_the_timeline_json_carries_mood_people_and_alerts(teacher_client, teacher, make_session):
    session = make_session(teacher)
    session_settings_update(session=session, alerts_enabled=True, alert_emotion="happy", alert_threshold=0.5,
                            alert_duration_s=10)  # fmt: skip
    for i in range(12):  # 0..22 s, 2 fps-ish, happy
        store(session, i * 2.0, probs(happy=0.9, neutral=0.1), faces=4)
    data = teacher_client.get(f"/sessions/{session.pk}/timeline.json").json()
    assert data["mood"]["word"] == "positive" and data["people"]["people"] == 4
    assert data["alerts"]["enabled"] and data["alerts"]["active"]
    assert data["alerts"]["episodes"][0]["start_s"] == 0
    dashboard = teacher_client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'data-word="positive"' in dashboard and 'id="people-now">4<' in dashboard
    report = teacher_client.get(f"/reports/sessions/{session.pk}/").content.decode()
    assert report.count('class="alert-row"') == 1


def test_compare_puts_sessions_side_by_side_and_shows_the_teachers_trend(
    teacher_client, teacher, other_teacher, make_session
):
    a = make_session(teacher, name="Monday")
    b = make_session(teacher, name="Tuesday")
    foreign = make_session(other_teacher, name="Not mine")
    for i in range(3):
        store(a, i, probs(happy=1.0), faces=3)
        store(b, i, probs(sad=1.0), faces=5)
    page = teacher_client.get(f"/sessions/compare/?ids={a.pk}&ids={b.pk}")
    assert page.status_code == 200
    rows = page.context["rows"]
    assert [r["session"].name for r in rows] == ["Monday", "Tuesday"]
    assert rows[0]["valence"] == pytest.approx(0.9) and rows[1]["valence"] == pytest.approx(-0.7)
    assert rows[1]["negative"] == pytest.approx(1.0) and rows[1]["mean_people"] == 5
    assert [p["name"] for p in page.context["chart"]["trend"]] == ["Monday", "Tuesday"]  # oldest first
    assert teacher_client.get(f"/sessions/compare/?ids={a.pk}").status_code == 400  # one is not a comparison
    assert teacher_client.get(f"/sessions/compare/?ids={a.pk}&ids={foreign.pk}").status_code == 400
    assert "Not mine" not in teacher_client.get("/sessions/compare/").content.decode()


def test_template_filters_write_times_and_numbers_in_plain_form():
    from sessions_app.reports.templatetags import clock, duration, pct0, signed2, valence_position

    assert [clock(s) for s in (0, 75, 3600 + 62, None)] == ["0:00", "1:15", "1:01:02", "–"]
    assert [duration(s) for s in (194.9, 2700, 59.4)] == ["3 min 15 s", "45 min", "59 s"]
    assert (signed2(0.634), signed2(-0.2), signed2(None)) == ("+0.63", "\u22120.20", "–")
    assert (pct0(0.4083), pct0(None)) == ("41%", "–")
    assert (valence_position(-1), valence_position(0.5), valence_position(3)) == ("0.0", "75.0", "100.0")


def test_sessions_created_without_the_confirmation_ask_for_it_and_get_a_notice_link(
    teacher_client, teacher, make_session
):
    session = make_session(teacher, name="Made through the API")  # services.session_create: no confirmation, no code
    assert session.lawful_use_confirmed_at is None and session.notice_code is None
    live = teacher_client.get(f"/sessions/{session.pk}/live/").content.decode()
    session.refresh_from_db()
    assert 'id="lawful-missing"' in live and session.notice_code and f"/n/{session.notice_code}/" in live
    url = reverse("sessions_app:session-settings", args=[session.pk])
    assert "AI Act" in teacher_client.get(url).content.decode()
    teacher_client.post(url, {"name": session.name, "lawful_use_confirmed": "on", "alert_threshold_pct": "50"})
    session.refresh_from_db()
    confirmed = session.lawful_use_confirmed_at
    assert confirmed is not None
    assert 'id="lawful-missing"' not in teacher_client.get(f"/sessions/{session.pk}/live/").content.decode()
    assert 'name="lawful_use_confirmed"' not in teacher_client.get(url).content.decode()  # recorded once
    teacher_client.post(url, {"name": "Renamed", "lawful_use_confirmed": "on", "alert_threshold_pct": "50"})
    session.refresh_from_db()
    assert session.lawful_use_confirmed_at == confirmed and session.name == "Renamed"


def test_the_403_and_500_pages_are_branded_and_render_without_a_request_context(rf, teacher):
    from django.core.exceptions import PermissionDenied
    from django.template.loader import render_to_string
    from django.views.defaults import permission_denied

    request = rf.get("/somewhere/")
    request.user = teacher
    forbidden = permission_denied(request, PermissionDenied())
    assert forbidden.status_code == 403 and "Not allowed" in forbidden.content.decode()
    server_error = render_to_string("500.html")  # Django renders it with an empty context
    assert "Something went wrong" in server_error and "Error 500" in server_error
