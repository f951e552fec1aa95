"""Periodic maintenance: retention purge of session results (issue #4).

``FER_RETENTION_DAYS`` (0 = keep forever) decides how long a session's results are kept, counted from the end of
the session (its start while it has no end). Purging deletes the session with its frames, faces and timeline
buckets; the export audit log (``ExportRecord``) survives, with its ``session`` set to NULL and the session's name
and id kept in ``session_label`` (and the exporting user's name in ``username``).

Run by Celery beat (``CELERY_BEAT_SCHEDULE`` in settings: task ``sessions_app.purge_expired_sessions``, defined in
``sessions_app.tasks``) or by ``manage.py purge_sessions`` from a scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from sessions_app import selectors
from sessions_app.models import EmotionSession, Face, Frame, TimelineBucket

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed: counts of rows and the cutoff (sessions that ended before it were purged)."""

    cutoff: datetime | None
    sessions: int = 0
    frames: int = 0
    faces: int = 0
    buckets: int = 0


def _frames_delete(*, session_id: int) -> int:
    """Delete the frames of a session whose faces are already gone with one ``DELETE`` statement.

    ``QuerySet.delete()`` would first load every frame into memory to look for cascades (faces).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {connection.ops.quote_name(Frame._meta.db_table)} WHERE session_id = %s", [session_id]
        )
        return cursor.rowcount


def sessions_purge(*, days: int | None = None, now: datetime | None = None, dry_run: bool = False) -> PurgeResult:
    """Delete the results of every session older than the retention period.

    Args:
        days: retention in days; ``None`` uses ``settings.FER_RETENTION_DAYS``; 0 keeps everything.
        now: reference time (default: now).
        dry_run: count what would be deleted without deleting.
    Returns:
        ``PurgeResult`` with the numbers of deleted (or, in a dry run, deletable) rows.

    Each session is deleted in its own transaction (faces and buckets first, with single bulk ``DELETE``
    statements), so a huge backlog neither holds one long lock nor loads its rows into memory.
    """
    days = settings.FER_RETENTION_DAYS if days is None else days
    if days <= 0:
        return PurgeResult(cutoff=None)
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    ids = list(selectors.session_list_expired(days=days, now=now).order_by("pk").values_list("pk", flat=True))
    totals = {"sessions": 0, "frames": 0, "faces": 0, "buckets": 0}
    for session_id in ids:
        if dry_run:
            totals["faces"] += Face.objects.filter(session_id=session_id).count()
            totals["buckets"] += TimelineBucket.objects.filter(session_id=session_id).count()
            totals["frames"] += Frame.objects.filter(session_id=session_id).count()
            totals["sessions"] += 1
            continue
        with transaction.atomic():
            totals["faces"] += Face.objects.filter(session_id=session_id).delete()[0]
            totals["buckets"] += TimelineBucket.objects.filter(session_id=session_id).delete()[0]
            totals["frames"] += _frames_delete(session_id=session_id)
            totals["sessions"] += (
                EmotionSession.objects.filter(pk=session_id).delete()[1].get(EmotionSession._meta.label, 0)
            )
    result = PurgeResult(cutoff=cutoff, **totals)
    if result.sessions:
        logger.info(
            "retention purge%s: %d sessions, %d frames, %d faces older than %s",
            " (dry run)" if dry_run else "",
            result.sessions,
            result.frames,
            result.faces,
            cutoff.isoformat(),
        )
    return result
