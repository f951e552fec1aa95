"""Retention: sessions older than FER_RETENTION_DAYS are purged (service, Celery task, management command); the
export audit log survives the purge."""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from sessions_app.models import EmotionSession, ExportRecord, Face, Frame, TimelineBucket
from sessions_app.services.retention import sessions_purge
from tests.helpers import session_with_frames


def _beat_task(name: str):
    """The task Celery beat runs under ``name``, found the way a worker finds it (autodiscovery), not by import."""
    from fer_platform.celery import app

    app.loader.import_default_modules()
    return app.tasks[name]


pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]


def _age(session, *, days: float, ended: bool = True):
    created = timezone.now() - dt.timedelta(days=days)
    EmotionSession.objects.filter(pk=session.pk).update(
        created_at=created, ended_at=created + dt.timedelta(minutes=45) if ended else None
    )


@pytest.fixture
def aged(teacher_a, teacher_b, settings):
    settings.FER_RETENTION_DAYS = 30
    old = session_with_frames(teacher_a, name="old")
    _age(old, days=40)
    recent = session_with_frames(teacher_b, name="recent")
    _age(recent, days=10)
    stale_running = session_with_frames(teacher_a, name="never ended", ended_after_s=None)
    _age(stale_running, days=31, ended=False)
    boundary = session_with_frames(teacher_a, name="ended 29.9 days ago")  # started 30+ days ago, ended within 30
    EmotionSession.objects.filter(pk=boundary.pk).update(
        created_at=timezone.now() - dt.timedelta(days=31), ended_at=timezone.now() - dt.timedelta(days=29.9)
    )
    ExportRecord.objects.create(user=teacher_a, session=old, session_label=f"old (#{old.pk})", format="csv")
    return {"old": old, "recent": recent, "stale_running": stale_running, "boundary": boundary}


def test_purge_deletes_expired_results_only(aged):
    result = sessions_purge()
    assert (result.sessions, result.frames, result.faces) == (2, 18, 48)  # 2 fixture sessions: 9 frames, 24 faces
    assert result.buckets == 18
    remaining = set(EmotionSession.objects.values_list("name", flat=True))
    assert remaining == {"recent", "ended 29.9 days ago"}
    for model in (Frame, Face, TimelineBucket):
        assert not model.objects.filter(session_id__in=[aged["old"].pk, aged["stale_running"].pk]).exists()
        assert model.objects.filter(session_id=aged["recent"].pk).exists()
    record = ExportRecord.objects.get()
    assert record.session is None and record.session_label == f"old (#{aged['old'].pk})"
    assert sessions_purge().sessions == 0  # idempotent


def test_dry_run_and_disabled_retention_delete_nothing(aged, settings):
    result = sessions_purge(dry_run=True)
    assert (result.sessions, result.faces) == (2, 48)
    assert EmotionSession.objects.count() == 4
    settings.FER_RETENTION_DAYS = 0
    assert sessions_purge().sessions == 0
    assert EmotionSession.objects.count() == 4


def test_celery_task_purges(aged):
    outcome = _beat_task("sessions_app.purge_expired_sessions").apply().get()
    assert outcome == {"sessions": 2, "frames": 18, "faces": 48, "buckets": 18}
    assert EmotionSession.objects.count() == 2


def test_beat_schedule_runs_the_registered_task(settings):
    from fer_platform.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["purge-expired-sessions"]
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert entry["schedule"] > 0


def test_purge_sessions_command_dry_runs_purges_by_days_and_reports_retention_off(aged):
    out = StringIO()
    call_command("purge_sessions", "--dry-run", stdout=out)
    assert out.getvalue().startswith("Would purge 2 sessions (18 frames, 48 faces, 18 timeline buckets)")
    assert EmotionSession.objects.count() == 4
    out = StringIO()
    call_command("purge_sessions", "--days", "5", stdout=out)
    assert out.getvalue().startswith("Purged 4 sessions")
    assert EmotionSession.objects.count() == 0
    out = StringIO()
    call_command("purge_sessions", "--days", "0", stdout=out)
    assert "Retention is off" in out.getvalue()
