"""Uploaded photos and videos of a session: sampled into frames and queued like live frames."""

from __future__ import annotations

import os
import tempfile

import cv2
from django.conf import settings
from django.utils import timezone

from inference.imageio import ImageDecodeError, decode_image, sniff_format
from inference.video import VideoReadError, sample_frames
from sessions_app.models import EmotionSession
from sessions_app.services.frames import frame_analyze_enqueue
from sessions_app.services.sessions import session_counters_add, upload_source_allocate


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


def upload_process(*, session: EmotionSession, uploaded_file, max_frames: int | None = None) -> dict:
    """Queue an uploaded photo or short video of ``session`` for analysis by the same worker path as live frames.

    ``uploaded_file``: a Django ``UploadedFile`` (at most ``settings.FER_MAX_UPLOAD_BYTES``). A photo becomes one
    frame; a video is sampled at the session's ``target_fps`` (at most ``max_frames``, default
    ``settings.FER_MAX_UPLOAD_FRAMES``; ``inference.video.sample_frames``), each frame's capture time = upload time +
    its offset in the video. Frames larger than the frame limits are downscaled. Video bytes are only read through a
    temporary file that is deleted right after sampling (OpenCV cannot demux from memory); nothing is kept.

    Returns ``{"source": "upload:<n>", "kind": "image" | "video", "frames": int}``. Raises ``UploadRejected``.
    """
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
        return {"source": source, "kind": "image", "frames": 1}

    frames = _video_frames(uploaded_file, step_s=1.0 / max(0.1, session.target_fps), max_frames=max_frames)
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
            live=False,
        )
    return {"source": source, "kind": "video", "frames": len(frames)}


def _video_frames(uploaded_file, *, step_s: float, max_frames: int) -> list[tuple[float, bytes]]:
    """``(t_s, JPEG bytes)`` sampled from an uploaded video; the bytes sit in a temporary file only while sampled.

    Raises ``UploadRejected`` when nothing can be decoded.
    """
    path = getattr(uploaded_file, "temporary_file_path", lambda: None)()
    frames: list[tuple[float, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="fer-upload-") as tmpdir:
        if path is None:
            path = os.path.join(tmpdir, "video.bin")
            with open(path, "wb") as fh:
                for chunk in uploaded_file.chunks():
                    fh.write(chunk)
        try:
            for t, image in sample_frames(path, step_s=step_s, max_frames=max_frames):
                data, _, _ = _fit_jpeg(image, quality=85)
                frames.append((t, data))
        except VideoReadError:
            raise UploadRejected("not a JPEG/PNG photo or a readable video file") from None
    if not frames:
        raise UploadRejected("not a JPEG/PNG photo or a readable video file (no frames decoded)")
    return frames
