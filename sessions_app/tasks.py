"""Celery tasks: thin wrappers that decode a frame, run the recogniser and call one service.

Frames travel in the task message as base64 text inside the JSON body (no pickle); they are decoded in memory only
and never written anywhere. The recogniser is loaded once per worker process (lazy singleton, warmed up in
``worker_process_init``).
"""

from __future__ import annotations

import base64
import logging
import threading
import time

from celery import shared_task
from celery.signals import task_revoked, worker_process_init
from django.conf import settings

from sessions_app import services

logger = logging.getLogger(__name__)

_recognizer = None
_recognizer_lock = threading.Lock()

ANALYZE_FRAME_TASK = "sessions_app.analyze_frame"


def get_recognizer():
    """The process-wide ``inference.EmotionRecognizer``: ``settings.FER_MODEL_PATH`` (or the shipped model), served
    with ``settings.FER_FLIP_TTA``, and the ``settings.FER_DETECTOR`` face detector."""
    global _recognizer
    if _recognizer is None:
        with _recognizer_lock:
            if _recognizer is None:
                from inference import EmotionClassifier, EmotionRecognizer, default_detector

                path = getattr(settings, "FER_MODEL_PATH", "") or None
                detector = default_detector(getattr(settings, "FER_DETECTOR", "") or None)
                _recognizer = EmotionRecognizer(EmotionClassifier(path, flip_tta=settings.FER_FLIP_TTA), detector)
    return _recognizer


@worker_process_init.connect
def _warm_up(**_kwargs) -> None:
    """Load the model when a prefork child starts, so the first frame is not slow."""
    try:
        get_recognizer()
    except Exception:  # noqa: BLE001 - the task will raise a clear error later
        logger.exception("could not load the emotion model at worker start")


def frame_analyze_enqueue(
    *, session_id: int, source: str, sequence: int, captured_at_ms: float, data: bytes, expires_s: float | None
) -> str:
    """Queue one frame for analysis; returns the Celery task id.

    ``data``: JPEG/PNG bytes (sent base64-encoded in the JSON task body); ``captured_at_ms``: capture time on the
    server clock, ms since the Unix epoch; ``expires_s``: seconds after which a not-yet-started task is discarded and
    counted as dropped (``None``: never, for uploads).
    """
    result = analyze_frame.apply_async(
        kwargs={
            "session_id": session_id,
            "source": source,
            "sequence": sequence,
            "captured_at_ms": captured_at_ms,
            "data_b64": base64.b64encode(data).decode("ascii"),
        },
        expires=expires_s,
        serializer="json",
        **({"queue": settings.FER_FRAME_QUEUE} if settings.FER_FRAME_QUEUE else {}),
    )
    return result.id


@shared_task(name=ANALYZE_FRAME_TASK, ignore_result=True, acks_late=False)
def analyze_frame(*, session_id: int, source: str, sequence: int, captured_at_ms: float, data_b64: str) -> None:
    """Decode, analyse and store one frame; never raises for a bad frame.

    ``captured_at_ms``: capture time on the server clock (ms since the epoch); ``data_b64``: the JPEG/PNG bytes,
    base64. Outcomes (exactly one per frame, see ``services.frame_outcome_claim``): a stored frame and its
    ``frame.result`` event; or a ``frame.error`` event with code ``undecodable`` (bad image bytes), ``analysis_failed``
    (the recogniser raised: model missing, broken input, a bug) or ``storage_failed``; nothing partial is stored and
    the worker keeps serving.
    """
    from inference.imageio import ImageDecodeError, decode_image

    started = time.perf_counter()
    try:
        data = base64.b64decode(data_b64, validate=True)
        image = decode_image(data, max_width=settings.FER_MAX_FRAME_WIDTH, max_height=settings.FER_MAX_FRAME_HEIGHT)
    except (ImageDecodeError, ValueError) as exc:
        services.frame_error_record(
            session_id=session_id, source=source, sequence=sequence, code="undecodable", detail=str(exc)
        )
        return
    try:
        faces = get_recognizer().analyze(image)
    except Exception as exc:  # noqa: BLE001 - one bad frame must not cost the client its slot or the worker its life
        logger.exception("analysis of frame %s:%s of session %s failed", source, sequence, session_id)
        services.frame_error_record(
            session_id=session_id,
            source=source,
            sequence=sequence,
            code="analysis_failed",
            detail=f"analysis failed: {type(exc).__name__}: {exc}",
        )
        return
    services.frame_analysis_record(
        session_id=session_id,
        source=source,
        sequence=sequence,
        captured_at_ms=captured_at_ms,
        width=image.shape[1],
        height=image.shape[0],
        processing_ms=(time.perf_counter() - started) * 1000.0,
        faces=faces,
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
        services.frame_dropped_record(
            session_id=int(kw["session_id"]),
            source=str(kw["source"]),
            sequence=int(kw["sequence"]),
            reason="expired" if expired else "revoked",
        )
    except Exception:  # noqa: BLE001 - never crash the worker on bookkeeping
        logger.exception("could not record a dropped frame")
