"""Write-side logic of emotion sessions: create, end, count frames, allocate upload sources."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from sessions_app.models import EmotionSession
from sessions_app.services.events import event_publish


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
