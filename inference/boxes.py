"""Box geometry shared by the detectors and the streaming tracker: IoU, suppression, clipping, association.

Every box is ``(x, y, w, h)`` in pixels (float or int), ``x, y`` the top-left corner. ``FaceDetector`` is the
interface every face detector implements and ``EmotionRecognizer`` is typed with.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FaceDetector(Protocol):
    """What ``EmotionRecognizer`` needs from a face detector.

    ``detect(image)`` takes a BGR ``uint8 (H, W, 3)``, BGRA or grey ``(H, W)`` image (``uint8``/``uint16``/float in
    [0, 1]) and returns ``int32 (K, 4)`` boxes ``(x, y, w, h)`` in pixels of ``image``, inside it, left to right
    (``K`` may be 0). It raises ``ValueError`` for an unsupported shape or dtype.
    """

    def detect(self, image: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class FollowingDetector(FaceDetector, Protocol):
    """A ``FaceDetector`` with a follow stage (``BlazeFaceDetector``), which ``StreamAnalyzer`` uses between
    keyframes.

    ``follow(image, boxes, score_threshold)`` finds each of the ``float (K, 4)`` ``boxes`` again near where it was
    and returns ``(int32 (K, 4) boxes, float32 (K,) face probabilities)``, in the order given.
    """

    def follow(
        self, image: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class KeypointDetector(FollowingDetector, Protocol):
    """A ``FollowingDetector`` that also gives facial keypoints (``BlazeFaceDetector``: right eye, left eye, nose
    tip, mouth centre, right ear tragion, left ear tragion, the subject's right and left), which head pose
    (``inference.pose``) is estimated from.

    ``detect_with_keypoints(image, min_size=None)`` returns ``(int32 (K, 4) boxes, float32 (K,) scores, float32
    (K, 6, 2) keypoints)``, keypoints ``(x, y)`` in pixels of ``image``, left to right, looking for faces of about
    ``min_size`` px and larger (``None``: the detector's own smallest face); ``follow_with_keypoints(image, boxes,
    score_threshold)`` the same in the order of ``boxes`` (keypoints ``NaN`` for a lost face).
    """

    def detect_with_keypoints(
        self, image: np.ndarray, min_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def follow_with_keypoints(
        self, image: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Args:
        a: ``float (N, 4)`` boxes; b: ``float (M, 4)`` boxes.

    Returns:
        ``float64 (N, M)``, each in 0..1 (0 for empty boxes).
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(a[:, None, 0], b[:, 0])
    iy = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(a[:, None, 1], b[:, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    return inter / np.maximum(union, 1e-9)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box ``(4,)`` with each of ``boxes`` ``(K, 4)``: ``float64 (K,)``."""
    return iou_matrix(np.asarray(box)[None], boxes)[0]


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Weighted non-maximum suppression (MediaPipe ``NonMaxSuppressionCalculator``, ``WEIGHTED``; BlazeFace paper,
    Bazarevsky et al. 2019, section 2.2): take the highest-scoring box, replace it by the score-weighted mean of
    all boxes overlapping it with IoU above ``iou_threshold``, remove those, repeat.

    Args:
        boxes: ``float (K, 4 + D)``: ``(x, y, w, h)`` and ``D >= 0`` more columns (e.g. keypoint coordinates) that
            are averaged with the same weights; IoU uses the first four.
        scores: ``float (K,)``.

    Returns:
        Merged rows ``float64 (K', 4 + D)`` and their scores (the best score of each group), best first.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float64)
    columns = boxes.shape[1] if boxes.ndim == 2 else 4
    boxes, scores = boxes.reshape(-1, columns)[order], np.asarray(scores)[order]
    overlaps = iou_matrix(boxes[:, :4], boxes[:, :4]) > iou_threshold
    out_boxes, out_scores = [], []
    remaining = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        group = remaining & overlaps[i]
        group[i] = True
        weights = scores[group][:, None]
        out_boxes.append((boxes[group] * weights).sum(axis=0) / weights.sum())
        out_scores.append(scores[i])
        remaining &= ~group
    return np.asarray(out_boxes, np.float64).reshape(-1, columns), np.asarray(out_scores)


def intersection_over_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``float64 (N, M)``: the intersection of ``a[i]`` and ``b[j]`` over the area of the smaller of the two
    (1 when one box lies inside the other), for ``(x, y, w, h)`` boxes ``a (N, 4)`` and ``b (M, 4)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(a[:, None, 0], b[:, 0])
    iy = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(a[:, None, 1], b[:, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    smaller = np.minimum((a[:, 2] * a[:, 3])[:, None], (b[:, 2] * b[:, 3])[None, :])
    return inter / np.maximum(smaller, 1e-12)


def _contained(boxes: np.ndarray, overlap_threshold: float) -> np.ndarray:
    """``bool (K, K)``: the intersection of boxes i and j covers more than ``overlap_threshold`` of the smaller."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    ix = np.minimum(b[:, None, 0] + b[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(b[:, None, 0], b[:, 0])
    iy = np.minimum(b[:, None, 1] + b[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(b[:, None, 1], b[:, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area = b[:, 2] * b[:, 3]
    return inter > overlap_threshold * np.minimum(area[:, None], area[None, :])


def suppress_contained(boxes: np.ndarray, scores: np.ndarray, overlap_threshold: float = 0.5) -> np.ndarray:
    """Indices of boxes to keep: in score order, a box whose intersection with a kept box covers more than
    ``overlap_threshold`` of the smaller of the two is dropped (catches a face found at two pyramid levels with
    different extents, which IoU alone misses).

    Args:
        boxes: ``float (K, 4)``.
        scores: ``float (K,)``.

    Returns:
        ``int64 (K',)`` indices into ``boxes``, best first.
    """
    covered = _contained(boxes, overlap_threshold)
    kept: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if not any(covered[i, k] for k in kept):
            kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def suppress_duplicates(boxes: np.ndarray, overlap_threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression by size: keep the largest box, drop boxes whose intersection with a kept box
    covers more than ``overlap_threshold`` of the smaller of the two, repeat.

    Args:
        boxes: ``float (K, 4)``.
        overlap_threshold: 0..1.

    Returns:
        The kept boxes, ``float (K', 4)``, largest first.
    """
    boxes = np.asarray(boxes)
    if len(boxes) < 2:
        return boxes
    order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")
    keep = suppress_contained(boxes[order], np.arange(len(order), 0, -1, dtype=np.float64), overlap_threshold)
    return boxes[order][np.sort(keep)]


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Boxes cut to the image ``[0, width] x [0, height]``: ``float64 (K, 4)`` (a box outside becomes empty,
    ``w`` or ``h`` 0)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1 = np.clip(boxes[:, 0], 0, width)
    y1 = np.clip(boxes[:, 1], 0, height)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def associate(previous: np.ndarray, current: np.ndarray, min_iou: float = 0.3) -> list[tuple[int, int]]:
    """Match boxes of one frame to boxes of the next: greedy, highest IoU first, each box used once.

    The one place where boxes of consecutive frames are paired (the stream's keyframes use it to carry tracks
    over; an optimal assignment, e.g. ``scipy.optimize.linear_sum_assignment`` on ``1 - iou_matrix``, can replace
    it here).

    Args:
        previous: ``float (N, 4)`` boxes; current: ``float (M, 4)`` boxes.
        min_iou: pairs overlapping less than this are not matched.

    Returns:
        ``(i, j)`` pairs, ``previous[i]`` matched to ``current[j]``, in order of decreasing IoU.
    """
    overlaps = iou_matrix(previous, current)
    pairs: list[tuple[int, int]] = []
    if overlaps.size == 0:
        return pairs
    used_i, used_j = set(), set()
    flat = np.argsort(-overlaps, axis=None, kind="stable")
    for index in flat:
        i, j = divmod(int(index), overlaps.shape[1])
        if overlaps[i, j] < min_iou:
            break
        if i in used_i or j in used_j:
            continue
        pairs.append((i, j))
        used_i.add(i)
        used_j.add(j)
    return pairs
