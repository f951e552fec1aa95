"""Write-side logic of frames: validation of camera messages, queueing for analysis, storing results, and the
exactly-once outcome of every frame handed to a worker (``frame_outcome_claim``).

Event shapes are in ``sessions_app.services.events``. Frames are queued by task *name* (``ANALYZE_FRAME_TASK``),
so this module never imports the Celery task module.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import cast

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Field

from inference.imageio import FRAME_HEADER, FRAME_HEADER_MAGIC, FrameMessage, FrameRejected, validate_frame
from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import (
    PROBABILITY_FIELDS,
    SMOOTHED_FIELDS,
    SUM_FIELDS,
    EmotionSession,
    Face,
    Frame,
    TimelineBucket,
)
from sessions_app.services.events import cameras_wake, event_publish
from sessions_app.services.sessions import session_counters_add
from sessions_app.services.tracks import upload_outcome_count

logger = logging.getLogger(__name__)

__all__ = [
    "ANALYZE_FRAME_TASK",
    "FRAME_HEADER",
    "FRAME_HEADER_MAGIC",
    "FrameMessage",
    "FrameRejected",
    "frame_analysis_record",
    "frame_analyze_enqueue",
    "frame_dropped_record",
    "frame_error_record",
    "frame_live_dispatch",
    "frame_outcome_claim",
    "frame_result_event",
    "frame_result_store",
    "frame_validate",
]

#: Celery name of the frame analysis task (``sessions_app.tasks.analyze_frame``).
ANALYZE_FRAME_TASK = "sessions_app.analyze_frame"

#: Redis sorted set of the live frames admitted to analysis and not yet answered (member: token, score: admission
#: time), shared by every daphne process; one per live queue (the workers consuming it are the capacity).
ADMISSION_KEY_PREFIX = "fer:admission:"


def _admission_key() -> str:
    return ADMISSION_KEY_PREFIX + settings.FER_LIVE_QUEUE


# Atomic fair admission. KEYS: in-flight tokens (score: admission time), waiting cameras (score: since when they
# wait), their last try (score: time), the arrival time of each waiting camera's frame. ARGV: reclaim-before time,
# slots, now, token, camera, give-up-before time, this frame's arrival time, fresh-after time, scan limit.
# Forget admissions older than the reclaim age (a crashed process's) and cameras that stopped trying. A free slot goes
# to the camera first in line (first come, first served across cameras, so a camera at 10 fps cannot starve one at
# 2 fps) among those holding a fresh frame (received after fresh-after); only when no waiting camera has one does it
# go to the first in line with an older frame. A camera keeps its place while its frames are old, so its next fresh
# frame takes the next free slot. The line is scanned from its head, at most scan-limit cameras deep.
_ADMIT_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[6])
for _, camera in ipairs(gone) do
  redis.call('ZREM', KEYS[2], camera)
  redis.call('ZREM', KEYS[3], camera)
  redis.call('ZREM', KEYS[4], camera)
end
local camera = ARGV[5]
local fresh_after = tonumber(ARGV[8])
local fresh = tonumber(ARGV[7]) > fresh_after
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  local ahead = 0
  if not fresh then
    ahead = redis.call('ZCOUNT', KEYS[4], '(' .. ARGV[8], '+inf')
  end
  local rank = redis.call('ZRANK', KEYS[2], camera) or redis.call('ZCARD', KEYS[2])
  local stop = math.min(rank, tonumber(ARGV[9]))
  local i = 0
  while ahead < free and i < stop do
    local chunk = redis.call('ZRANGE', KEYS[2], i, math.min(i + 15, stop - 1))
    local at = redis.call('ZMSCORE', KEYS[4], unpack(chunk))
    for j = 1, #chunk do
      if (at[j] and tonumber(at[j]) > fresh_after or false) == fresh then
        ahead = ahead + 1
      end
    end
    i = i + #chunk
  end
  if ahead < free then
    redis.call('ZREM', KEYS[2], camera)
    redis.call('ZREM', KEYS[3], camera)
    redis.call('ZREM', KEYS[4], camera)
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
    return 1
  end
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], camera)
redis.call('ZADD', KEYS[3], ARGV[3], camera)
redis.call('ZADD', KEYS[4], ARGV[7], camera)
return 0
"""
# Release. KEYS: in-flight tokens, waiting cameras, their frames' arrival times. ARGV: token, slots, fresh-after time,
# scan limit. Returns the cameras the admit rule would give the slots now free to (to be woken): first in line with
# a fresh frame, then first in line.
_RELEASE_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then
  return {}
