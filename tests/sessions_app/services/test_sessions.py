"""Session services (``sessions_app.services.sessions``): create, end, counters and upload sources, on real
PostgreSQL."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from sessions_app import selectors
from sessions_app.models import EmotionSession
from sessions_app.services.sessions import (
    session_counters_add,
    session_create,
    session_end,
    session_end_if_running,
    upload_source_allocate,
)
from tests.helpers import session_with_frames

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]


def test_session_create_trims_the_name_and_refuses_invalid_values(teacher):
    s = session_create(owner=teacher, name="  Math  ", kind="crowd", target_fps=5)
    assert (s.name, s.kind, s.target_fps, s.status) == ("Math", "crowd", 5.0, "running")
    with pytest.raises(ValidationError):
        session_create(owner=teacher, name="x", kind="classroom", target_fps=0)
    with pytest.raises(ValidationError):
        session_create(owner=teacher, name="x", kind="stadium", target_fps=2)
    with pytest.raises(ValidationError):
        session_create(owner=teacher, name="   ", kind="classroom", target_fps=2)
    assert EmotionSession.objects.count() == 1


def test_session_end_is_idempotent(teacher, make_session):
    s = make_session(teacher)
    first = session_end(session=s)
    assert first.status == "ended" and first.ended_at is not None
    again = session_end(session=EmotionSession.objects.get(pk=s.pk))
    assert again.ended_at == first.ended_at


def test_session_end_if_running_reports_who_ended_it(teacher_a):
    session = session_with_frames(teacher_a, ended_after_s=None)
    stale = EmotionSession.objects.get(pk=session.pk)
    assert session_end_if_running(session=session) is True
    first_end = session.ended_at
    assert session_end_if_running(session=stale) is False  # stale copy still says "running"
    assert stale.status == "ended" and stale.ended_at == first_end  # refreshed, first end kept
    assert session_end(session=stale).ended_at == first_end  # the idempotent form still works


def test_counters_add_up_and_upload_sources_are_numbered_in_order(teacher, make_session):
    s = make_session(teacher)
    session_counters_add(session_id=s.pk, received=3, dropped=2, rejected=1)
    session_counters_add(session_id=s.pk)
    assert selectors.session_counters(session_id=s.pk) == {"received": 3, "processed": 0, "dropped": 2, "rejected": 1}
    assert [upload_source_allocate(session=s) for _ in range(3)] == ["upload:1", "upload:2", "upload:3"]
