"""Write-side business logic of emotion sessions (HackSoftware styleguide "services").

Result events: after a frame's results are committed, a small JSON event goes to the channel-layer group
``session_<id>`` (``session_group_name``); the stream consumers and dashboard viewers of that session forward it
to their browsers. Frames themselves never travel through the channel layer (they go to Celery as task payload).

Event shapes (``type`` is the Channels handler name):

- ``frame.result``: ``{"source", "sequence", "captured_at_ms", "offset_s", "width", "height", "processing_ms",
  "face_count", "faces": [{"box": [x, y, w, h], "label", "score", "probabilities": {label: p}}]}``
- ``frame.dropped``: ``{"source", "sequence", "reason": "expired" | "revoked"}`` (the task never ran)
- ``frame.error``: ``{"source", "sequence", "code", "detail"}`` (the worker could not decode, analyse or store the
  frame: ``undecodable``, ``analysis_failed``, ``storage_failed``)

Each frame handed to a worker has exactly one outcome, claimed with ``frame_outcome_claim`` (see there).
- ``session.ended``: ``{"session_id"}``
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from inference.labels import LABELS
from sessions_app.models import PROBABILITY_FIELDS, SUM_FIELDS, EmotionSession, Face, Frame, TimelineBucket

logger = logging.getLogger(__name__)

#: Optional 16-byte header in front of a binary frame message: ``b"FRM1"``, uint32 sequence, float64 client capture
#: time (ms since the Unix epoch), all big-endian. Without it the server numbers frames and uses the receive time.
FRAME_HEADER = struct.Struct(">4sId")
FRAME_HEADER_MAGIC = b"FRM1"

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FrameRejected(ValueError):
    """A frame message that must not be analysed. ``code`` is a stable machine-readable reason:
    ``binary_expected``, ``empty``, ``too_large``, ``bad_header``, ``not_an_image``, ``truncated``,
    ``too_big_dimensions``, ``undecodable``."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class FrameMessage:
    """A validated frame message: image bytes plus optional client sequence / capture time (ms since epoch)."""

    data: bytes
    width: int
    height: int
    sequence: int | None
    captured_at_ms: float | None


def session_group_name(session_id: int) -> str:
    """Channel-layer group of a session's result events."""
    return f"session_{int(session_id)}"


def _publish(session_id: int, event: dict) -> None:
    """Send ``event`` to the session's group; failures are logged, never raised (results are already stored)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group_name(session_id), event)
    except Exception:  # noqa: BLE001 - a dead channel layer must not fail a stored frame
        logger.exception("could not publish %s for session %s", event.get("type"), session_id)


# --------------------------------------------------------------------------------------------------- sessions
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
            transaction.on_commit(lambda: _publish(sid, {"type": "session.ended", "session_id": sid}))
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


# ------------------------------------------------------------------------------------------------ frame input
def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF segment; raises ``FrameRejected``."""
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise FrameRejected("not_an_image", "corrupt JPEG: marker expected")
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in (0x01, *range(0xD0, 0xD8)):
            continue
        if marker == 0xD9 or i + 2 > n:
            break
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise FrameRejected("not_an_image", "corrupt JPEG segment length")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return width, height
        i += length
    raise FrameRejected("truncated", "truncated JPEG: no frame header found")