end
local fresh_after = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local chosen, older = {}, {}
local i = 0
while #chosen < free and i < limit do
  local chunk = redis.call('ZRANGE', KEYS[2], i, math.min(i + 15, limit - 1))
  if #chunk == 0 then
    break
  end
  local at = redis.call('ZMSCORE', KEYS[3], unpack(chunk))
  for j = 1, #chunk do
    if at[j] and tonumber(at[j]) > fresh_after then
      if #chosen < free then
        chosen[#chosen + 1] = chunk[j]
      end
    elseif #older < free then
      older[#older + 1] = chunk[j]
    end
  end
  i = i + #chunk
end
for _, camera in ipairs(older) do
  if #chosen >= free then
    break
  end
  chosen[#chosen + 1] = camera
end
return chosen
"""
#: Seconds after its last try that a waiting camera loses its place in the admission queue (it disconnected).
ADMISSION_GIVE_UP_S = 1.0
#: How deep into the line of waiting cameras one admission looks for cameras ahead with fresh frames (bounds the
#: script's work with hundreds of cameras; a camera deeper than this is counted as if nothing fresh lay between).
ADMISSION_SCAN_LIMIT = 64
_redis_client = None
_admit_script = None
_release_script = None


def _admission_redis():
    """The process's Redis client for admission (``settings.REDIS_URL``) and the registered admit script."""
    global _redis_client, _admit_script, _release_script
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _admit_script = _redis_client.register_script(_ADMIT_LUA)
        _release_script = _redis_client.register_script(_RELEASE_LUA)
    return _redis_client, _admit_script


def _admission_keys() -> list[str]:
    """In-flight tokens, waiting cameras, their last try, their frames' arrival times (Redis sorted sets)."""
    key = _admission_key()
    return [key, key + ":waiting", key + ":tried", key + ":frame-at"]


def frame_admission_token(session_id: int, source: str, sequence: int) -> str:
    """The admission token of a live frame: ``"<session id>:<source>:<sequence>"``."""
    return f"{int(session_id)}:{source}:{int(sequence)}"


def frame_admission_acquire(*, token: str, waited_s: float = 0.0) -> bool:
    """Admit one live frame to analysis if the whole system has room: fewer than ``settings.FER_ANALYSIS_SLOTS`` live
    frames admitted and not yet answered, across all cameras and daphne processes (one atomic Redis script).

    Bounded admission keeps the broker queue short under overload, so frames that are analysed are fresh and
    frame-to-result latency stays near (slots / worker throughput) instead of growing with the number of cameras;
    frames not admitted wait in their stream's pending slot (latest frame wins) and are offered again. Admissions
    older than ``FER_FRAME_TASK_EXPIRES_S + 10`` s (a process that died) are reclaimed.

    Fair share, fresh frames first: when cameras wait, a free slot goes to the camera that has waited longest
    (first come, first served across cameras; a camera stops holding its place ``ADMISSION_GIVE_UP_S`` after its
    last try) among those whose waiting frame is fresh, received less than ``settings.FER_ADMISSION_FRESH_S`` ago;
    a frame older than that gets a slot only when no waiting camera has a fresh one (no slot idles while frames
    wait). Under overload a camera's frame may wait until its next frame replaces it (latest frame wins); giving
    the slot to a fresh frame instead of such an aged one serves the same number of frames, but younger, and the
    camera keeps its place, so its next frame takes the next free slot. Every camera still gets its turn whatever
    its frame rate.

    ``waited_s``: seconds since the server received the frame. Freshness counts from arrival, not from the client's
    capture time, so a camera on a jittery network (frames arriving later than its fastest ones) is not taken for
    one with old frames and passed over. Fails open (admits, logged) when Redis cannot be reached: the broker, on
    the same Redis, then refuses the frame anyway.
    """
    client, script = _admission_redis()
    now = time.time()
    reclaim_before = now - float(settings.FER_FRAME_TASK_EXPIRES_S) - 10.0
    camera = token.rsplit(":", 1)[0]
    frame_at = now - max(0.0, float(waited_s))
    try:
        slots = int(settings.FER_ANALYSIS_SLOTS)
        fresh_after = now - float(settings.FER_ADMISSION_FRESH_S)
        args = [reclaim_before, slots, now, token, camera, now - ADMISSION_GIVE_UP_S, frame_at, fresh_after,
                ADMISSION_SCAN_LIMIT]  # fmt: skip
        return bool(script(keys=_admission_keys(), args=args))
    except Exception:
        logger.warning("admission check failed: admitted", exc_info=True)
        return True


def frame_admission_release(*, token: str) -> None:
    """Give the analysis slot of a live frame back (its answer is known: result, error, expiry, lost), and wake the
    cameras the admission rule gives the slots now free to (``events.cameras_wake``: first in line with a fresh
    frame, see ``frame_admission_acquire``; they retry at once, so a slot does not idle until their next timed
    retry). Idempotent; a no-op for frames that never held one (uploads). Never raises."""
    _admission_redis()
    assert _release_script is not None
    key, waiting_key, _, frame_at_key = _admission_keys()
    try:
        fresh_after = time.time() - float(settings.FER_ADMISSION_FRESH_S)
        waiting = _release_script(
            keys=[key, waiting_key, frame_at_key],
            args=[token, int(settings.FER_ANALYSIS_SLOTS), fresh_after, ADMISSION_SCAN_LIMIT],
        )
    except Exception:
        logger.warning("admission release of %s failed (reclaimed later)", token, exc_info=True)
        return
    if waiting:
        cameras_wake(camera.decode() if isinstance(camera, bytes) else str(camera) for camera in waiting)


def frame_validate(data: object, *, max_bytes: int | None = None) -> FrameMessage:
    """Check one WebSocket frame message cheaply, without decoding pixels (``inference.imageio.validate_frame``
    with the limits of settings).

    ``data``: the message payload (``bytes``; ``str`` means a text message). Accepts an optional ``FRAME_HEADER``
    prefix, then a JPEG (must end with the EOI marker) or PNG of at most ``max_bytes`` (default
    ``settings.FER_MAX_FRAME_BYTES``) bytes and ``FER_MAX_FRAME_WIDTH`` x ``FER_MAX_FRAME_HEIGHT`` pixels.
    Returns a ``FrameMessage``; raises ``FrameRejected``.
    """
    return validate_frame(
        data,
        max_bytes=max_bytes or settings.FER_MAX_FRAME_BYTES,
        max_width=settings.FER_MAX_FRAME_WIDTH,
        max_height=settings.FER_MAX_FRAME_HEIGHT,
    )


def frame_analyze_enqueue(
    *,
    session_id: int,
    source: str,
    sequence: int,
    captured_at_ms: float,
    data: bytes,
    expires_s: float | None,
    live: bool = True,
    min_face_px: int | None = None,
) -> str:
    """Queue one frame for analysis by a Celery worker; returns the task id.

    ``data``: JPEG/PNG bytes (sent base64-encoded in the JSON task body, no pickle); ``captured_at_ms``: capture
    time on the server clock, ms since the Unix epoch; ``expires_s``: seconds after which a not-yet-started task is
    discarded and counted as dropped (``None``: never, for uploads); ``live``: a camera frame, queued on
    ``settings.FER_LIVE_QUEUE`` (served first), else an upload frame on ``settings.FER_UPLOAD_QUEUE``;
    ``min_face_px``: smallest face side the frame's keyframe detection looks for (``selectors.session_min_face_px``;
    ``None``: every face). Raises the broker's connection errors.
    """
    kwargs = {
        "session_id": session_id,
        "source": source,
        "sequence": sequence,
        "captured_at_ms": captured_at_ms,
        "data_b64": base64.b64encode(data).decode("ascii"),
    }
    if min_face_px is not None:  # absent otherwise: a worker of the previous release takes the task as before
        kwargs["min_face_px"] = int(min_face_px)
    result = current_app.send_task(
        ANALYZE_FRAME_TASK,
        kwargs=kwargs,
        expires=expires_s,
        serializer="json",
        queue=settings.FER_LIVE_QUEUE if live else settings.FER_UPLOAD_QUEUE,
    )
    return result.id


#: ``frame_live_dispatch`` outcomes.
DISPATCH_QUEUED = "queued"
DISPATCH_REFUSED = "refused"
DISPATCH_UNAVAILABLE = "unavailable"


def frame_live_dispatch(
    *,
    session_id: int,
    source: str,
    sequence: int,
    captured_at_ms: float,
    data: bytes,
    expires_s: float | None,
    waited_s: float = 0.0,
    min_face_px: int | None = None,
) -> str:
    """Admit one camera frame (``frame_admission_acquire``) and queue it for analysis (``frame_analyze_enqueue``,
    live queue) in one synchronous call, so the WebSocket consumer makes one hop into a thread per frame, not two.

    Returns ``DISPATCH_QUEUED``; ``DISPATCH_REFUSED`` when the system has no free analysis slot (nothing queued: the
    caller keeps the frame pending and offers it again); ``DISPATCH_UNAVAILABLE`` when the broker refused the task
    (logged; the admission is released, so the slot is not held by a frame that never reached a worker). Never
    raises for a broker outage. Arguments as ``frame_analyze_enqueue`` (``min_face_px`` included), plus ``waited_s``:
    seconds since the server received the frame (``frame_admission_acquire``).
    """
    token = frame_admission_token(session_id, source, sequence)
    if not frame_admission_acquire(token=token, waited_s=waited_s):
        return DISPATCH_REFUSED
    try:
        frame_analyze_enqueue(
            session_id=session_id,
            source=source,
            sequence=sequence,
            captured_at_ms=captured_at_ms,
            data=data,
            expires_s=expires_s,
            min_face_px=min_face_px,
        )
    except Exception:  # the broker is down
        logger.exception("could not queue frame %s of %s", sequence, source)
        frame_admission_release(token=token)
        return DISPATCH_UNAVAILABLE
    return DISPATCH_QUEUED


def _probability_list(probs) -> list[float]:
    """7 probabilities in LABELS order from a ``{label: p}`` dict or a sequence; raises ``ValueError``/``KeyError``."""
    values = [float(probs[label]) for label in LABELS] if isinstance(probs, dict) else [float(p) for p in probs]
    if len(values) != len(LABELS):
        raise ValueError(f"expected {len(LABELS)} probabilities, got {len(values)}")
    return values


def _face_values(face) -> dict:
    """The stored values of one face: a ``FaceResult``, its ``to_dict()``, or a tracked face's ``to_dict()``
    (``inference.tracked_stream.TrackedFace``: adds ``track``, ``smoothed_label``, ``smoothed_probabilities``).

    Returns ``{"box": (x, y, w, h), "label", "score", "probabilities": [7], "too_small": bool, "track": int | None,
    "smoothed_label": str, "smoothed": [7] | None, "pose": (yaw, pitch, roll) | None}`` (degrees). Raises
    ``ValueError`` (or ``KeyError``) for malformed faces.
    """
    if not isinstance(face, dict):
        face = face.to_dict()
    label = face["label"]
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}")
    smoothed = face.get("smoothed_probabilities")
    smoothed_label = str(face.get("smoothed_label") or "")
    if smoothed_label and smoothed_label not in LABELS:
        raise ValueError(f"unknown label {smoothed_label!r}")
    track = face.get("track")
    return {
        "pose": _head_pose(face.get("head_pose")),
        "box": tuple(max(0, int(v)) for v in face["box"]),
        "label": str(label),
        "score": float(face["score"]),
        "probabilities": _probability_list(face["probabilities"]),
        "too_small": bool(face.get("too_small", False)),
        "track": None if track is None else int(track),
        "smoothed_label": smoothed_label,
        "smoothed": None if smoothed is None else _probability_list(smoothed),
    }


def _head_pose(pose) -> tuple[float, float, float] | None:
    """``(yaw, pitch, roll)`` degrees from a ``{"yaw", "pitch", "roll"}`` dict (or ``None``); raises ``ValueError``
    for missing, non-finite or out-of-range (beyond +-180) angles."""
    if pose is None:
        return None
    try:
        angles = tuple(float(pose[name]) for name in ("yaw", "pitch", "roll"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed head pose {pose!r}") from exc
    if not all(math.isfinite(a) and -180.0 <= a <= 180.0 for a in angles):
        raise ValueError(f"head pose angles out of range: {angles}")
    return angles[0], angles[1], angles[2]


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
                "too_small": f.too_small,
                "track": f.track,
                "smoothed_label": f.smoothed_label or f.label,
                "label": f.label,
                "score": round(f.score, 4),
                "probabilities": {label: round(p, 4) for label, p in zip(LABELS, f.probabilities, strict=True)},
                "smoothed_probabilities": None
                if f.smoothed_probabilities is None
                else {label: round(p, 4) for label, p in zip(LABELS, f.smoothed_probabilities, strict=True)},
                "head_pose": f.head_pose,
                "facing_camera": f.facing_camera,
            }
            for f in faces
        ],
    }


_BUCKET_COUNTS = ("frames", "faces", "faces_too_small")


@functools.cache
def _bucket_add_sql(vendor: str) -> str:
    """The upsert of ``_bucket_add`` for the database backend ``vendor`` (built once per backend: it only depends on
    the model and the backend's quoting)."""
    meta = TimelineBucket._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(str(cast(Field, meta.get_field(name)).column))

    table = quote(meta.db_table)
    added = [column(name) for name in (*_BUCKET_COUNTS, *SUM_FIELDS)]
    return (
        f"INSERT INTO {table} ({column('session')}, {column('second')}, {', '.join(added)}) "
        f"VALUES ({', '.join(['%s'] * (2 + len(added)))}) "
        f"ON CONFLICT ({column('session')}, {column('second')}) "
        f"DO UPDATE SET {', '.join(f'{c} = {table}.{c} + excluded.{c}' for c in added)}"
    )


def _bucket_add(
    *, session_id: int, second: int, frames: int, faces: int, faces_too_small: int, sums: Sequence[float]
) -> None:
    """Add ``frames``, ``faces`` (read), ``faces_too_small`` and the 7 probability ``sums`` (``LABELS`` order) to the
    session's 1-second ``TimelineBucket``, creating it when it is the second's first frame.

    One ``INSERT ... ON CONFLICT (session, second) DO UPDATE SET f = f + excluded.f`` (PostgreSQL 9.5+, SQLite
    3.24+): atomic under concurrent workers, and one statement where ``get_or_create`` + ``update`` took two or three
    (Django's ``bulk_create(update_conflicts=True)`` can only overwrite, not add).
    """
    params: list[float] = [int(session_id), int(second), int(frames), int(faces), int(faces_too_small)]
    params += [float(total) for total, _ in zip(sums, SUM_FIELDS, strict=True)]
    with connection.cursor() as cursor:
        cursor.execute(_bucket_add_sql(connection.vendor), params)


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

    Writes the ``Frame``, its ``Face`` rows, the 1-second ``TimelineBucket`` (atomic upsert, ``_bucket_add``) and
    ``session.frames_processed``. A duplicate ``(session, source, sequence)`` is ignored: the stored frame is returned
    unchanged and nothing is published. Raises ``ValueError`` on malformed faces (nothing stored).
    Returns the ``Frame``.
    """
    parsed = [_face_values(f) for f in faces]  # validate everything before writing anything
    source, sequence = source[:64], int(sequence)
    offset_s = max(0.0, (captured_at - session.created_at).total_seconds())
    try:
        # No savepoint around the frame's insert (two fewer round trips): a duplicate fails the transaction's first
        # statement, the whole transaction rolls back, and the stored frame is looked up after it.
        with transaction.atomic():
            frame = Frame.objects.create(
                session=session,
                source=source,
                sequence=sequence,
                captured_at=captured_at,
                offset_s=offset_s,
                processing_ms=float(processing_ms),
                width=int(width),
                height=int(height),
                face_count=len(parsed),
            )
            face_rows = [
                Face(
                    frame=frame,
                    session=session,
                    x=v["box"][0],
                    y=v["box"][1],
                    w=v["box"][2],
                    h=v["box"][3],
                    label=v["label"],
                    score=v["score"],
                    too_small=v["too_small"],
                    track=v["track"],
                    smoothed_label=v["smoothed_label"],
                    yaw=v["pose"][0] if v["pose"] else None,
                    pitch=v["pose"][1] if v["pose"] else None,
                    roll=v["pose"][2] if v["pose"] else None,
                    **dict(zip(PROBABILITY_FIELDS, v["probabilities"], strict=True)),
                    **dict(zip(SMOOTHED_FIELDS, v["smoothed"] or [None] * len(LABELS), strict=True)),
                )
                for v in parsed
            ]
            Face.objects.bulk_create(face_rows)
            readable = [v for v in parsed if not v["too_small"]]  # too-small faces are counted, not read
            # Aggregates read tracked faces through their smoothed probabilities (the dashboard's values); raw ones
            # stay in the exports.
            shown = [v["smoothed"] or v["probabilities"] for v in readable]
            _bucket_add(
                session_id=session.pk,
                second=int(offset_s),
                frames=1,
                faces=len(readable),
                faces_too_small=len(parsed) - len(readable),
                sums=[sum(p[i] for p in shown) for i in range(len(LABELS))],
            )
            EmotionSession.objects.filter(pk=session.pk).update(frames_processed=F("frames_processed") + 1)
            if publish:
                event = frame_result_event(frame, face_rows)
                transaction.on_commit(lambda: event_publish(session.pk, event))
    except IntegrityError:
        existing = Frame.objects.filter(session=session, source=source, sequence=sequence).first()
        if existing is None:  # not a duplicate: the session is gone or values are invalid
            raise
        return existing
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
    key = f"fer:frame-outcome:{session.pk}:{session.created_at.timestamp():.6f}:{source}:{int(sequence)}"
    ttl = FRAME_LOST_CLAIM_TTL_S if outcome == "lost" else FRAME_CLAIM_TTL_S
    try:
        return bool(cache.add(key, outcome, timeout=ttl))
    except Exception:
        logger.warning("frame outcome claim of %s failed: granted", key, exc_info=True)
        return True


def _claim_by_id(*, session_id: int, source: str, sequence: int, outcome: str) -> bool:
    """``frame_outcome_claim`` for a session given by id; ``False`` when the session is gone."""
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
    session = selectors.session_for_frames_get(session_id=session_id)
    if session is None:
        logger.info("session %s vanished before frame %s:%s was stored", session_id, source, sequence)
        return None
    frame_admission_release(token=frame_admission_token(session_id, source, sequence))
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
    except Exception as exc:
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
    finally:  # the frame has its outcome (stored, or storage_failed): the last one of a video assigns its tracks
        upload_outcome_count(session_id=session_id, source=source)


def frame_dropped_record(
    *, session_id: int, source: str, sequence: int, reason: str, publish: bool = True, claim: bool = True
) -> bool:
    """Count one dispatched frame that was never analysed (``reason``: ``"expired"`` or ``"revoked"`` task) and tell
    the clients with a ``frame.dropped`` event so the sender frees its in-flight slot.

    ``claim``: claim the frame's outcome first (``frame_outcome_claim``); when the stream already declared it lost
    (or the session is gone), nothing is counted or published. Returns whether the drop was recorded.
    """
    frame_admission_release(token=frame_admission_token(session_id, source, sequence))
    if claim and not _claim_by_id(session_id=session_id, source=source, sequence=sequence, outcome=reason):
        return False
    session_counters_add(session_id=session_id, dropped=1)
    upload_outcome_count(session_id=session_id, source=source)
    if publish:
        event_publish(
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
    frame_admission_release(token=frame_admission_token(session_id, source, sequence))
    if claim and not _claim_by_id(session_id=session_id, source=source, sequence=sequence, outcome="error"):
        return False
    session_counters_add(session_id=session_id, rejected=1)
    if claim:  # with claim=False the caller (frame_analysis_record) counts the outcome
        upload_outcome_count(session_id=session_id, source=source)
    event_publish(
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
