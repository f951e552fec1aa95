"""Anonymous face tracks within one stream, with smoothed emotion probabilities per track.

A track is an integer, unique within one stream (1, 2, 3, ... in order of first appearance). It is made from box
geometry only: no pixels, no face embedding, nothing that could recognise a person in another stream or after the
track ended. A face hidden for longer than ``max_age`` frames, or back at a place too far from where it was, gets a
new track, so ``distinct tracks`` is an upper bound of the distinct people seen (README "Tracks and smoothing").

Like ``inference.stream.StreamState``, the tracker's state is small JSON of plain numbers that a stateless worker
keeps between frames (e.g. in Redis)::

    tracker = Tracker.from_dict(json.loads(redis.get(key))) if redis.exists(key) else Tracker()
    ids = tracker.update(boxes, probabilities)     # one track id per box, in the order given
    smoothed = tracker.smoothed(ids)               # float32 (K, 7)
    redis.set(key, json.dumps(tracker.to_dict()))

Association is an optimal assignment (``scipy.optimize.linear_sum_assignment``, see ``match_boxes``); note that
``inference.boxes.associate``, which the stream's follow stage uses, is greedy (highest IoU first). Smoothing is an
exponential moving average with ``alpha`` = ``DEFAULT_ALPHA``, chosen by ``scripts/measure_smoothing.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from inference.boxes import iou_matrix
from inference.labels import NUM_CLASSES

TRACKER_VERSION = 1

#: Weight of the newest frame in the per-track exponential moving average. Source: ``scripts/measure_smoothing.py``
#: on FER2013 PublicTest (README "Tracks and smoothing"): the fewest label switches among the filters whose mean
#: onset delay after an expression change is at most 2 frames at both jitter levels (1 s at 2 fps).
DEFAULT_ALPHA = 0.3

#: Frames a track survives without a matching face. The stream's follow stage drops a face it loses and finds it
#: again at a keyframe, at most ``StreamAnalyzer.keyframe_every - 1`` (default 29) frames later, so a face hidden
#: for a moment keeps its track with this default (README "Tracks and smoothing").
DEFAULT_MAX_AGE = 30

#: Smallest IoU of a face with a track's last box for the pair to be matched by overlap.
DEFAULT_MIN_IOU = 0.1

#: A face with little or no overlap is still matched when its centre is within this many box sides (the larger of
#: the two boxes' longer sides) of the track's last centre and the two sides differ by less than 2x.
DEFAULT_MAX_SHIFT = 0.6

_FORBIDDEN = 1e6


def ema_filter(probabilities: np.ndarray, alpha: float) -> np.ndarray:
    """Causal exponential moving average along the frame axis: ``s_0 = p_0``, ``s_t = a p_t + (1 - a) s_{t-1}``.

    Args:
        probabilities: ``float (..., T, C)``.
        alpha: weight of the newest frame, 0 < alpha <= 1 (1 = no smoothing).

    Returns:
        ``float64 (..., T, C)``; rows still sum to 1 when the inputs do.

    Raises:
        ValueError: ``alpha`` outside (0, 1].
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    p = np.asarray(probabilities, np.float64)
    out = np.empty_like(p)
    out[..., 0, :] = p[..., 0, :]
    for t in range(1, p.shape[-2]):
        out[..., t, :] = alpha * p[..., t, :] + (1 - alpha) * out[..., t - 1, :]
    return out


