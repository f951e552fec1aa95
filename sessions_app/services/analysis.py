"""Worker side of a frame: decode it in memory, run the emotion recogniser, record the one outcome.

The recogniser (``inference.EmotionRecognizer``) is loaded once per worker process (``recognizer_get``); frames are
decoded in memory only and never written anywhere.

Camera frames go through the streaming pipeline (``inference.tracked_stream.TrackedStreamAnalyzer``): full detection
on keyframes (every ``settings.FER_STREAM_KEYFRAME_EVERY`` frames, on a scene change or a lost face), the cheap
follow stage in between, and anonymous tracks with smoothed probabilities (``inference.tracking``: box positions
only). Workers are stateless between frames, so each camera's small state (frame counters, the last face boxes, a
16-number scene signature, track numbers and their smoothed probabilities: no pixels, no identity, no embedding) is
kept in the shared cache for ``STREAM_STATE_TTL_S``. Two frames of one camera analysed at the same time by two
workers may both start from the same state; the later write wins (rarely, a face's track number restarts), and when
that state's keyframe period is due only the worker that claims it first runs the keyframe (``_keyframe_claim``).
"""

from __future__ import annotations

import base64
import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache

from inference.imageio import ImageDecodeError, decode_image
from sessions_app.services.frames import frame_analysis_record, frame_error_record

logger = logging.getLogger(__name__)

_recognizer = None
_stream_analyzer = None
_recognizer_lock = threading.Lock()

#: Seconds a camera's stream state is kept between frames (a camera that pauses longer starts on a keyframe).
STREAM_STATE_TTL_S = 60
#: Seconds a periodic-keyframe claim lasts if its worker dies before releasing it (a 1080p crowd keyframe takes
#: about 2 s of CPU on the machines measured; a stale claim only turns one periodic keyframe into a followed frame).
KEYFRAME_CLAIM_TTL_S = 10


def recognizer_get():
    """The process-wide ``inference.EmotionRecognizer``: ``settings.FER_MODEL_PATH`` (or the shipped model) and, for
    faces under ``settings.FER_SMALL_FACE_SIDE`` px, ``settings.FER_SMALL_FACE_MODEL_PATH`` (or the shipped
    small-face model), served with ``settings.FER_FLIP_TTA`` and ``settings.FER_TTA_MARGIN``, and the
    ``settings.FER_DETECTOR`` face detector.

    Raises ``inference.classifier.ModelLoadError`` (missing/unusable model) or ``ValueError`` (unknown detector).
    """
    global _recognizer
    if _recognizer is None:
        with _recognizer_lock:
            if _recognizer is None:
                from inference import EmotionClassifier, EmotionRecognizer, default_detector
                from inference.classifier import default_small_face_model_path

                serving = {"flip_tta": settings.FER_FLIP_TTA, "tta_margin": settings.FER_TTA_MARGIN}
                classifier = EmotionClassifier(settings.FER_MODEL_PATH or None, **serving)
                small = None
                if settings.FER_SMALL_FACE_SIDE > 0:
                    small_path = settings.FER_SMALL_FACE_MODEL_PATH or default_small_face_model_path()
                    small = EmotionClassifier(small_path, **serving)
                _recognizer = EmotionRecognizer(
                    classifier,
                    default_detector(settings.FER_DETECTOR or None),
                    small_face_classifier=small,
                    small_face_side=settings.FER_SMALL_FACE_SIDE,
                )
    return _recognizer


def stream_analyzer_get():
    """The process-wide ``inference.tracked_stream.TrackedStreamAnalyzer`` (streaming detection + anonymous tracks +
    smoothed probabilities) around ``recognizer_get()``, with ``settings.FER_STREAM_KEYFRAME_EVERY``."""
    global _stream_analyzer
    recognizer = recognizer_get()
    if _stream_analyzer is None or _stream_analyzer.stream.recognizer is not recognizer:
        from inference.tracked_stream import TrackedStreamAnalyzer

        _stream_analyzer = TrackedStreamAnalyzer(recognizer, keyframe_every=max(1, settings.FER_STREAM_KEYFRAME_EVERY))
    return _stream_analyzer


