"""Worker side of a frame: decode it in memory, run the emotion recogniser, record the one outcome.

The recogniser (``inference.EmotionRecognizer``) is loaded once per worker process (``recognizer_get``); frames are
decoded in memory only and never written anywhere.
"""

from __future__ import annotations

import base64
import logging
import threading
import time

from django.conf import settings

from inference.imageio import ImageDecodeError, decode_image
from sessions_app.services.frames import frame_analysis_record, frame_error_record

logger = logging.getLogger(__name__)

_recognizer = None
_recognizer_lock = threading.Lock()


def recognizer_get():
    """The process-wide ``inference.EmotionRecognizer``: ``settings.FER_MODEL_PATH`` (or the shipped model), served
    with ``settings.FER_FLIP_TTA``, and the ``settings.FER_DETECTOR`` face detector.

    Raises ``inference.classifier.ModelLoadError`` (missing/unusable model) or ``ValueError`` (unknown detector).
    """
    global _recognizer
    if _recognizer is None:
        with _recognizer_lock:
            if _recognizer is None:
                from inference import EmotionClassifier, EmotionRecognizer, default_detector

                classifier = EmotionClassifier(settings.FER_MODEL_PATH or None, flip_tta=settings.FER_FLIP_TTA)
                _recognizer = EmotionRecognizer(classifier, default_detector(settings.FER_DETECTOR or None))
    return _recognizer


def frame_analyze(*, session_id: int, source: str, sequence: int, captured_at_ms: float, data_b64: str) -> None:
    """Decode, analyse and store one frame; never raises for a bad frame.

    ``captured_at_ms``: capture time on the server clock (ms since the epoch); ``data_b64``: the JPEG/PNG bytes,
    base64. Outcomes (exactly one per frame, see ``frames.frame_outcome_claim``): a stored frame and its
    ``frame.result`` event; or a ``frame.error`` event with code ``undecodable`` (bad image bytes), ``analysis_failed``
    (the recogniser raised: model missing, broken input, a bug) or ``storage_failed``; nothing partial is stored and
    the worker keeps serving.
    """
    started = time.perf_counter()
    try:
        data = base64.b64decode(data_b64, validate=True)
        image = decode_image(data, max_width=settings.FER_MAX_FRAME_WIDTH, max_height=settings.FER_MAX_FRAME_HEIGHT)
    except (ImageDecodeError, ValueError) as exc:
        frame_error_record(session_id=session_id, source=source, sequence=sequence, code="undecodable", detail=str(exc))
        return
    try:
        faces = recognizer_get().analyze(image)
    except Exception as exc:
        logger.exception("analysis of frame %s:%s of session %s failed", source, sequence, session_id)
        frame_error_record(
            session_id=session_id,
            source=source,
            sequence=sequence,
            code="analysis_failed",
            detail=f"analysis failed: {type(exc).__name__}: {exc}",
        )
        return
    frame_analysis_record(
        session_id=session_id,
        source=source,
        sequence=sequence,
        captured_at_ms=captured_at_ms,
        width=image.shape[1],
        height=image.shape[0],
        processing_ms=(time.perf_counter() - started) * 1000.0,
        faces=faces,
    )
