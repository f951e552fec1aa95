"""``python -m inference track``: tracked, smoothed emotion analysis of video files, with optional annotated MP4
and per-track timeline plot.

Every frame of a video is analysed, or one every ``1 / fps`` seconds of video time (the rule of
``inference.video.sample_frames`` on the web platform's side: a frame is taken when its time is at or past the next
sampling time). Frames go through ``TrackedStreamAnalyzer`` in order, the state passed through ``to_dict()`` as a
worker would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from inference.labels import LABELS
from inference.tracked_stream import TrackedStreamAnalyzer, TrackedStreamState

#: Frame rate assumed when a container reports none or an implausible one (outside 0.1-1000 fps); the same as
#: ``inference.video.FALLBACK_FPS`` on the web platform's side.
FALLBACK_FPS = 25.0

#: The timeline plot shows at most this many tracks (the ones seen in the most frames).
MAX_PLOTTED_TRACKS = 12


class VideoOpenError(ValueError):
    """The file is not a video OpenCV can open, or no frame of it can be decoded."""


def read_frames(
    path: str | os.PathLike, fps: float | None = None
) -> tuple[float, Iterator[tuple[int, float, np.ndarray]]]:
    """Open a video and iterate over its frames.

    Args:
        path: a video file OpenCV (FFmpeg backend) can read.
        fps: analyse one frame every ``1 / fps`` seconds of video time (``None``: every frame).

    Returns:
        ``(video_fps, frames)``: the container's frame rate (``FALLBACK_FPS`` when it reports none or an
        implausible one) and an iterator of ``(index, t_s, image)``: the frame's 0-based index in the file, its time
        ``index / video_fps`` in seconds and the frame, BGR ``uint8 (H, W, 3)``.

    Raises:
        VideoOpenError: the file cannot be opened as a video.
        ValueError: ``fps`` not above 0.
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    cap = cv2.VideoCapture(os.fspath(path))
    if not cap.isOpened():
        cap.release()
        raise VideoOpenError(f"{path}: not a readable video file")
    video_fps = cap.get(cv2.CAP_PROP_FPS) or FALLBACK_FPS
    if not (0.1 < video_fps < 1000):
        video_fps = FALLBACK_FPS

    def frames() -> Iterator[tuple[int, float, np.ndarray]]:
        index, next_t = 0, 0.0
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    return
                t = index / video_fps
                index += 1
                if fps is not None:
                    if t + 1e-6 < next_t:
                        continue
                    next_t += 1.0 / fps
                yield index - 1, t, image
        finally:
            cap.release()

    return float(video_fps), frames()


def track_video(path: str | os.PathLike, analyzer: TrackedStreamAnalyzer, fps: float | None = None) -> dict:
    """Tracked emotion analysis of one video.

    Args:
        path: the video file.
        analyzer: a ``TrackedStreamAnalyzer`` (one new stream per video).
        fps: analysed frames per second of video time (``None``: every frame).

    Returns:
        ``{"video": str(path), "fps": the file's frame rate, "frames": [{"index", "t_s", "faces": [
        TrackedFace.to_dict()]}], "tracks": [{"track", "first_s", "last_s", "frames"}]}``;
        ``tracks`` in order of first appearance, ``frames`` = analysed frames the track appears in. Each face's
        ``head_pose`` is ``{"yaw", "pitch", "roll"}`` in degrees, or ``None`` (too small, or no pose found).

    Raises:
        VideoOpenError: unreadable video, or not one decodable frame.
    """
    video_fps, frames = read_frames(path, fps)
    state: dict | None = None
    out_frames: list[dict] = []
    tracks: dict[int, dict] = {}
    for index, t, image in frames:
        faces, new_state = analyzer.analyze(image, state)
        state = new_state.to_dict()
        face_dicts = []
        for face in faces:
            face_dicts.append(face.to_dict())
            entry = tracks.setdefault(face.track, {"track": face.track, "first_s": round(t, 3), "frames": 0})
            entry["last_s"] = round(t, 3)
            entry["frames"] += 1
        out_frames.append({"index": index, "t_s": round(t, 3), "faces": face_dicts})
    if not out_frames:
        raise VideoOpenError(f"{path}: no frame could be decoded")
    assert state is not None  # set by every analysed frame, and there was at least one
    TrackedStreamState.from_dict(state)  # the state a worker would keep is valid JSON state
    return {
        "video": os.fspath(path),
        "fps": round(video_fps, 3),
        "frames": out_frames,
        "tracks": [{k: entry[k] for k in ("track", "first_s", "last_s", "frames")} for entry in tracks.values()],
    }


