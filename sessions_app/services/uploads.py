"""Uploaded photos and videos of a session: sampled into frames and queued like live frames."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time

import cv2
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from inference.imageio import ImageDecodeError, decode_image, sniff_format
from inference.video import VideoReadError, sample_frames
from sessions_app.models import EmotionSession
from sessions_app.services.frames import frame_analyze_enqueue
from sessions_app.services.sessions import session_counters_add, upload_source_allocate
from sessions_app.services.tracks import upload_pending_set

logger = logging.getLogger(__name__)


class UploadRejected(ValueError):
    """An uploaded file that is neither a decodable image nor a readable video (message for the user)."""


def _fit_jpeg(image, *, quality: int = 90) -> tuple[bytes, int, int]:
    """Downscale a BGR image to the frame limits (keeping its aspect) and encode it as JPEG in memory."""
    h, w = image.shape[:2]
    scale = min(1.0, settings.FER_MAX_FRAME_WIDTH / w, settings.FER_MAX_FRAME_HEIGHT / h)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UploadRejected("could not re-encode the image")
    return buf.tobytes(), image.shape[1], image.shape[0]


def video_sampling_plan(*, duration_s: float | None, fps: float, max_frames: int) -> dict:
    """How a video of ``duration_s`` seconds is sampled for a session at ``fps`` frames per second.

    At the session rate when that gives at most ``max_frames`` frames; otherwise the step grows so that
    ``max_frames`` frames spread over the whole video. Returns ``{"step_s": float (seconds of video between sampled
    frames), "spread": bool (True when the step was widened), "expected_frames": int | None}``. ``duration_s``
    ``None`` (unknown length) samples at the session rate.
    """
    step_s = 1.0 / max(0.1, float(fps))
    if duration_s is None or duration_s <= 0:
        return {"step_s": step_s, "spread": False, "expected_frames": None}
    at_rate = math.floor(duration_s / step_s + 1e-9) + 1
    if at_rate <= max_frames:
        return {"step_s": step_s, "spread": False, "expected_frames": at_rate}
    step_s = duration_s / max_frames  # max_frames samples at 0, step, ..., (max_frames - 1) * step < duration
    return {"step_s": step_s, "spread": True, "expected_frames": max_frames}


def video_duration_s(path: str) -> float | None:
    """Length of the video at ``path`` in seconds (frame count / frame rate from the container), ``None`` when the
    container does not say."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return None
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0
    finally:
        cap.release()
    if not (0.1 < fps < 1000) or count <= 0:
        return None
    return count / fps


def upload_quota_take(*, user_id: int, frames: int) -> None:
    """Charge ``frames`` upload frames to the user's hourly quota (``settings.FER_UPLOAD_FRAMES_PER_HOUR``, counted in
    the shared cache per clock hour), so one teacher's uploads cannot fill the workers' upload queue for everyone.

    Raises ``UploadRejected`` (nothing charged) when the upload would exceed what is left of this hour's quota. 0
    disables the quota; an unreachable cache lets the upload through (logged).
    """
    limit = settings.FER_UPLOAD_FRAMES_PER_HOUR
    if limit <= 0:
        return
    key = f"fer:upload-quota:{int(user_id)}:{int(time.time() // 3600)}"
    try:
        cache.add(key, 0, timeout=3600)
        used = cache.incr(key, frames)
        if used > limit:
            cache.decr(key, frames)
            left = max(0, limit - (used - frames))
            raise UploadRejected(
                f"upload quota reached: {limit} frames per hour per user, {left} left this hour "
                f"(this upload has {frames}); try again later or upload a shorter video"
            )
    except UploadRejected:
        raise
    except Exception:
        logger.warning("upload quota unavailable: upload allowed", exc_info=True)


