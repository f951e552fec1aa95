"""Write-side logic of emotion sessions: create, end, count frames, allocate upload sources."""

from __future__ import annotations

import functools
import logging
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from sessions_app.models import EmotionSession, Face, Frame, TimelineBucket
from sessions_app.selectors import session_list_idle
from sessions_app.services.events import event_publish

logger = logging.getLogger(__name__)
#: Characters of participant-notice codes: no 0/O, 1/l/I look-alikes.
NOTICE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"


def session_create(*, owner, name: str, kind: str = EmotionSession.Kind.CLASSROOM, target_fps: float = 2.0):
    """Create a running session owned by ``owner``.

    ``kind``: ``"classroom"`` or ``"crowd"``; ``target_fps``: frames per second the browser sends (0.1..30).
    Returns the saved ``EmotionSession``. Raises ``django.core.exceptions.ValidationError`` on invalid values.
    """
    session = EmotionSession(owner=owner, name=(name or "").strip(), kind=kind, target_fps=float(target_fps))
    session.full_clean(exclude=["owner"])
    session.save()
    return session


def session_end_if_running(*, session: EmotionSession) -> bool:
    """End ``session`` if it is still running, and tell whether *this call* ended it.

    One conditional ``UPDATE ... WHERE status = 'running'``, so of two concurrent calls exactly one returns
    ``True``; live clients are notified (after commit) only by that one. ``session`` is refreshed from the database
    in either case.

    Returns:
        ``True`` when this call ended the session; ``False`` when it had already ended (``ended_at`` unchanged).
    """
    with transaction.atomic():
        changed = EmotionSession.objects.filter(pk=session.pk, status=EmotionSession.Status.RUNNING).update(
            status=EmotionSession.Status.ENDED, ended_at=timezone.now()
        )
        if changed:
            sid = session.pk
            transaction.on_commit(lambda: event_publish(sid, {"type": "session.ended", "session_id": sid}))
    session.refresh_from_db()
    return bool(changed)


def session_end(*, session: EmotionSession) -> EmotionSession:
    """Mark ``session`` ended (idempotent: an ended session keeps its first ``ended_at``) and tell live clients.

    Returns the refreshed session. Callers that must know whether this call did the ending (e.g. to answer 409
    to the loser of a race) use ``session_end_if_running``.
    """
    session_end_if_running(session=session)
    return session


def session_counters_add(*, session_id: int, received: int = 0, dropped: int = 0, rejected: int = 0) -> None:
    """Add to a session's frame counters with atomic ``F()`` increments (no-op for zero deltas or a gone session).

    ``received``: valid frames accepted for analysis; ``dropped``: frames discarded by backpressure, rate limit or
    expiry; ``rejected``: invalid messages.
    """
    delta = {}
    if received:
        delta["frames_received"] = F("frames_received") + int(received)
    if dropped:
        delta["frames_dropped"] = F("frames_dropped") + int(dropped)
    if rejected:
        delta["frames_rejected"] = F("frames_rejected") + int(rejected)
    if delta:
        EmotionSession.objects.filter(pk=session_id).update(**delta)


def upload_source_allocate(*, session: EmotionSession) -> str:
    """Reserve the next upload source name of ``session``: ``"upload:<n>"`` with n = 1, 2, ... (atomic increment
    of ``session.uploads_count``)."""
    with transaction.atomic():
        EmotionSession.objects.filter(pk=session.pk).update(uploads_count=F("uploads_count") + 1)
        n = EmotionSession.objects.filter(pk=session.pk).values_list("uploads_count", flat=True).get()
    return f"upload:{n}"


# --------------------------------------------------------------------------- issue 12: housekeeping
def _publish_ended(session_id: int) -> None:
    """Tell the session's live pages that it ended (``session.ended`` event)."""
    event_publish(session_id, {"type": "session.ended", "session_id": session_id})


def sessions_end_idle(*, idle_s: float | None = None, now=None) -> list[int]:
    """End every running session that has had no new frame for ``idle_s`` seconds.

    Args:
        idle_s: idle time in seconds; ``None`` uses ``settings.FER_SESSION_IDLE_END_S``; 0 or less ends nothing.
        now: reference time (default: now).
    Returns:
        The ids of the sessions this call ended, ascending. Each is ended with one conditional ``UPDATE ... WHERE
        status = 'running'`` (a session ended meanwhile by its owner keeps its own end), its ``ended_at`` set to its
        last activity (the last stored frame's ``processed_at``, or its creation when it has none), so reports do not
        count the idle time; live clients get the same ``session.ended`` event as for a manual end.
    """
    idle_s = settings.FER_SESSION_IDLE_END_S if idle_s is None else idle_s
    if idle_s <= 0:
        return []
    ended = []
    for session_id, last_activity in session_list_idle(idle_s=idle_s, now=now):
        with transaction.atomic():
            changed = EmotionSession.objects.filter(pk=session_id, status=EmotionSession.Status.RUNNING).update(
                status=EmotionSession.Status.ENDED, ended_at=last_activity
            )
            if changed:
                transaction.on_commit(functools.partial(_publish_ended, session_id))
                ended.append(session_id)
    if ended:
        logger.info("ended %d idle session(s) after %s s without frames: %s", len(ended), idle_s, ended)
    return ended