def window_filter(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Causal mean of the last ``k`` frames (fewer at the start) along the frame axis.

    Args:
        probabilities: ``float (..., T, C)``.
        k: window length in frames, >= 1.

    Returns:
        ``float64 (..., T, C)``.

    Raises:
        ValueError: ``k`` below 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p = np.asarray(probabilities, np.float64)
    cum = np.cumsum(p, axis=-2)
    shifted = np.zeros_like(cum)
    shifted[..., k:, :] = cum[..., :-k, :]
    counts = np.minimum(np.arange(1, p.shape[-2] + 1), k)[:, None]
    return (cum - shifted) / counts


def match_boxes(
    previous: np.ndarray,
    current: np.ndarray,
    min_iou: float = DEFAULT_MIN_IOU,
    max_shift: float = DEFAULT_MAX_SHIFT,
    penalty: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of boxes (``scipy.optimize.linear_sum_assignment``, the Hungarian method).

    A pair is allowed when its IoU is at least ``min_iou``, or when the centres are at most ``max_shift`` box sides
    apart (side = the larger of the two boxes' ``max(w, h)``) and the sides differ by less than a factor 2. Among
    allowed pairs the matching minimises the total cost ``(1 - IoU) + centre distance / side + penalty[i]``.

    Args:
        previous: ``float (N, 4)`` boxes ``(x, y, w, h)``, pixels; current: ``float (M, 4)``.
        min_iou: 0..1.
        max_shift: in box sides (0 = overlap only).
        penalty: optional ``float (N,)`` cost added to every pair of ``previous[i]`` (the tracker adds a little per
            missed frame, so that of two equally good tracks the one seen last wins).

    Returns:
        ``(i, j)`` pairs, ``previous[i]`` matched to ``current[j]``, sorted by ``i``.
    """
    a = np.asarray(previous, np.float64).reshape(-1, 4)
    b = np.asarray(current, np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return []
    overlap = iou_matrix(a, b)
    ca = a[:, :2] + a[:, 2:] / 2
    cb = b[:, :2] + b[:, 2:] / 2
    side_a = a[:, 2:].max(axis=1)[:, None]
    side_b = b[:, 2:].max(axis=1)[None, :]
    side = np.maximum(np.maximum(side_a, side_b), 1e-9)
    distance = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2) / side
    similar = np.maximum(side_a, side_b) < 2 * np.maximum(np.minimum(side_a, side_b), 1e-9)
    allowed = (overlap >= min_iou) | ((distance <= max_shift) & similar)
    cost = (1 - overlap) + distance
    if penalty is not None:
        cost = cost + np.asarray(penalty, np.float64).reshape(-1, 1)
    cost = np.where(allowed, cost, _FORBIDDEN)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if allowed[i, j]]


@dataclass
class Track:
    """One anonymous track (plain numbers only).

    Attributes:
        id: the track's integer, unique within the stream (>= 1).
        box: last matched box ``[x, y, w, h]``, pixels (ints).
        age: frames since the last match (0 = matched in the latest ``update``).
        hits: frames matched so far.
        smoothed: the exponential moving average of the track's probabilities, ``NUM_CLASSES`` floats in
            ``LABELS`` order (empty when ``update`` was given no probabilities).
    """

    id: int
    box: list[int]
    age: int = 0
    hits: int = 1
    smoothed: list[float] = field(default_factory=list)

    def to_list(self) -> list:
        """``[id, [x, y, w, h], age, hits, [p_0, ..., p_6]]`` (probabilities rounded to 6 decimals)."""
        return [
            int(self.id),
            [int(v) for v in self.box],
            int(self.age),
            int(self.hits),
            [round(float(p), 6) for p in self.smoothed],
        ]


class Tracker:
    """Links the faces of consecutive frames of one stream into anonymous tracks and smooths their emotions.

    Args:
        max_age: frames a track survives without a match (default ``DEFAULT_MAX_AGE``); a face back after more
            missed frames gets a new track. ``0`` keeps a track only while it is matched in every frame.
        alpha: EMA weight of the newest frame (default ``DEFAULT_ALPHA``; 1 = no smoothing).
        min_iou, max_shift: matching gates, see ``match_boxes``.

    Raises:
        ValueError: ``max_age`` below 0 or ``alpha`` outside (0, 1].
    """

    def __init__(
        self,
        max_age: int = DEFAULT_MAX_AGE,
        alpha: float = DEFAULT_ALPHA,
        min_iou: float = DEFAULT_MIN_IOU,
        max_shift: float = DEFAULT_MAX_SHIFT,
    ):
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.max_age = int(max_age)
        self.alpha = float(alpha)
        self.min_iou = float(min_iou)
        self.max_shift = float(max_shift)
        self.tracks: list[Track] = []
        self.next_id = 1
        self.frame = 0

    def update(self, boxes: np.ndarray, probabilities: np.ndarray | None = None) -> list[int]:
        """Assign the faces of the next frame to tracks.

        Args:
            boxes: ``(K, 4)`` boxes ``(x, y, w, h)`` of this frame, pixels (``K`` may be 0).
            probabilities: ``float (K, NUM_CLASSES)`` emotion probabilities of those faces, or ``None`` (tracks
                only; ``smoothed`` stays empty).

        Returns:
            The track id of each box, in the order given (ids of a frame are distinct).

        Raises:
            ValueError: boxes not ``(K, 4)`` or probabilities not ``(K, NUM_CLASSES)``.
        """
        boxes = np.asarray(boxes, np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (K, 4), got {boxes.shape}")
        if probabilities is not None:
            probabilities = np.asarray(probabilities, np.float64).reshape(-1, NUM_CLASSES)
            if len(probabilities) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(probabilities)} probability rows")
        self.frame += 1
        for track in self.tracks:
            track.age += 1
        previous = np.array([t.box for t in self.tracks], np.float64).reshape(-1, 4)
        penalty = np.array([0.01 * (t.age - 1) for t in self.tracks], np.float64)
        pairs = match_boxes(previous, boxes, self.min_iou, self.max_shift, penalty)
        ids = [0] * len(boxes)
        for i, j in pairs:
            track = self.tracks[i]
            track.box, track.age, track.hits = [int(round(v)) for v in boxes[j]], 0, track.hits + 1
            if probabilities is not None:
                old = np.asarray(track.smoothed, np.float64)
                new = (
                    probabilities[j]
                    if old.size != NUM_CLASSES
                    else self.alpha * probabilities[j] + (1 - self.alpha) * old
                )
                track.smoothed = [float(p) for p in new]
            ids[j] = track.id
        self.tracks = [t for t in self.tracks if t.age <= self.max_age]
        for j in range(len(boxes)):
            if ids[j]:
                continue
            smoothed = [float(p) for p in probabilities[j]] if probabilities is not None else []
            self.tracks.append(Track(self.next_id, [int(round(v)) for v in boxes[j]], 0, 1, smoothed))
            ids[j] = self.next_id
            self.next_id += 1
        return ids

    def smoothed(self, ids: list[int]) -> np.ndarray:
        """``float32 (K, NUM_CLASSES)`` smoothed probabilities of the given live track ids (as ``update`` returned).

        Raises:
            KeyError: an id that is not a live track, or one without probabilities.
        """
        by_id = {t.id: t for t in self.tracks}
        rows = []
        for track_id in ids:
            track = by_id[track_id]
            if len(track.smoothed) != NUM_CLASSES:
                raise KeyError(f"track {track_id} has no probabilities")
            rows.append(track.smoothed)
        return np.asarray(rows, np.float32).reshape(-1, NUM_CLASSES)

    def to_dict(self) -> dict:
        """``{"v": 1, "frame": int, "next_id": int, "max_age", "alpha", "min_iou", "max_shift",
        "tracks": [[id, [x, y, w, h], age, hits, [7 probabilities]], ...]}``: numbers only (about 105 bytes per
        track plus ~100)."""
        return {
            "v": TRACKER_VERSION,
            "frame": int(self.frame),
            "next_id": int(self.next_id),
            "max_age": int(self.max_age),
            "alpha": float(self.alpha),
            "min_iou": float(self.min_iou),
            "max_shift": float(self.max_shift),
            "tracks": [t.to_list() for t in self.tracks],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Tracker:
        """The tracker of ``to_dict()``; settings missing from ``data`` take their defaults.

        Raises:
            ValueError: not a tracker state of this version (wrong keys, types or shapes).
        """
        try:
            if data.get("v") != TRACKER_VERSION:
                raise ValueError(f"tracker state version {data.get('v')!r}, expected {TRACKER_VERSION}")
            tracker = cls(
                max_age=int(data.get("max_age", DEFAULT_MAX_AGE)),
                alpha=float(data.get("alpha", DEFAULT_ALPHA)),
                min_iou=float(data.get("min_iou", DEFAULT_MIN_IOU)),
                max_shift=float(data.get("max_shift", DEFAULT_MAX_SHIFT)),
            )
            tracker.frame = int(data["frame"])
            tracker.next_id = int(data["next_id"])
            for track_id, box, age, hits, smoothed in data["tracks"]:
                box = [int(v) for v in box]
                smoothed = [float(p) for p in smoothed]
                if len(box) != 4 or len(smoothed) not in (0, NUM_CLASSES):
                    raise ValueError("tracker state tracks must be [id, [x, y, w, h], age, hits, [7 floats]]")
                if int(track_id) >= tracker.next_id:
                    raise ValueError("tracker state track id not below next_id")
                tracker.tracks.append(Track(int(track_id), box, int(age), int(hits), smoothed))
            return tracker
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed tracker state: {exc}") from exc
        except ValueError as exc:
            if str(exc).startswith(("tracker state", "malformed")):
                raise
            raise ValueError(f"malformed tracker state: {exc}") from exc