def stream_state_key(session_id: int, source: str) -> str:
    """Cache key of a camera's stream state."""
    return f"fer:stream-state:{int(session_id)}:{source}"


def keyframe_claim_key(session_id: int, source: str) -> str:
    """Cache key held while a worker runs a camera's periodic keyframe (``_keyframe_claim``)."""
    return f"fer:stream-keyframe:{int(session_id)}:{source}"


def _keyframe_claim(analyzer, image, state, *, session_id: int, source: str) -> tuple[bool, str | None]:
    """``(defer, claim)``: whether this frame must leave its due periodic keyframe to another worker, and the claim
    key this worker took (to release after the keyframe), if any. Two frames of one camera analysed at the same
    time start from the same state; when its period is due both would run the full detection (measured on a crowd
    camera: half the keyframes came in such pairs, 0.9 s of CPU each), so the first to claim runs it and the other
    follows. Never raises: without the cache or with a damaged state, no claim (the old behaviour)."""
    try:
        if not analyzer.periodic_keyframe_due(image, state):
            return False, None
        key = keyframe_claim_key(session_id, source)
        if cache.add(key, 1, timeout=KEYFRAME_CLAIM_TTL_S):
            return False, key
        return True, None
    except Exception:
        logger.warning("keyframe claim of %s unavailable", source, exc_info=True)
        return False, None


def _analyze(image, *, session_id: int, source: str, min_face_px: int | None = None) -> list:
    """Faces of ``image``: for camera frames the streaming pipeline with tracks (state in the cache; tracked faces
    as ``TrackedFace.to_dict()``; keyframes look for faces from ``min_face_px``), for uploads full detection of the
    frame alone."""
    if not source.startswith("camera:"):
        return recognizer_get().analyze(image)
    key = stream_state_key(session_id, source)
    try:
        state = cache.get(key)
    except Exception:
        logger.warning("stream state of %s unavailable: keyframe", source, exc_info=True)
        state = None
    analyzer = stream_analyzer_get()
    defer, claim = _keyframe_claim(analyzer, image, state, session_id=session_id, source=source)
    try:
        faces, new_state = analyzer.analyze(image, state, defer_periodic=defer, min_face_px=min_face_px)
    except ValueError:
        if state is None:
            raise
        faces, new_state = analyzer.analyze(image, None, min_face_px=min_face_px)  # an old or damaged state
    finally:
        if claim is not None:
            try:
                cache.delete(claim)
            except Exception:
                logger.warning("keyframe claim of %s not released (expires in %s s)", source, KEYFRAME_CLAIM_TTL_S)
    try:
        cache.set(key, new_state.to_dict(), timeout=STREAM_STATE_TTL_S)
    except Exception:
        logger.warning("could not keep the stream state of %s", source, exc_info=True)
    return [face.to_dict() for face in faces]


def frame_analyze(
    *,
    session_id: int,
    source: str,
    sequence: int,
    captured_at_ms: float,
    data_b64: str,
    min_face_px: int | None = None,
) -> None:
    """Decode, analyse and store one frame; never raises for a bad frame.

    ``captured_at_ms``: capture time on the server clock (ms since the epoch); ``data_b64``: the JPEG/PNG bytes,
    base64; ``min_face_px``: smallest face side a camera frame's keyframe looks for (``None``: every face; uploads
    always look for every face). Outcomes (exactly one per frame, see ``frames.frame_outcome_claim``): a stored frame
    and its ``frame.result`` event; or a ``frame.error`` event with code ``undecodable`` (bad image bytes),
    ``analysis_failed`` (the recogniser raised: model missing, broken input, a bug) or ``storage_failed``; nothing
    partial is stored and the worker keeps serving.
    """
    started = time.perf_counter()
    try:
        data = base64.b64decode(data_b64, validate=True)
        image = decode_image(data, max_width=settings.FER_MAX_FRAME_WIDTH, max_height=settings.FER_MAX_FRAME_HEIGHT)
    except (ImageDecodeError, ValueError) as exc:
        frame_error_record(session_id=session_id, source=source, sequence=sequence, code="undecodable", detail=str(exc))
        return
    try:
        faces = _analyze(image, session_id=session_id, source=source, min_face_px=min_face_px)
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