def upload_process(*, session: EmotionSession, uploaded_file, max_frames: int | None = None) -> dict:
    """Queue an uploaded photo or video of ``session`` for analysis by the same worker path as live frames.

    ``uploaded_file``: a Django ``UploadedFile`` (at most ``settings.FER_MAX_UPLOAD_BYTES``). A photo becomes one
    frame at the upload time. A video is sampled at the session's ``target_fps``, or, when that would give more than
    ``max_frames`` frames (default ``settings.FER_MAX_UPLOAD_FRAMES``), at ``max_frames`` frames spread evenly over
    its whole length (``video_sampling_plan``). Video frames lie on the video's own timeline: a frame ``t`` seconds
    into the video is placed ``t`` seconds after the session's start (``captured_at = session.created_at + t``), as
    if the video were the recording of the session. Frames larger than the frame limits are downscaled. Video bytes
    are only read through a temporary file that is deleted right after sampling (OpenCV cannot demux from memory).
    When the last frame of a video has its outcome, its faces are linked into anonymous tracks with smoothed
    probabilities (``services.tracks``).

    Returns ``{"source": "upload:<n>", "kind": "image" | "video", "frames": int, "step_s": float | None (seconds of
    video between frames), "spread": bool (sampled over the whole video, not at the session rate),
    "video_s": float | None (the video's length, seconds)}``. Raises ``UploadRejected`` (also for an ended session).
    """
    if session.status != EmotionSession.Status.RUNNING:
        raise UploadRejected("This session has ended: uploads go only into running sessions. Create a new session.")
    max_frames = max_frames or settings.FER_MAX_UPLOAD_FRAMES
    if uploaded_file.size > settings.FER_MAX_UPLOAD_BYTES:
        raise UploadRejected(f"file larger than {settings.FER_MAX_UPLOAD_BYTES} bytes")
    uploaded_at = timezone.now()
    head = uploaded_file.read(16)
    uploaded_file.seek(0)
    if sniff_format(head) is not None:
        try:
            side = settings.FER_MAX_UPLOAD_IMAGE_SIDE
            image = decode_image(uploaded_file.read(), max_width=side, max_height=side)
        except ImageDecodeError as exc:
            raise UploadRejected(str(exc)) from exc
        data, _, _ = _fit_jpeg(image)
        upload_quota_take(user_id=session.owner_id, frames=1)
        source = upload_source_allocate(session=session)
        session_counters_add(session_id=session.pk, received=1)
        frame_analyze_enqueue(
            session_id=session.pk,
            source=source,
            sequence=0,
            captured_at_ms=uploaded_at.timestamp() * 1000.0,
            data=data,
            expires_s=None,
            live=False,
        )
        return {"source": source, "kind": "image", "frames": 1, "step_s": None, "spread": False, "video_s": None}

    frames, plan, video_s = _video_frames(uploaded_file, fps=session.target_fps, max_frames=max_frames)
    upload_quota_take(user_id=session.owner_id, frames=len(frames))
    source = upload_source_allocate(session=session)
    session_counters_add(session_id=session.pk, received=len(frames))
    upload_pending_set(session_id=session.pk, source=source, frames=len(frames))  # before a worker can finish one
    base_ms = session.created_at.timestamp() * 1000.0
    for sequence, (t, data) in enumerate(frames):
        frame_analyze_enqueue(
            session_id=session.pk,
            source=source,
            sequence=sequence,
            captured_at_ms=base_ms + t * 1000.0,
            data=data,
            expires_s=None,
            live=False,
        )
    return {
        "source": source,
        "kind": "video",
        "frames": len(frames),
        "step_s": round(plan["step_s"], 3),
        "spread": plan["spread"],
        "video_s": round(video_s, 3) if video_s is not None else None,
    }


def _video_frames(
    uploaded_file, *, fps: float, max_frames: int
) -> tuple[list[tuple[float, bytes]], dict, float | None]:
    """``(frames, plan, video_s)``: ``(t_s, JPEG bytes)`` sampled from an uploaded video by ``video_sampling_plan``,
    the plan, and the video's length in seconds (``None`` if unknown). The bytes sit in a temporary file only while
    sampled. Raises ``UploadRejected`` when nothing can be decoded.
    """
    path = getattr(uploaded_file, "temporary_file_path", lambda: None)()
    frames: list[tuple[float, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="fer-upload-") as tmpdir:
        if path is None:
            path = os.path.join(tmpdir, "video.bin")
            with open(path, "wb") as fh:
                for chunk in uploaded_file.chunks():
                    fh.write(chunk)
        video_s = video_duration_s(path)
        plan = video_sampling_plan(duration_s=video_s, fps=fps, max_frames=max_frames)
        try:
            for t, image in sample_frames(path, step_s=plan["step_s"], max_frames=max_frames):
                data, _, _ = _fit_jpeg(image, quality=85)
                frames.append((t, data))
        except VideoReadError:
            raise UploadRejected("not a JPEG/PNG photo or a readable video file") from None
    if not frames:
        raise UploadRejected("not a JPEG/PNG photo or a readable video file (no frames decoded)")
    return frames, plan, video_s