def frame_validate(data, *, max_bytes: int | None = None) -> FrameMessage:
    """Check one WebSocket frame message cheaply, without decoding pixels.

    ``data``: the message payload (``bytes``; ``str`` means a text message). Accepts an optional ``FRAME_HEADER``
    prefix, then a JPEG (must end with the EOI marker) or PNG of at most ``settings.FER_MAX_FRAME_BYTES`` bytes and
    ``FER_MAX_FRAME_WIDTH`` x ``FER_MAX_FRAME_HEIGHT`` pixels. Returns a ``FrameMessage``; raises ``FrameRejected``.
    """
    if not isinstance(data, bytes | bytearray):
        raise FrameRejected("binary_expected", "send frames as binary JPEG/PNG messages, not text")
    data = bytes(data)
    sequence = captured_at_ms = None
    if data[:4] == FRAME_HEADER_MAGIC:
        if len(data) < FRAME_HEADER.size:
            raise FrameRejected("bad_header", "frame header is shorter than 16 bytes")
        _, sequence, captured_at_ms = FRAME_HEADER.unpack_from(data)
        data = data[FRAME_HEADER.size :]
        if captured_at_ms != captured_at_ms or captured_at_ms < 0:  # NaN or negative
            captured_at_ms = None
    limit = max_bytes or settings.FER_MAX_FRAME_BYTES
    if not data:
        raise FrameRejected("empty", "empty frame")
    if len(data) > limit:
        raise FrameRejected("too_large", f"frame of {len(data)} bytes exceeds the limit of {limit} bytes")
    if data.startswith(JPEG_MAGIC):
        if not data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9":
            raise FrameRejected("truncated", "truncated JPEG: no end-of-image marker")
        width, height = _jpeg_size(data)
    elif data.startswith(PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise FrameRejected("truncated", "truncated PNG: no IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
        if b"IEND" not in data[-12:]:
            raise FrameRejected("truncated", "truncated PNG: no IEND chunk")
    else:
        raise FrameRejected("not_an_image", "not a JPEG or PNG image")
    if width <= 0 or height <= 0:
        raise FrameRejected("not_an_image", "image has no pixels")
    max_w, max_h = settings.FER_MAX_FRAME_WIDTH, settings.FER_MAX_FRAME_HEIGHT
    if width > max_w or height > max_h:
        raise FrameRejected(
            "too_big_dimensions", f"image of {width}x{height} pixels exceeds the limit of {max_w}x{max_h}"
        )
    return FrameMessage(data=data, width=width, height=height, sequence=sequence, captured_at_ms=captured_at_ms)


# ----------------------------------------------------------------------------------------------- frame results
def _face_values(face) -> tuple[tuple[int, int, int, int], str, float, list[float]]:
    """(box, label, score, probabilities in LABELS order) of a ``FaceResult`` or its ``to_dict()`` form."""
    if isinstance(face, dict):
        box, label, score, probs = face["box"], face["label"], face["score"], face["probabilities"]
    else:
        box, label, score, probs = face.box, face.label, face.score, face.probabilities
    if isinstance(probs, dict):
        probs = [float(probs[label_]) for label_ in LABELS]
    else:
        probs = [float(p) for p in probs]
    if len(probs) != len(LABELS):
        raise ValueError(f"expected {len(LABELS)} probabilities, got {len(probs)}")
    x, y, w, h = (max(0, int(v)) for v in box)
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}")
    return (x, y, w, h), str(label), float(score), probs


def frame_result_event(frame: Frame, faces: Sequence[Face]) -> dict:
    """The ``frame.result`` channel-layer event (small JSON, no pixels) for a stored frame and its faces."""
    return {
        "type": "frame.result",
        "session_id": frame.session_id,
        "source": frame.source,
        "sequence": frame.sequence,
        "captured_at_ms": round(frame.captured_at.timestamp() * 1000.0, 1),
        "offset_s": round(frame.offset_s, 3),
        "width": frame.width,
        "height": frame.height,
        "processing_ms": round(frame.processing_ms, 1),
        "face_count": frame.face_count,
        "faces": [
            {
                "box": [f.x, f.y, f.w, f.h],
                "label": f.label,
                "score": round(f.score, 4),
                "probabilities": {label: round(p, 4) for label, p in zip(LABELS, f.probabilities, strict=True)},
            }
            for f in faces
        ],
    }


def frame_result_store(
    *,
    session: EmotionSession,
    source: str,
    sequence: int,
    captured_at: dt.datetime,
    width: int,
    height: int,
    processing_ms: float,
    faces: Iterable,
    publish: bool = True,
) -> Frame:
    """Store one analysed frame in one transaction and publish its result event after commit.

    ``faces``: ``inference.FaceResult`` objects (or their ``to_dict()`` dicts): box ``(x, y, w, h)`` in pixels of
    the ``width`` x ``height`` frame, label, score, 7 probabilities in ``LABELS`` order. ``captured_at``: aware
    datetime; the frame's ``offset_s`` is seconds since ``session.created_at`` (clamped at 0). ``processing_ms``:
    decode + analysis time in ms.

    Writes the ``Frame``, its ``Face`` rows, the 1-second ``TimelineBucket`` (atomic ``F()`` increments) and
    ``session.frames_processed``. A duplicate ``(session, source, sequence)`` is ignored: the stored frame is returned
    unchanged and nothing is published. Raises ``ValueError`` on malformed faces (nothing stored).
    Returns the ``Frame``.
    """
    parsed = [_face_values(f) for f in faces]  # validate everything before writing anything
    offset_s = max(0.0, (captured_at - session.created_at).total_seconds())
    second = int(offset_s)
    with transaction.atomic():
        try:
            with transaction.atomic():
                frame = Frame.objects.create(
                    session=session,
                    source=source[:64],
                    sequence=int(sequence),
                    captured_at=captured_at,
                    offset_s=offset_s,
                    processing_ms=float(processing_ms),
                    width=int(width),
                    height=int(height),
                    face_count=len(parsed),
                )
        except IntegrityError:
            existing = Frame.objects.filter(session=session, source=source[:64], sequence=int(sequence)).first()
            if existing is None:  # not a duplicate: the session is gone or values are invalid
                raise
            return existing
        face_rows = [
            Face(
                frame=frame,
                session=session,
                x=x,
                y=y,
                w=w,
                h=h,
                label=label,
                score=score,
                **dict(zip(PROBABILITY_FIELDS, probs, strict=True)),
            )
            for (x, y, w, h), label, score, probs in parsed
        ]
        Face.objects.bulk_create(face_rows)
        sums = [sum(p[3][i] for p in parsed) for i in range(len(LABELS))]
        bucket, _ = TimelineBucket.objects.get_or_create(session=session, second=second)
        TimelineBucket.objects.filter(pk=bucket.pk).update(
            frames=F("frames") + 1,
            faces=F("faces") + len(parsed),
            **{field: F(field) + s for field, s in zip(SUM_FIELDS, sums, strict=True)},
        )
        EmotionSession.objects.filter(pk=session.pk).update(frames_processed=F("frames_processed") + 1)
        if publish:
            event = frame_result_event(frame, face_rows)
            transaction.on_commit(lambda: _publish(session.pk, event))
    return frame


#: Seconds a worker's outcome claim of a frame is remembered (well beyond the consumer's lost deadline,
#: ``FER_FRAME_TASK_EXPIRES_S + streaming.LOST_GRACE_S`` after dispatch).
FRAME_CLAIM_TTL_S = 600
#: Seconds a consumer's "lost" claim is remembered: a worker reaching the frame's task later discards it.
FRAME_LOST_CLAIM_TTL_S = 6 * 3600


def frame_outcome_claim(*, session: EmotionSession, source: str, sequence: int, outcome: str) -> bool:
    """Claim the single outcome of the frame ``(session, source, sequence)``; ``True`` for the first claimant only.

    Every frame sent to a worker ends exactly once: the worker claims it before recording ``"result"``,
    ``"error"`` or ``"expired"``/``"revoked"``; the stream consumer claims ``"lost"`` before counting an overdue frame
    as dropped. Whoever comes second records nothing (and publishes nothing), so a result arriving after the frame
    was declared lost is not stored, and a lost frame whose answer is on its way is not counted twice.

    ``outcome``: what the claimant will record (``"result"``, ``"error"``, ``"expired"``, ``"revoked"``, ``"lost"``).
    Atomic ``cache.add`` (Redis ``SET NX EX``) on the shared cache; the key includes the session's creation time, so
    a recreated database reusing session ids never meets old claims. If the cache is unreachable the claim is granted
    (logged): a frame may then be counted twice, but never silently not at all.
    """
    from django.core.cache import cache

    key = f"fer:frame-outcome:{session.pk}:{session.created_at.timestamp():.6f}:{source}:{int(sequence)}"
    ttl = FRAME_LOST_CLAIM_TTL_S if outcome == "lost" else FRAME_CLAIM_TTL_S
    try:
        return bool(cache.add(key, outcome, timeout=ttl))
    except Exception:  # noqa: BLE001 - counting must go on without the cache
        logger.warning("frame outcome claim of %s failed: granted", key, exc_info=True)
        return True


def _claim_by_id(*, session_id: int, source: str, sequence: int, outcome: str) -> bool:
    """``frame_outcome_claim`` for a session given by id; ``False`` when the session is gone."""
    from sessions_app import selectors

    session = selectors.session_get_by_id(session_id=session_id)
    return session is not None and frame_outcome_claim(
        session=session, source=source, sequence=sequence, outcome=outcome
    )


def frame_analysis_record(
    *,
    session_id: int,
    source: str,
    sequence: int,
    captured_at_ms: float,
    width: int,
    height: int,
    processing_ms: float,
    faces: Iterable,
) -> Frame | None:
    """Worker side: record an analysed frame of the task ``(session_id, source, sequence)``.

    ``captured_at_ms``: capture time on the server clock, ms since the epoch; ``width`` x ``height``: the analysed
    image in pixels; ``processing_ms``: decode + analysis time; ``faces``: the recogniser's ``FaceResult`` list.
    Claims the frame's outcome first (``frame_outcome_claim``); then stores and publishes it with
    ``frame_result_store``. Returns the ``Frame``, or ``None`` when the session is gone or the stream already declared
    the frame lost (nothing stored or published). If storing fails (malformed faces, database error) nothing partial
    is kept and a ``frame.error`` with code ``storage_failed`` is published instead.
    """
    from sessions_app import selectors

    session = selectors.session_get_by_id(session_id=session_id)
    if session is None:
        logger.info("session %s vanished before frame %s:%s was stored", session_id, source, sequence)
        return None
    if not frame_outcome_claim(session=session, source=source, sequence=sequence, outcome="result"):
        logger.info("frame %s:%s of session %s came back after it was declared lost", source, sequence, session_id)
        return None
    try:
        return frame_result_store(
            session=session,
            source=source,
            sequence=sequence,
            captured_at=dt.datetime.fromtimestamp(float(captured_at_ms) / 1000.0, tz=dt.UTC),
            width=width,
            height=height,
            processing_ms=processing_ms,
            faces=faces,
        )
    except Exception as exc:  # noqa: BLE001 - the transaction rolled back: report, keep the worker alive
        logger.exception("could not store frame %s:%s of session %s", source, sequence, session_id)
        frame_error_record(
            session_id=session_id,
            source=source,
            sequence=sequence,
            code="storage_failed",
            detail=f"{type(exc).__name__}: {exc}",
            claim=False,
        )
        return None


def frame_dropped_record(
    *, session_id: int, source: str, sequence: int, reason: str, publish: bool = True, claim: bool = True
) -> bool:
    """Count one dispatched frame that was never analysed (``reason``: ``"expired"`` or ``"revoked"`` task) and tell
    the clients with a ``frame.dropped`` event so the sender frees its in-flight slot.

    ``claim``: claim the frame's outcome first (``frame_outcome_claim``); when the stream already declared it lost
    (or the session is gone), nothing is counted or published. Returns whether the drop was recorded.
    """
    if claim and not _claim_by_id(session_id=session_id, source=source, sequence=sequence, outcome=reason):
        return False
    session_counters_add(session_id=session_id, dropped=1)
    if publish:
        _publish(
            session_id,
            {
                "type": "frame.dropped",
                "session_id": session_id,
                "source": source,
                "sequence": sequence,
                "reason": reason,
            },
        )
    return True


def frame_error_record(
    *, session_id: int, source: str, sequence: int, code: str, detail: str, claim: bool = True
) -> bool:
    """Count one frame the worker could not analyse as rejected (nothing stored) and publish a ``frame.error``
    ``{"source", "sequence", "code", "detail"}`` so the sender frees its in-flight slot.

    ``code``: ``"undecodable"`` (bad image bytes), ``"analysis_failed"`` (the recogniser raised) or
    ``"storage_failed"``; ``detail``: human-readable, cut to 300 characters. ``claim``: as in
    ``frame_dropped_record``. Returns whether the error was recorded.
    """
    if claim and not _claim_by_id(session_id=session_id, source=source, sequence=sequence, outcome="error"):
        return False
    session_counters_add(session_id=session_id, rejected=1)
    _publish(
        session_id,
        {
            "type": "frame.error",
            "session_id": session_id,
            "source": source,
            "sequence": sequence,
            "code": code,
            "detail": detail[:300],
        },
    )
    return True


# -------------------------------------------------------------------------------------------------- uploads
class UploadRejected(ValueError):
    """An uploaded file that is neither a decodable image nor a readable video (message for the user)."""


def _fit_jpeg(image, *, quality: int = 90) -> tuple[bytes, int, int]:
    """Downscale a BGR image to the frame limits (keeping its aspect) and encode it as JPEG in memory."""
    import cv2

    h, w = image.shape[:2]
    scale = min(1.0, settings.FER_MAX_FRAME_WIDTH / w, settings.FER_MAX_FRAME_HEIGHT / h)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UploadRejected("could not re-encode the image")
    return buf.tobytes(), image.shape[1], image.shape[0]


def upload_process(*, session: EmotionSession, uploaded_file, max_frames: int | None = None) -> dict:
    """Queue an uploaded photo or short video of ``session`` for analysis by the same worker path as live frames.

    ``uploaded_file``: a Django ``UploadedFile`` (at most ``settings.FER_MAX_UPLOAD_BYTES``). A photo becomes one
    frame; a video is sampled at the session's ``target_fps`` (at most ``max_frames``, default
    ``settings.FER_MAX_UPLOAD_FRAMES``), each frame's capture time = upload time + its offset in the video. Frames
    larger than the frame limits are downscaled. Video bytes are only read through a temporary file that is deleted
    right after sampling (OpenCV cannot demux from memory); nothing is kept.

    Returns ``{"source": "upload:<n>", "kind": "image" | "video", "frames": int}``. Raises ``UploadRejected``.
    """
    import os
    import tempfile

    import cv2

    from inference.imageio import ImageDecodeError, decode_image, sniff_format
    from sessions_app.tasks import frame_analyze_enqueue

    max_frames = max_frames or settings.FER_MAX_UPLOAD_FRAMES
    if uploaded_file.size > settings.FER_MAX_UPLOAD_BYTES:
        raise UploadRejected(f"file larger than {settings.FER_MAX_UPLOAD_BYTES} bytes")
    uploaded_at = timezone.now()
    head = uploaded_file.read(16)
    uploaded_file.seek(0)
    if sniff_format(head) is not None:
        try:
            image = decode_image(uploaded_file.read())
        except ImageDecodeError as exc:
            raise UploadRejected(str(exc)) from exc
        data, _, _ = _fit_jpeg(image)
        source = upload_source_allocate(session=session)
        session_counters_add(session_id=session.pk, received=1)
        frame_analyze_enqueue(
            session_id=session.pk,
            source=source,
            sequence=0,
            captured_at_ms=uploaded_at.timestamp() * 1000.0,
            data=data,
            expires_s=None,
        )
        return {"source": source, "kind": "image", "frames": 1}

    path = getattr(uploaded_file, "temporary_file_path", lambda: None)()
    tmp = None
    try:
        if path is None:
            tmp = tempfile.NamedTemporaryFile(prefix="fer-upload-", suffix=".bin", delete=False)  # noqa: SIM115
            for chunk in uploaded_file.chunks():
                tmp.write(chunk)
            tmp.close()
            path = tmp.name
        cap = cv2.VideoCapture(path)
        try:
            if not cap.isOpened():
                raise UploadRejected("not a JPEG/PNG photo or a readable video file")
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            if not (0.1 < fps < 1000):
                fps = 25.0
            step_s = 1.0 / max(0.1, session.target_fps)
            frames: list[tuple[float, bytes]] = []
            index, next_t = 0, 0.0
            while len(frames) < max_frames:
                ok, image = cap.read()
                if not ok:
                    break
                t = index / fps
                index += 1
                if t + 1e-6 < next_t:
                    continue
                next_t += step_s
                data, _, _ = _fit_jpeg(image, quality=85)
                frames.append((t, data))
        finally:
            cap.release()
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    if not frames:
        raise UploadRejected("not a JPEG/PNG photo or a readable video file (no frames decoded)")
    source = upload_source_allocate(session=session)
    session_counters_add(session_id=session.pk, received=len(frames))
    base_ms = uploaded_at.timestamp() * 1000.0
    for sequence, (t, data) in enumerate(frames):
        frame_analyze_enqueue(
            session_id=session.pk,
            source=source,
            sequence=sequence,
            captured_at_ms=base_ms + t * 1000.0,
            data=data,
            expires_s=None,
        )
    return {"source": source, "kind": "video", "frames": len(frames)}