def session_rename(*, session: EmotionSession, name: str) -> EmotionSession:
    """Give ``session`` a new ``name`` (stripped, 1..200 characters).

    Returns the saved session. Raises ``django.core.exceptions.ValidationError`` for an empty or too long name.
    """
    session.name = (name or "").strip()
    session.full_clean(exclude=["owner"])
    EmotionSession.objects.filter(pk=session.pk).update(name=session.name)
    return session


def session_delete(*, session: EmotionSession) -> dict[str, int]:
    """Delete an ended ``session`` with its frames, faces and timeline buckets, now, as the retention purge would.

    The export audit log survives (``ExportRecord.session`` becomes NULL; name, id and username are kept there).
    Returns ``{"frames": int, "faces": int, "buckets": int}``, the rows deleted. Raises
    ``django.core.exceptions.ValidationError`` for a running session (end it first).
    """
    if session.status == EmotionSession.Status.RUNNING:
        raise ValidationError("End the session before deleting it.")
    with transaction.atomic():
        faces = Face.objects.filter(session_id=session.pk).delete()[0]
        buckets = TimelineBucket.objects.filter(session_id=session.pk).delete()[0]
        with connection.cursor() as cursor:  # one DELETE: QuerySet.delete() would load every frame first
            cursor.execute(
                f"DELETE FROM {connection.ops.quote_name(Frame._meta.db_table)} WHERE session_id = %s", [session.pk]
            )
            frames = cursor.rowcount
        EmotionSession.objects.filter(pk=session.pk).delete()
    logger.info("session %s deleted by its owner: %d frames, %d faces", session.pk, frames, faces)
    return {"frames": frames, "faces": faces, "buckets": buckets}


def session_notice_code_ensure(*, session: EmotionSession) -> str:
    """The code of ``session``'s public participant-notice link (``/n/<code>/``), creating one when missing.

    Codes are 8 characters of an unambiguous alphabet (no 0/O, 1/l/I), random (``secrets``), unique: about 10^12
    possibilities, so a link cannot be guessed. Returns the code.
    """
    if session.notice_code:
        return str(session.notice_code)
    for _ in range(10):
        code = "".join(secrets.choice(NOTICE_ALPHABET) for _ in range(8))
        if not EmotionSession.objects.filter(notice_code=code).exists():
            updated = EmotionSession.objects.filter(pk=session.pk, notice_code__isnull=True).update(notice_code=code)
            session.refresh_from_db(fields=["notice_code"])
            if updated or session.notice_code:
                return str(session.notice_code)
    raise RuntimeError("could not allocate a unique notice code")


def session_settings_update(
    *,
    session: EmotionSession,
    operator_name: str | None = None,
    lawful_use_confirmed: bool | None = None,
    alerts_enabled: bool | None = None,
    alert_emotion: str | None = None,
    alert_threshold: float | None = None,
    alert_duration_s: int | None = None,
) -> EmotionSession:
    """Set the notice and alert settings of ``session``; arguments left ``None`` keep their value.

    ``lawful_use_confirmed=True`` records the time of the operator's confirmation (``lawful_use_confirmed_at``,
    kept from the first confirmation); ``alert_emotion``: ``"negative"`` or a label; ``alert_threshold``: share
    0.05..1; ``alert_duration_s``: 5..3600 s. Returns the saved session; raises ``ValidationError`` on bad values.
    """
    fields = []
    for name, value in (
        ("operator_name", operator_name),
        ("alerts_enabled", alerts_enabled),
        ("alert_emotion", alert_emotion),
        ("alert_threshold", alert_threshold),
        ("alert_duration_s", alert_duration_s),
    ):
        if value is not None:
            setattr(session, name, value.strip() if isinstance(value, str) else value)
            fields.append(name)
    if lawful_use_confirmed and session.lawful_use_confirmed_at is None:
        session.lawful_use_confirmed_at = timezone.now()
        fields.append("lawful_use_confirmed_at")
    session.full_clean(exclude=["owner"])
    if fields:
        session.save(update_fields=fields)
    return session
