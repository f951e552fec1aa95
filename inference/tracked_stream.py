"""Streaming analysis with anonymous face tracks and smoothed emotions: ``StreamAnalyzer`` + ``Tracker``.

One call per frame, one small JSON state per stream (the ``StreamState`` and the ``Tracker`` side by side; the
``StreamState`` format is unchanged, so workers that keep only it go on working)::

    analyzer = TrackedStreamAnalyzer(EmotionRecognizer.default())    # once per worker process
    faces, state = analyzer.analyze(frame, json.loads(redis.get(key)) if redis.exists(key) else None)
    redis.set(key, json.dumps(state.to_dict()))
    for face in faces:
        face.track, face.smoothed_label, face.smoothed_probabilities, face.face.box, face.face.probabilities
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.labels import LABELS
from inference.recognizer import EmotionRecognizer, FaceResult
from inference.stream import StreamAnalyzer, StreamState
from inference.tracking import DEFAULT_ALPHA, DEFAULT_MAX_AGE, Tracker

TRACKED_STATE_VERSION = 1


@dataclass(frozen=True)
class TrackedFace:
    """One face of one frame with its track.

    Attributes:
        face: the frame's ``FaceResult`` (box, raw label, score, probabilities, too_small).
        track: the anonymous track id, unique within the stream (>= 1).
        smoothed_probabilities: ``float32 (7,)`` the track's smoothed probabilities after this frame, ``LABELS``
            order.
    """

    face: FaceResult
    track: int
    smoothed_probabilities: np.ndarray

    @property
    def smoothed_label(self) -> str:
        """The most probable label of ``smoothed_probabilities``."""
        return LABELS[int(np.argmax(self.smoothed_probabilities))]

    def to_dict(self) -> dict:
        """``FaceResult.to_dict()`` plus ``"track": int``, ``"smoothed_label": str`` and
        ``"smoothed_probabilities": {label: p}``."""
        out = {"track": int(self.track), **self.face.to_dict()}
        out["smoothed_label"] = self.smoothed_label
        out["smoothed_probabilities"] = {
            label: round(float(p), 6) for label, p in zip(LABELS, self.smoothed_probabilities)
        }
        return out


@dataclass
class TrackedStreamState:
    """The stream state and the tracker of one stream.

    Attributes:
        stream: the ``StreamState`` (keyframes, followed boxes).
        tracker: the ``Tracker`` (tracks, their last boxes, ages, smoothed probabilities, the next id).
    """

    stream: StreamState
    tracker: Tracker

    def to_dict(self) -> dict:
        """``{"v": 1, "stream": StreamState.to_dict(), "tracker": Tracker.to_dict()}`` (numbers only, plus the
        stream's ``keyframe`` flag)."""
        return {"v": TRACKED_STATE_VERSION, "stream": self.stream.to_dict(), "tracker": self.tracker.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TrackedStreamState:
        """The state of ``to_dict()``. A bare ``StreamState.to_dict()`` (a stream that ran without tracks) is
        accepted too and gets a new, empty tracker.

        Raises:
            ValueError: malformed state.
        """
        if not isinstance(data, dict):
            raise ValueError("malformed tracked stream state: not a dict")
        if "stream" not in data:
            return cls(StreamState.from_dict(data), Tracker())
        if data.get("v") != TRACKED_STATE_VERSION:
            raise ValueError(f"tracked stream state version {data.get('v')!r}, expected {TRACKED_STATE_VERSION}")
        return cls(StreamState.from_dict(data["stream"]), Tracker.from_dict(data["tracker"]))


class TrackedStreamAnalyzer:
    """``StreamAnalyzer`` whose faces carry anonymous track ids and smoothed probabilities.

    Args:
        recognizer: an ``EmotionRecognizer``.
        max_age, alpha: for new trackers (see ``Tracker``); a restored state keeps its own.
        **stream_options: ``keyframe_every``, ``scene_change``, ``follow_threshold``, ``lost_tolerance``,
            ``stagger``, ``seed`` of ``StreamAnalyzer``.
    """

    def __init__(
        self,
        recognizer: EmotionRecognizer,
        max_age: int = DEFAULT_MAX_AGE,
        alpha: float = DEFAULT_ALPHA,
        **stream_options,
    ):
        self.stream = StreamAnalyzer(recognizer, **stream_options)
        self.max_age = max_age
        self.alpha = alpha
        Tracker(max_age, alpha)  # validates the settings now

    def periodic_keyframe_due(self, image: np.ndarray, state: TrackedStreamState | dict | None) -> bool:
        """``StreamAnalyzer.periodic_keyframe_due`` of the stream part of ``state``.

        Raises:
            ValueError: a malformed ``state``, or an unsupported image.
        """
        if isinstance(state, dict):
            state = TrackedStreamState.from_dict(state)
        return state is not None and self.stream.periodic_keyframe_due(image, state.stream)

    def analyze(
        self,
        image: np.ndarray,
        state: TrackedStreamState | dict | None = None,
        defer_periodic: bool = False,
        min_face_px: int | None = None,
    ) -> tuple[list[TrackedFace], TrackedStreamState]:
        """Analyse the next frame of a stream.

        Args:
            image: the frame, BGR ``uint8 (H, W, 3)``, BGRA or grey (as ``EmotionRecognizer.analyze``).
            state: what the previous call returned (or its ``to_dict()``), or ``None`` for the first frame.
            defer_periodic: as ``StreamAnalyzer.analyze`` (another process runs this stream's periodic keyframe).
            min_face_px: as ``StreamAnalyzer.analyze`` (smallest face a keyframe looks for).

        Returns:
            ``(faces, new_state)``: one ``TrackedFace`` per face, left to right, and the state for the next frame.

        Raises:
            ValueError: unsupported image, or a malformed ``state``.
        """
        if isinstance(state, dict):
            state = TrackedStreamState.from_dict(state)
        tracker = state.tracker if state is not None else Tracker(self.max_age, self.alpha)
        faces, stream_state = self.stream.analyze(
            image, state.stream if state is not None else None, defer_periodic, min_face_px
        )
        boxes = np.array([face.box for face in faces], np.float64).reshape(-1, 4)
        probabilities = np.array([face.probabilities for face in faces], np.float64).reshape(len(faces), -1)
        ids = tracker.update(boxes, probabilities if faces else None)
        smoothed = tracker.smoothed(ids) if faces else np.zeros((0, len(LABELS)), np.float32)
        tracked = [TrackedFace(face, track, smooth) for face, track, smooth in zip(faces, ids, smoothed)]
        return tracked, TrackedStreamState(stream_state, tracker)
