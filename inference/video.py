"""Sampling frames from video files with OpenCV (Django-free).

OpenCV cannot demux video from memory, so callers with bytes write them to a temporary file first (and delete it
right after sampling).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2
import numpy as np

#: Frame rate assumed when a container reports none or an implausible one (outside 0.1-1000 fps).
FALLBACK_FPS = 25.0


class VideoReadError(ValueError):
    """The file is not a video OpenCV can open."""


def sample_frames(path: str | os.PathLike, step_s: float, max_frames: int) -> Iterator[tuple[float, np.ndarray]]:
    """Frames of a video file, one every ``step_s`` seconds of video time, starting with the first.

    Args:
        path: a video file OpenCV (FFmpeg backend) can read.
        step_s: seconds of video time between sampled frames (> 0); every decoded frame whose time is at or past
            the next sampling time is taken, so a video slower than ``1 / step_s`` fps yields all its frames.
        max_frames: stop after this many frames (>= 1).

    Yields:
        ``(t_s, image)``: the frame's time in seconds from the start of the video (frame index / container fps) and
        the frame as BGR ``uint8 (H, W, 3)``.

    Raises:
        VideoReadError: the file cannot be opened as a video.
        ValueError: ``step_s <= 0`` or ``max_frames < 1``.
    """
    if step_s <= 0:
        raise ValueError("step_s must be > 0")
    if max_frames < 1:
        raise ValueError("max_frames must be >= 1")
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(f"{path}: not a readable video file")
        fps = cap.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
        if not (0.1 < fps < 1000):
            fps = FALLBACK_FPS
        taken, index, next_t = 0, 0, 0.0
        while taken < max_frames:
            ok, image = cap.read()
            if not ok:
                break
            t = index / fps
            index += 1
            if t + 1e-6 < next_t:
                continue
            next_t += step_s
            taken += 1
            yield t, image
    finally:
        cap.release()
