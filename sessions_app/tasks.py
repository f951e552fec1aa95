"""Celery tasks: thin edges that call one service each. Nothing but Celery imports this module: services queue the
frame task by its name (``services.frames.ANALYZE_FRAME_TASK``).

Frames travel in the task message as base64 text inside the JSON body (no pickle); they are decoded in memory only
and never written anywhere. The recogniser is loaded once per worker process (warmed up in ``worker_process_init``).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import task_revoked, worker_process_init

from sessions_app.services.analysis import frame_analyze, recognizer_get
from sessions_app.services.frames import ANALYZE_FRAME_TASK, frame_dropped_record
from sessions_app.services.retention import sessions_purge

logger = logging.getLogger(__name__)

#: Celery name of the retention purge (``CELERY_BEAT_SCHEDULE`` in settings).
PURGE_TASK = "sessions_app.purge_expired_sessions"


@worker_process_init.connect
def _warm_up(**_kwargs) -> None:
    """Load the model when a prefork child starts, so the first frame is not slow."""
    try:
        recognizer_get()
    except Exception:
        logger.exception("could not load the emotion model at worker start")


@shared_task(name=ANALYZE_FRAME_TASK, ignore_result=True, acks_late=False)
def analyze_frame(
    *, session_id: int, source: str, sequence: int, captured_at_ms: float, data_b64: str, min_face_px: int | None = None
) -> None:
    """Decode, analyse and store one frame (``services.analysis.frame_analyze``); never raises for a bad frame."""
    frame_analyze(
        session_id=session_id,
        source=source,
        sequence=sequence,
        captured_at_ms=captured_at_ms,
        data_b64=data_b64,
        min_face_px=min_face_px,
    )


@task_revoked.connect
def _count_expired(sender=None, request=None, expired=False, **_kwargs) -> None:
    """An expired (stale) frame task is never run: count it as dropped and free the sender's in-flight slot.

    ``sender``: the task; ``request``: its ``celery.app.task.Context`` (``kwargs`` = the task's keyword arguments).
    """
    name = getattr(sender, "name", None) or getattr(request, "task", None)
    if request is None or name != ANALYZE_FRAME_TASK:
        return
    try:
        kw = getattr(request, "kwargs", None) or {}
        frame_dropped_record(
            session_id=int(kw["session_id"]),
            source=str(kw["source"]),
            sequence=int(kw["sequence"]),
            reason="expired" if expired else "revoked",
        )
    except Exception:
        logger.exception("could not record a dropped frame")


@shared_task(name=PURGE_TASK, ignore_result=True)
def purge_expired_sessions() -> dict:
    """Celery beat task: purge sessions older than ``FER_RETENTION_DAYS`` (``services.retention.sessions_purge``);
    returns the counts (for logs)."""
    result = sessions_purge()
    return {"sessions": result.sessions, "frames": result.frames, "faces": result.faces, "buckets": result.buckets}


#: Celery name of the idle-session check (``CELERY_BEAT_SCHEDULE`` in settings).
END_IDLE_TASK = "sessions_app.end_idle_sessions"


@shared_task(name=END_IDLE_TASK, ignore_result=True)
def end_idle_sessions() -> dict:
    """Celery beat task: end running sessions without frames for ``FER_SESSION_IDLE_END_S`` seconds
    (``services.sessions.sessions_end_idle``); returns ``{"ended": [session ids]}`` (for logs)."""
    from sessions_app.services.sessions import sessions_end_idle

    return {"ended": sessions_end_idle()}