def track_colour(track: int) -> tuple[int, int, int]:
    """A stable BGR colour for a track id (golden-angle hues)."""
    hue = int((track * 137.508) % 180)
    bgr = cv2.cvtColor(np.array([[[hue, 200, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def write_annotated_video(
    path: str | os.PathLike, result: dict, out_path: str | os.PathLike, fps: float | None
) -> Path:
    """Write ``result``'s frames of ``path`` with boxes, track ids and smoothed labels as an MP4 (``mp4v``).

    Args:
        path: the analysed video; result: ``track_video``'s result for it; out_path: the ``.mp4`` to write;
        fps: the sampling rate used (``None``: every frame); the output frame rate is the smaller of it and the
            video's.

    Returns:
        ``out_path`` as a ``Path``.

    Raises:
        OSError: the writer cannot be opened.
    """
    out_path = Path(out_path)
    by_index = {frame["index"]: frame for frame in result["frames"]}
    _, frames = read_frames(path, fps)
    writer = None
    try:
        for index, _, image in frames:
            frame = by_index.get(index)
            if frame is None:
                continue
            if writer is None:
                height, width = image.shape[:2]
                rate = min(fps, result["fps"]) if fps is not None else result["fps"]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # not in the cv2 stubs
                writer = cv2.VideoWriter(str(out_path), fourcc, rate, (width, height))
                if not writer.isOpened():
                    raise OSError(f"{out_path}: cannot open an mp4v video writer")
            for face in frame["faces"]:
                x, y, w, h = face["box"]
                colour = track_colour(face["track"])
                cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
                text = f"#{face['track']} {face['smoothed_label']}"
                scale = max(0.4, min(1.0, w / 120))
                cv2.putText(image, text, (x, max(12, y - 5)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
            writer.write(image)
    finally:
        if writer is not None:
            writer.release()
    return out_path


def plot_timeline(result: dict, out_path: str | os.PathLike) -> Path:
    """Per-track emotion timeline: one panel per track (the ``MAX_PLOTTED_TRACKS`` seen in the most frames), the
    seven smoothed probabilities against video time. Written as PNG with matplotlib (Agg backend).

    Returns:
        ``out_path`` as a ``Path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    shown = sorted(result["tracks"], key=lambda t: -t["frames"])[:MAX_PLOTTED_TRACKS]
    shown = sorted(shown, key=lambda t: t["track"])
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 1, figsize=(8, 1.6 * rows + 0.8), sharex=True, squeeze=False)
    for ax, track in zip(axes[:, 0], shown):
        times: list[float] = []
        prob_rows: list[list[float]] = []
        for frame in result["frames"]:
            for face in frame["faces"]:
                if face["track"] == track["track"]:
                    times.append(frame["t_s"])
                    prob_rows.append([face["smoothed_probabilities"][label] for label in LABELS])
        probs = np.asarray(prob_rows)
        for k, label in enumerate(LABELS):
            ax.plot(times, probs[:, k], ".-", ms=2, lw=1, label=label)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track['track']}")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center")
    axes[-1, 0].set_xlabel("video time, s")
    axes[0, 0].set_title(f"{Path(result['video']).name}: smoothed emotion probabilities per track")
    if shown:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=7, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 if shown else 0, 1, 1))
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def track_files(
    videos: list[str],
    out_dir: str | os.PathLike | None = None,
    fps: float | None = None,
    analyzer_factory=None,
) -> list[dict]:
    """``track_video`` for each file; with ``out_dir``, ``<stem>.tracks.mp4`` and ``<stem>.timeline.png`` for each.

    Args:
        videos: video paths.
        out_dir: folder for the annotated videos and plots (created), or ``None``.
        fps: analysed frames per second of video time (``None``: every frame).
        analyzer_factory: callable returning a ``TrackedStreamAnalyzer`` (default: the shipped model and detector);
            called once, one new stream per video.

    Returns:
        One result per video in order; an unreadable one is ``{"video": path, "error": message}``; a written video
        and plot are named in ``"annotated_video"`` and ``"timeline"``.
    """
    if analyzer_factory is None:
        from inference.recognizer import EmotionRecognizer

        def analyzer_factory():
            return TrackedStreamAnalyzer(EmotionRecognizer.default())

    analyzer = analyzer_factory()
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for video in videos:
        try:
            result = track_video(video, analyzer, fps)
        except (VideoOpenError, ValueError) as exc:
            results.append({"video": os.fspath(video), "error": str(exc)})
            continue
        if out_dir is not None:
            stem = Path(video).stem
            result["annotated_video"] = str(
                write_annotated_video(video, result, Path(out_dir) / f"{stem}.tracks.mp4", fps)
            )
            result["timeline"] = str(plot_timeline(result, Path(out_dir) / f"{stem}.timeline.png"))
        results.append(result)
    return results
