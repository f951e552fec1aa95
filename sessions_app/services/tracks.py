"""Anonymous tracks for uploaded videos (camera streams get theirs in the worker, ``services.analysis``).

The frames of an uploaded video are analysed by any worker in any order (full detection of each frame), so they
cannot carry a stream state from frame to frame. Instead, when the last frame of the video has its outcome (stored,
or an error), ``upload_tracks_assign`` runs the same tracker as the camera path (``inference.tracking.Tracker``: box
association and the causal EMA of the probabilities, nothing but the stored boxes and probabilities) over the
stored faces in the video's frame order, on the video's own timeline, and writes each face's track, smoothed
probabilities and smoothed label; the timeline sums move from the raw to the smoothed probabilities, as for camera
faces. Until then (while the video is analysed) its faces count as untracked observations.

The count of frames still to come lives in the shared cache (``upload_pending_set``, decremented by
``upload_outcome_count`` with each outcome, which is exactly one per frame); if the cache loses it (a Redis
restart), the video's faces stay untracked, which is what they were before tracks existed.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
from django.core.cache import cache
from django.db import transaction
from django.db.models import F

from inference.labels import LABELS
from inference.tracking import Tracker
from sessions_app.models import SMOOTHED_FIELDS, SUM_FIELDS, Face, Frame, TimelineBucket

logger = logging.getLogger(__name__)

#: Seconds the pending-frame count of an upload is kept (far longer than the upload queue takes to drain).
UPLOAD_PENDING_TTL_S = 24 * 3600


def _pending_key(session_id: int, source: str) -> str:
    return f"fer:upload-pending:{int(session_id)}:{source}"


def upload_pending_set(*, session_id: int, source: str, frames: int) -> None:
    """Remember that the video upload ``source`` of session ``session_id`` has ``frames`` frames to analyse (call it
    before queueing them)."""
    cache.set(_pending_key(session_id, source), int(frames), timeout=UPLOAD_PENDING_TTL_S)


def upload_outcome_count(*, session_id: int, source: str) -> None:
    """Count one frame outcome of an upload; after the last one, assign the video's tracks. Does nothing for camera
    sources, photo uploads and uploads whose count the cache no longer has. Never raises (a failure is logged: the
    faces stay untracked)."""
    if not source.startswith("upload:"):
        return
    key = _pending_key(session_id, source)
    try:
        remaining = cache.decr(key)
    except ValueError:  # not a video upload, or the cache lost the count
        return
    except Exception:
        logger.warning("upload count of %s unavailable: its faces stay untracked", key, exc_info=True)
        return
    if remaining > 0:
        return
    try:
        cache.delete(key)
        tracks = upload_tracks_assign(session_id=session_id, source=source)
        logger.info("upload %s of session %s: %d tracks", source, session_id, tracks)
    except Exception:
        logger.exception("tracks of upload %s of session %s could not be assigned", source, session_id)


def upload_tracks_assign(*, session_id: int, source: str) -> int:
    """Link the stored faces of one uploaded video into anonymous tracks, in frame order (see the module docstring).

    Writes ``Face.track`` (1, 2, ... within the source), ``sp_*`` and ``smoothed_label``, and adds ``smoothed - raw``
    of each readable face to its 1-second ``TimelineBucket`` sums, in one transaction. Idempotent: a source whose
    faces already have tracks is left alone. Returns the number of tracks (0 when nothing was assigned).
    """
    with transaction.atomic():
        frames = list(
            Frame.objects.select_for_update()
            .filter(session_id=session_id, source=source)
            .order_by("sequence")
            .values_list("id", "offset_s")
        )
        faces = list(Face.objects.filter(frame_id__in=[f for f, _ in frames]).order_by("frame_id", "id"))
        if not faces or any(face.track is not None for face in faces):
            return 0
        by_frame: dict[int, list[Face]] = defaultdict(list)
        for face in faces:
            by_frame[face.frame_id].append(face)
        tracker = Tracker()
        deltas: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(len(LABELS)))
        seen: set[int] = set()
        for frame_id, offset_s in frames:
            frame_faces = by_frame.get(frame_id, [])
            boxes = np.array([face.box for face in frame_faces], np.float64).reshape(-1, 4)
            raw = np.array([face.probabilities for face in frame_faces], np.float64).reshape(-1, len(LABELS))
            ids = tracker.update(boxes, raw if frame_faces else None)
            if not frame_faces:
                continue
            smoothed = tracker.smoothed(ids).astype(np.float64)
            for face, track, probabilities, original in zip(frame_faces, ids, smoothed, raw, strict=True):
                face.track = int(track)
                seen.add(int(track))
                for field, p in zip(SMOOTHED_FIELDS, probabilities, strict=True):
                    setattr(face, field, float(p))
                face.smoothed_label = LABELS[int(np.argmax(probabilities))]
                if not face.too_small:
                    deltas[int(offset_s)] += probabilities - original
        Face.objects.bulk_update(faces, ["track", "smoothed_label", *SMOOTHED_FIELDS], batch_size=500)
        for second, delta in sorted(deltas.items()):
            TimelineBucket.objects.filter(session_id=session_id, second=second).update(
                **{field: F(field) + float(d) for field, d in zip(SUM_FIELDS, delta, strict=True)}
            )
    return len(seen)
