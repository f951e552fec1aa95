"""Face detection: BlazeFace (default) over a whole-image pyramid, or OpenCV's Viola-Jones Haar cascade.

Two detectors implement ``inference.boxes.FaceDetector``, ``detect(image) -> int32 (K, 4)`` boxes ``(x, y, w, h)``
in pixels:

- ``BlazeFaceDetector`` (default): Google's BlazeFace short-range network (Bazarevsky et al., "BlazeFace:
  Sub-millisecond Neural Face Detection on Mobile GPUs", arXiv:1907.05047), taken from the Apache-2.0
  ``mediapipe==0.10.21`` wheel (``mediapipe/modules/face_detection/face_detection_short_range.tflite``) and converted
  to ONNX with free input height and width by ``scripts/convert_blazeface.py`` (outputs checked against TFLite
  within 1e-4); it ships as ``inference/models/blazeface_short_range.onnx`` (licence beside it) and runs on ONNX
  Runtime, like the emotion model. The fully convolutional network runs on whole pyramid levels, the first
  scaled so that faces of ``min_size`` (16 px by default) are seen at 16 px (an upscale for a smaller
  ``min_size``). ``follow`` re-finds known faces in small windows around them (the streaming follow stage,
  ``inference.stream``). Measured on ``shared/data/faces`` (README "Face detection").
- ``HaarFaceDetector``: ``haarcascade_frontalface_alt2.xml`` on a histogram-equalised image (Viola & Jones,
  "Rapid object detection using a boosted cascade of simple features", CVPR 2001; cascade by Lienhart et al.,
  shipped in ``opencv-python-headless``). Kept as the no-extra-weights fallback (``FER_DETECTOR=haar``).

``default_detector(name)`` picks one by name (``blazeface`` or ``haar``; default ``blazeface``). The box helpers
(``weighted_nms``, ``suppress_contained``, ``suppress_duplicates``) live in ``inference.boxes`` and are re-exported
here for existing callers.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from inference.boxes import (
    FaceDetector,
    KeypointDetector,
    clip_boxes,
    intersection_over_smaller,
    iou_matrix,
    suppress_contained,
    suppress_duplicates,
    weighted_nms,
)
from inference.classifier import MODELS_DIR, ModelLoadError, onnx_session, to_grey, to_rgb, to_rgb_within

__all__ = [
    "BLAZEFACE_MODEL_NAME",
    "DETECTORS",
    "BlazeFaceDetector",
    "FaceDetector",
    "HaarFaceDetector",
    "HybridFaceDetector",
    "KeypointDetector",
    "default_detector",
    "suppress_contained",
    "suppress_duplicates",
    "weighted_nms",
]

BLAZEFACE_MODEL_NAME = "blazeface_short_range.onnx"
DETECTORS = ("auto", "blazeface", "mtcnn", "haar")


def default_detector(name: str | None = None):
    """The detector named by ``name``: ``"auto"`` (the default: ``HybridFaceDetector``, BlazeFace plus MTCNN on
    crowd frames), ``"blazeface"``, ``"mtcnn"`` (``inference.mtcnn.MTCNNDetector`` alone) or ``"haar"``; the web
    platform passes ``settings.FER_DETECTOR``.

    Raises:
        ValueError: unknown detector name.
        ModelLoadError: a model file is missing or unusable.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return HybridFaceDetector()
    if name == "blazeface":
        return BlazeFaceDetector()
    if name == "mtcnn":
        from inference.mtcnn import MTCNNDetector

        return MTCNNDetector()
    if name == "haar":
        return HaarFaceDetector()
    raise ValueError(f"unknown face detector {name!r}: expected one of {', '.join(DETECTORS)}")


def _blazeface_anchors(height: int = 128, width: int = 128) -> np.ndarray:
    """BlazeFace short-range anchor centres for a ``height x width`` input, ``float32 (A, 2)`` as ``(x, y)`` in
    units of the input side for the 128-px input, in input pixels divided by 128 otherwise.

    MediaPipe's ``SsdAnchorsCalculator`` options of ``face_detection_short_range.pbtxt``: 4 layers, strides
    (8, 16, 16, 16), one aspect ratio plus one interpolated scale per layer, ``fixed_anchor_size: true`` (every
    anchor is 1x1) and ``anchor_offset 0.5``. Layers of equal stride share a grid: ``H/8 x W/8`` cells x 2 anchors,
    then ``H/16 x W/16`` cells x 6 anchors, row-major, anchors of a cell consecutive (16x16x2 + 8x8x6 = 896 for
    128x128). The network is fully convolutional, so a larger input (sides multiples of 16) gives the same grid
    extended over it.
    """
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        cells = np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride], axis=1) / 128.0
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFaceDetector:
    """Faces with BlazeFace (short range) run convolutionally over a pyramid of whole-image levels.

    The network is fully convolutional (``scripts/convert_blazeface.py`` exports it with free input height and
    width), so each pyramid level is one ONNX Runtime call on the whole resized image, with the anchor grid
    extended over it (no overlapping tiles, no work done twice). The first level is scaled so that a face of
    ``min_size`` pixels becomes ``MIN_FACE_INPUT`` pixels (an upscale for ``min_size`` below 16); each next level
    is ``LEVEL_STEP`` times smaller, down to one that fits the whole image in 128 px. Each level keeps only the
    faces of the size band it sees well (from ``0.8 * MIN_FACE_INPUT`` to ``1.5 * LEVEL_STEP * MIN_FACE_INPUT``
    level pixels; the last level keeps every size), then all levels are merged with MediaPipe's weighted NMS and a
    containment pass.

    Args:
        model_path: BlazeFace ONNX file (default ``inference/models/blazeface_short_range.onnx``).
        min_size: smallest face side to find, in pixels of the original image (default 16).
        max_side: images whose longer side exceeds this are downscaled first (boxes are mapped back); with
            ``min_size`` it bounds the work: the first level is at most ``MAX_LEVEL_SIDE`` pixels on its longer
            side, so on larger images the smallest face found grows accordingly.
        score_threshold: minimum face probability (sigmoid of the network's logit, 0..1) of faces of at least
            ``SMALL_FACE_INPUT`` level pixels.
        small_score_threshold: the same for smaller faces (the network scores small real faces lower).
        iou_threshold: detections of one face from neighbouring anchors and levels with IoU above this are merged
            (score-weighted average, as MediaPipe's weighted NMS).
        overlap_threshold: after merging, a box whose intersection covers more than this fraction of the smaller
            box is dropped in favour of the higher-scoring one.
        threads: ONNX Runtime intra-op threads (1 suits one-process-per-core workers).

    The defaults (``min_size`` 16, thresholds 0.75 / 0.6) were chosen on ``shared/data/faces`` (README "Face
    detection": exact counts on the hand-counted photos, no false positive on frames without faces).

    Raises:
        ModelLoadError: the model file is missing or is not the BlazeFace network with free input size.
    """

    INPUT = 128  #: the network's training input side in pixels (the last pyramid level fits the image in it)
    #: Smallest face side, in level pixels, found reliably (measured on crowds/ultralight_imgs_26.jpg: all 77 faces
    #: at ~20 px, three quarters at ~14 px; 16 and 18 compared on all of shared/data/faces, README).
    MIN_FACE_INPUT = 16
    LEVEL_STEP = 3.0  #: scale ratio of consecutive pyramid levels (one level sees faces of ~16-110 px)
    SMALL_FACE_INPUT = 28  #: faces under this many level pixels use ``small_score_threshold``
    MAX_LEVEL_SIDE = 2304  #: longest side of the first (largest) pyramid level, in pixels (1.2 x 1920)
    #: Levels larger than ``BLOCK`` px run in ``BLOCK``-px square blocks overlapping by ``BLOCK_OVERLAP`` px (more
    #: than the largest face a non-last level keeps, 72 px), which bounds the network's working memory (measured:
    #: ~170 MB per megapixel of network input, so a 2160x1216 level in one call took a worker to 677 MB RSS).
    BLOCK = 768
    BLOCK_OVERLAP = 96
    #: Follow stage: each window is ``FOLLOW_WINDOW`` px square with the previous face spanning
    #: ``FOLLOW_FACE_FRACTION`` of it (so a face may move about one face side between frames and stay inside).
    FOLLOW_WINDOW = 64
    FOLLOW_FACE_FRACTION = 0.35
    #: BlazeFace boxes are tighter and sit lower than the Haar boxes the serving crops were validated with
    #: (measured on the 21 faces of shared/data/faces: width 0.90x, centre 0.085 Haar widths lower). Boxes are
    #: mapped to Haar geometry, so both detectors give the classifier the same crop of a face.
    BOX_SCALE = 1 / 0.90
    BOX_SHIFT_Y = -0.085 / 0.90  #: centre shift as a fraction of the BlazeFace box width

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        min_size: int = 16,
        max_side: int = 1920,
        score_threshold: float = 0.75,
        small_score_threshold: float = 0.6,
        iou_threshold: float = 0.3,
        overlap_threshold: float = 0.5,
        threads: int = 1,
    ):
        self.model_path = Path(model_path) if model_path else MODELS_DIR / BLAZEFACE_MODEL_NAME
        if not self.model_path.is_file():
            raise ModelLoadError(f"{self.model_path}: face detection model not found")
        self._session = onnx_session(self.model_path, threads)
        shapes = {o.name: o.shape[2:] for o in self._session.get_outputs()}
        input_shape = self._session.get_inputs()[0].shape
        if shapes != {"regressors": [16], "classificators": [1]} or len(input_shape) != 4 or input_shape[3] != 3:
            raise ModelLoadError(f"{self.model_path}: not the BlazeFace short-range network (outputs {shapes})")
        if isinstance(input_shape[1], int) or isinstance(input_shape[2], int):
            raise ModelLoadError(
                f"{self.model_path}: BlazeFace with a fixed input size {input_shape[1:3]}; "
                "re-export it with scripts/convert_blazeface.py (free height and width)"
            )
        self._input = self._session.get_inputs()[0].name
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        self.min_size = min_size
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.small_score_threshold = small_score_threshold
        self.iou_threshold = iou_threshold
        self.overlap_threshold = overlap_threshold

    def _anchor_grid(self, height: int, width: int) -> np.ndarray:
        """Anchor centres in input pixels for a ``height x width`` input (cached per size)."""
        key = (height, width)
        if key not in self._anchors:
            if len(self._anchors) > 32:
                self._anchors.clear()
            self._anchors[key] = _blazeface_anchors(height, width) * self.INPUT
        return self._anchors[key]

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network on ``uint8 (N, H, W, 3)`` RGB (``H``, ``W`` multiples of 16): raw regressions ``float32 (N, A,
        16)`` in input pixels relative to the anchors (``cx, cy, w, h``, then the six keypoints' ``x, y``), face
        probabilities ``float32 (N, A)`` and the anchor centres ``float32 (A, 2)``."""
        x = batch.astype(np.float32)
        x *= 1 / 127.5
        x -= 1.0  # MediaPipe: [-1, 1]
        regressors, logits = self._session.run(None, {self._input: x})
        probability = 1.0 / (1.0 + np.exp(-np.clip(logits[:, :, 0], -80.0, 80.0)))
        return regressors, probability, self._anchor_grid(batch.shape[1], batch.shape[2])

    def _to_haar(self, cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
        """BlazeFace centre/size (image pixels) -> ``(x, y, w, h)`` boxes in Haar geometry (see ``BOX_SCALE``)."""
        cy = cy + self.BOX_SHIFT_Y * w
        w, h = w * self.BOX_SCALE, h * self.BOX_SCALE
        return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)

    def _from_haar(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of ``_to_haar``: ``(x, y, w, h)`` Haar-geometry boxes -> rows ``(cx, cy, w, h)``."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        w, h = boxes[:, 2] / self.BOX_SCALE, boxes[:, 3] / self.BOX_SCALE
        cx = boxes[:, 0] + boxes[:, 2] / 2
        cy = boxes[:, 1] + boxes[:, 3] / 2 - self.BOX_SHIFT_Y * w
        return np.stack([cx, cy, w, h], axis=1)

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """RGB working image (downscaled to ``max_side``) and its scale relative to ``image``."""
        return to_rgb_within(image, self.max_side)

    def level_scales(self, height: int, width: int, min_size: int | None = None) -> list[float]:
        """Pyramid level scales (level pixels per working-image pixel) for a ``height x width`` working image,
        largest first; the last one fits the image's longer side in 128 px. ``min_size``: smallest face side to
        find, px (default: the detector's ``min_size``)."""
        longest = max(height, width)
        smallest = self.min_size if min_size is None else min_size
        scale = min(self.MIN_FACE_INPUT / max(smallest, 1), self.MAX_LEVEL_SIDE / longest)
        scales = []
        while longest * scale > self.INPUT:
            scales.append(scale)
            scale /= self.LEVEL_STEP
        scales.append(self.INPUT / longest)
        return scales

    def detect_with_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes and their scores (full detector).

        Args:
            image: BGR ``(H, W, 3)``, BGRA or grey ``(H, W)`` image (``uint8``/``uint16``/float in [0, 1]).

        Returns:
            ``int32 (K, 4)`` boxes ``(x, y, w, h)`` in pixels of ``image`` (clipped to it, Haar geometry), sorted
            left to right, and their ``float32 (K,)`` face probabilities; ``K`` may be 0.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        boxes, scores, _ = self.detect_with_keypoints(image)
        return boxes, scores

    def detect_with_keypoints(
        self, image: np.ndarray, min_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face boxes, scores and BlazeFace's six keypoints (full detector).

        Args:
            image: as ``detect_with_scores``.
            min_size: smallest face side to look for in this image, px (default: the detector's ``min_size``).
                The pyramid starts where such a face is ``MIN_FACE_INPUT`` px, so faces from about 0.8x that side
                are found and smaller ones are not looked for: a larger ``min_size`` skips the costly first levels
                (the load test's 640x480 frames: 24 instead of 16 px, 20 instead of 43 ms per detection, README
                "Face detection").

        Returns:
            ``(boxes, scores, keypoints)``: as ``detect_with_scores``, plus ``float32 (K, 6, 2)`` keypoints ``(x,
            y)`` in pixels of ``image`` (not clipped): the subject's right eye, left eye, nose tip, mouth centre,
            right ear tragion and left ear tragion (MediaPipe's order), each the score-weighted mean over the merged
            detections like the box.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        rgb, resize = self._prepare(image)
        height, width = rgb.shape[:2]
        scales = self.level_scales(height, width, min_size)
        row_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        for level_index, scale in enumerate(scales):
            lw, lh = max(1, round(width * scale)), max(1, round(height * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            level = cv2.resize(rgb, (lw, lh), interpolation=interp) if (lw, lh) != (width, height) else rgb
            ph, pw = max(self.INPUT, -(-lh // 16) * 16), max(self.INPUT, -(-lw // 16) * 16)
            if (ph, pw) != (lh, lw):
                level = cv2.copyMakeBorder(level, 0, ph - lh, 0, pw - lw, cv2.BORDER_CONSTANT, value=0)
            largest = None if level_index == len(scales) - 1 else 1.5 * self.LEVEL_STEP * self.MIN_FACE_INPUT
            # large levels run in overlapping blocks, which bounds the network's working memory
            step = self.BLOCK - self.BLOCK_OVERLAP
            for y0 in _positions(ph, self.BLOCK, step):
                for x0 in _positions(pw, self.BLOCK, step):
                    block = level[y0 : y0 + self.BLOCK, x0 : x0 + self.BLOCK]
                    found = self._decode(block, scale, x0, y0, largest)
                    if found is not None:
                        row_parts.append(found[0])
                        score_parts.append(found[1])
        if not row_parts:
            return np.zeros((0, 4), np.int32), np.zeros((0,), np.float32), np.zeros((0, 6, 2), np.float32)
        rows, scores = weighted_nms(np.concatenate(row_parts), np.concatenate(score_parts), self.iou_threshold)
        keep = suppress_contained(rows[:, :4], scores, self.overlap_threshold)
        rows, scores = rows[keep] / resize, scores[keep]
        boxes, scores, keypoints = _finish(rows[:, :4], scores, image.shape[1], image.shape[0], rows[:, 4:])
        return boxes, scores, keypoints.reshape(-1, 6, 2).astype(np.float32)

    def _decode(
        self, block: np.ndarray, scale: float, x0: int, y0: int, largest: float | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Faces in one block of a level (``uint8 (h, w, 3)``, sides multiples of 16) at level offset
        ``(x0, y0)``: rows ``float64 (n, 16)`` of a Haar-geometry box and the six keypoints ``(x, y)``, in
        working-image pixels, and their scores, or ``None``; faces are kept in the level's size band (``largest``
        level pixels at most, ``None``: no upper bound)."""
        raw, probability, anchors = self._run(block[None])
        raw, probability = raw[0], probability[0]
        size = raw[:, 2]
        threshold = np.where(size < self.SMALL_FACE_INPUT, self.small_score_threshold, self.score_threshold)
        keep = (probability >= threshold) & (size >= 0.8 * self.MIN_FACE_INPUT)
        if largest is not None:
            keep &= size <= largest
        idx = np.nonzero(keep)[0]
        if len(idx) == 0:
            return None
        r = raw[idx].astype(np.float64)
        offset = anchors[idx].astype(np.float64) + (x0, y0)
        cx = (r[:, 0] + offset[:, 0]) / scale
        cy = (r[:, 1] + offset[:, 1]) / scale
        keypoints = (r[:, 4:16].reshape(-1, 6, 2) + offset[:, None, :]) / scale
        boxes = self._to_haar(cx, cy, r[:, 2] / scale, r[:, 3] / scale)
        return np.concatenate([boxes, keypoints.reshape(-1, 12)], axis=1), probability[idx]

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes: ``int32 (K, 4)`` ``(x, y, w, h)`` in pixels of ``image``, left to right (see
        ``detect_with_scores``).

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        return self.detect_with_scores(image)[0]

    def follow(
        self, image: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Find each of ``boxes`` again near where it was (the streaming follow stage; no full detection).

        For every box, a ``FOLLOW_WINDOW`` px square window is cut around it, scaled so that the box spans
        ``FOLLOW_FACE_FRACTION`` of the window (the window covers ~2.9 box sides), and all windows run as one
        batch. In each window the most probable detection whose centre lies within ``0.3`` window sides of the
        window centre is the face's new position.

        Args:
            image: the new frame (as ``detect``).
            boxes: ``(K, 4)`` ``(x, y, w, h)`` boxes (Haar geometry, as ``detect`` returns them) in pixels of
                ``image``, e.g. the previous frame's faces.
            score_threshold: a face scoring below this in its window is lost.

        Returns:
            ``int32 (K, 4)`` boxes in pixels of ``image``, clipped to it (row ``i`` follows ``boxes[i]``), and
            ``float32 (K,)`` scores, 0 where the face was lost (that row's box is then ``boxes[i]`` clipped).

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        found, scores, _ = self.follow_with_keypoints(image, boxes, score_threshold)
        return found, scores

    def follow_with_keypoints(
        self, image: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``follow`` plus the six keypoints of each followed face: ``float32 (K, 6, 2)`` ``(x, y)`` in pixels of
        ``image`` (order as ``detect_with_keypoints``), ``NaN`` for a lost face.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        height, width = image.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, 4), np.int32), np.zeros((0,), np.float32), np.zeros((0, 6, 2), np.float32)
        rgb = to_rgb(image)
        window = self.FOLLOW_WINDOW
        prior = self._from_haar(boxes)
        tiles, transforms = [], []
        for cx, cy, w, h in prior:
            scale = window * self.FOLLOW_FACE_FRACTION / max(w, h, 1.0)
            affine = np.array([[scale, 0, window / 2 - scale * cx], [0, scale, window / 2 - scale * cy]], np.float32)
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            tiles.append(cv2.warpAffine(rgb, affine, (window, window), flags=interp, borderValue=(0, 0, 0)))
            transforms.append((cx, cy, scale))
        raw, probability, anchors = self._run(np.stack(tiles))
        centres = raw[:, :, :2] + anchors[None]
        near = np.hypot(centres[:, :, 0] - window / 2, centres[:, :, 1] - window / 2) < 0.3 * window
        probability = np.where(near, probability, 0.0)
        best = np.argmax(probability, axis=1)
        out, scores = boxes.copy(), np.zeros(len(boxes), np.float32)
        keypoints = np.full((len(boxes), 6, 2), np.nan, np.float64)
        for i, (cx, cy, scale) in enumerate(transforms):
            j = best[i]
            if probability[i, j] < score_threshold:
                continue
            ncx = cx + (centres[i, j, 0] - window / 2) / scale
            ncy = cy + (centres[i, j, 1] - window / 2) / scale
            found = self._to_haar(
                np.array([ncx]), np.array([ncy]), np.array([raw[i, j, 2] / scale]), np.array([raw[i, j, 3] / scale])
            )
            out[i], scores[i] = found[0], probability[i, j]
            points = raw[i, j, 4:16].reshape(6, 2) + anchors[j]
            keypoints[i] = (cx, cy) + (points - window / 2) / scale
        out = np.round(clip_boxes(out, width, height)).astype(np.int32)
        lost = (out[:, 2] <= 0) | (out[:, 3] <= 0)
        scores[lost] = 0.0
        keypoints[lost] = np.nan
        return out, scores, keypoints.astype(np.float32)


def _positions(length: int, block: int, step: int) -> list[int]:
    """Block origins along one axis: every ``step`` pixels, plus a last block flush with the end."""
    if length <= block:
        return [0]
    positions = list(range(0, length - block + 1, step))
    if positions[-1] != length - block:
        positions.append(length - block)
    return positions


def _finish(
    boxes: np.ndarray, scores: np.ndarray, width: int, height: int, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes clipped to the image, rounded to ``int32``, empty ones dropped, sorted left to right; their scores and
    the matching rows of ``extra`` (``(K, D)`` per-box columns such as keypoints, ``(K', 0)`` when ``None``)."""
    extra = np.zeros((len(boxes), 0)) if extra is None else np.asarray(extra)
    boxes = np.round(clip_boxes(boxes, width, height))
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    boxes, scores, extra = boxes[keep], np.asarray(scores)[keep], extra[keep]
    order = np.argsort(boxes[:, 0], kind="stable")
    return boxes[order].astype(np.int32), scores[order].astype(np.float32), extra[order]


class HybridFaceDetector:
    """BlazeFace on every frame, plus MTCNN on crowd frames for the small faces BlazeFace misses (the default).

    BlazeFace (``BlazeFaceDetector``) is fast and exact on classroom frames but finds few faces under ~16 px; MTCNN
    (``inference.mtcnn.MTCNNDetector``, 12-px window) finds the back rows of a crowd but costs ~10x as much on a
    640x480 frame. So MTCNN runs only when BlazeFace's own result says "crowd": at least ``CROWD_MIN_FACES`` faces
    under ``CROWD_FACE_SIDE`` px. Its faces that no BlazeFace face covers (IoU over ``MERGE_IOU`` or more than half
    of the smaller box inside the other) are added, mapped to the Haar box geometry of the other detectors, without
    keypoints (``NaN``: no head pose; they are nearly all too small to read anyway). The follow stage is
    BlazeFace's.

    Measured on ``shared/data/faces`` (README "Face detection"): no hand-counted photo and no crowd photo of up to 27
    faces triggers MTCNN (each has at most 1 face under 32 px); the two large crowds do (69 and 77 of their
    BlazeFace faces are under 32 px).

    Args:
        blazeface: the ``BlazeFaceDetector`` (default: a new one with its defaults).
        mtcnn: the ``MTCNNDetector`` (default: a new one, ``min_size`` 12, ``max_side`` ``MTCNN_MAX_SIDE``), built
            on first use.
        threads: ONNX Runtime intra-op threads of the detectors it creates.

    Raises:
        ModelLoadError: a model file is missing or unusable.
    """

    CROWD_MIN_FACES = 8  #: BlazeFace faces under ``CROWD_FACE_SIDE`` px that make a frame a crowd frame
    CROWD_FACE_SIDE = 32  #: px (box side, Haar geometry)
    MERGE_IOU = 0.3  #: an MTCNN face overlapping a BlazeFace face more than this is the same face
    #: MTCNN boxes (brow to chin) are 0.78x as wide and 1.04x as tall as the Haar-geometry boxes of the same faces,
    #: same centre (measured on the 21 faces of the portraits and group photos of shared/data/faces).
    #: MTCNN runs on frames downscaled to at most this side: on a 1920x1080 frame it then finds faces from ~23 px
    #: (BlazeFace from 16), on 1280x720 from 15 px. Measured on a 1280x720 crowd frame (77 faces of ~30 px): 0.50 s
    #: instead of 0.75 s at 1280, the same faces; a worker's RSS after a 1080p crowd frame (with 384-px PNet blocks)
    #: 313 MB, 321 at 1280, 391 at full size; the crowd photos of shared/data/faces are at most 1024 px wide.
    MTCNN_MAX_SIDE = 1024
    MTCNN_WIDTH_RATIO = 0.78
    MTCNN_HEIGHT_RATIO = 1.04

    def __init__(self, blazeface: BlazeFaceDetector | None = None, mtcnn=None, threads: int = 1):
        self.blazeface = blazeface or BlazeFaceDetector(threads=threads)
        self._mtcnn = mtcnn
        self._threads = threads

    @property
    def mtcnn(self):
        """The ``MTCNNDetector`` (loaded on first use: workers that never see a crowd do not load it)."""
        if self._mtcnn is None:
            from inference.mtcnn import MTCNNDetector

            self._mtcnn = MTCNNDetector(max_side=self.MTCNN_MAX_SIDE, threads=self._threads)
        return self._mtcnn

    def is_crowd(self, boxes: np.ndarray) -> bool:
        """Whether BlazeFace's ``int (K, 4)`` boxes of a frame make it a crowd frame (see the class docstring)."""
        boxes = np.asarray(boxes).reshape(-1, 4)
        return int((np.maximum(boxes[:, 2], boxes[:, 3]) < self.CROWD_FACE_SIDE).sum()) >= self.CROWD_MIN_FACES

    def _to_haar(self, boxes: np.ndarray) -> np.ndarray:
        """MTCNN ``(x, y, w, h)`` boxes -> square Haar-geometry boxes around the same centre, ``float64 (K, 4)``."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        side = (boxes[:, 2] / self.MTCNN_WIDTH_RATIO + boxes[:, 3] / self.MTCNN_HEIGHT_RATIO) / 2
        cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
        return np.stack([cx - side / 2, cy - side / 2, side, side], axis=1)

    def detect_with_keypoints(
        self, image: np.ndarray, min_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces as ``BlazeFaceDetector.detect_with_keypoints``: ``int32 (K, 4)`` boxes, ``float32 (K,)`` scores
        and ``float32 (K, 6, 2)`` keypoints (``NaN`` for faces only MTCNN found), left to right.

        ``min_size``: smallest face side to look for, px (``BlazeFaceDetector.detect_with_keypoints``). Above
        BlazeFace's own ``min_size`` the MTCNN pass, which is there for the faces BlazeFace finds too few of
        (under ~16 px), does not run.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        boxes, scores, keypoints = self.blazeface.detect_with_keypoints(image, min_size)
        if (min_size is not None and min_size > self.blazeface.min_size) or not self.is_crowd(boxes):
            return boxes, scores, keypoints
        extra, extra_scores = self.mtcnn.detect_with_scores(image)
        extra = self._to_haar(extra)
        if len(boxes) and len(extra):
            known = boxes.astype(np.float64)
            overlap = iou_matrix(extra, known).max(axis=1) > self.MERGE_IOU
            inside = (intersection_over_smaller(extra, known) > 0.5).any(axis=1)
            new = ~(overlap | inside)
            extra, extra_scores = extra[new], extra_scores[new]
        if len(extra) == 0:
            return boxes, scores, keypoints
        rows = np.concatenate([boxes.astype(np.float64), extra])
        all_scores = np.concatenate([scores, extra_scores.astype(np.float32)])
        points = np.concatenate([keypoints.reshape(-1, 12), np.full((len(extra), 12), np.nan)])
        merged, merged_scores, merged_points = _finish(rows, all_scores, image.shape[1], image.shape[0], points)
        return merged, merged_scores, merged_points.reshape(-1, 6, 2).astype(np.float32)

    def detect_with_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of ``detect_with_keypoints``.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        boxes, scores, _ = self.detect_with_keypoints(image)
        return boxes, scores

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes, ``int32 (K, 4)`` ``(x, y, w, h)`` in pixels of ``image``, left to right.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        return self.detect_with_keypoints(image)[0]

    def follow(
        self, image: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """BlazeFace's follow stage (``BlazeFaceDetector.follow``)."""
        return self.blazeface.follow(image, boxes, score_threshold)

    def follow_with_keypoints(
        self, image: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Follow the faces of the last frame: BlazeFace's follow stage (``BlazeFaceDetector.follow_with_keypoints``),
        and for the small faces of a crowd a second opinion. When ``boxes`` make a crowd (``is_crowd``), each face
        under ``CROWD_FACE_SIDE`` px is also checked where it was by MTCNN's last stage (``MTCNNDetector.refine``:
        ONet on the square box around it); it keeps its box, the higher of the two probabilities as its score (found
        when that reaches ``score_threshold``: finding a face takes ONet's 0.8, a face once found is kept on weaker
        evidence, a hysteresis) and no keypoints (``NaN``: no head pose for such faces between keyframes; under 24
        px they are too small to read anyway).

        Why: a crowd frame holds many faces only MTCNN finds (10-20 px), which BlazeFace's follow loses on every
        frame, and the small faces it does follow drift to their neighbours (boxes grew by a sixth in four frames),
        so every crowd frame became a full detection. Measured on crowds/ultralight_imgs_25.jpg at 1280x720 with
        sensor noise: BlazeFace's follow lost 54-59 of 161 faces per frame, both together 0-2. The boxes stay where
        the last keyframe put them (ONet's refined boxes, fed back, drift too); faces this small move by few pixels
        before the next keyframe re-finds them.

        Returns and raises as ``BlazeFaceDetector.follow_with_keypoints``.
        """
        prior = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not self.is_crowd(prior):
            return self.blazeface.follow_with_keypoints(image, prior, score_threshold)
        out, scores, keypoints = self.blazeface.follow_with_keypoints(image, prior, score_threshold)
        small = np.flatnonzero(prior[:, 2:].max(axis=1) < self.CROWD_FACE_SIDE)
        # the square candidate ONet gets for a face: its MTCNN height (see _to_haar) around its centre
        side = prior[small, 2:].max(axis=1) * self.MTCNN_HEIGHT_RATIO
        centre = prior[small, :2] + prior[small, 2:] / 2
        candidates = np.concatenate([centre - side[:, None] / 2, side[:, None], side[:, None]], axis=1)
        found = self.mtcnn.refine(image, candidates)[1]
        height, width = image.shape[:2]
        out[small] = np.round(clip_boxes(prior[small], width, height)).astype(np.int32)
        scores[small] = np.maximum(scores[small], found)
        keypoints[small] = np.nan
        return out, scores, keypoints


class HaarFaceDetector:
    """Detect frontal faces with OpenCV's Haar cascade (see the module docstring).

    Args:
        cascade: cascade XML file name in ``cv2.data.haarcascades`` or a path.
        scale_factor: image pyramid step of ``detectMultiScale`` (1.1 = 10 % per level).
        min_neighbors: overlapping raw detections needed to keep a face (higher = fewer false positives).
        min_size: smallest face side in pixels (of the original image).
        max_side: images whose longer side exceeds this are downscaled for detection (boxes are mapped back).
        overlap_threshold: boxes whose intersection covers more than this fraction of the smaller box are merged
            (the larger box is kept).

    Raises:
        FileNotFoundError: the cascade file cannot be loaded.
    """

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_alt2.xml",
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        max_side: int = 1280,
        overlap_threshold: float = 0.5,
    ):
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade  # type: ignore[attr-defined]  # cv2.data: not in the stubs
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FileNotFoundError(f"{path}: cannot load the Haar cascade")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side
        self.overlap_threshold = overlap_threshold

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face bounding boxes.

        Args:
            image: BGR ``(H, W, 3)``, BGRA or grey ``(H, W)`` image (``uint8``/``uint16``).

        Returns:
            ``int32 (K, 4)`` boxes ``(x, y, w, h)`` in pixels of ``image``, sorted left to right; ``K`` may be 0.

        Raises:
            ValueError: unsupported image shape or dtype.
        """
        grey = to_grey(image)
        scale = 1.0
        longest = max(grey.shape[:2])
        if longest > self.max_side:
            scale = self.max_side / longest
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        min_side = max(12, int(round(self.min_size * scale)))
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        boxes: np.ndarray = np.asarray(found, dtype=np.float64).reshape(-1, 4)
        if scale != 1.0:
            boxes = boxes / scale
        boxes = suppress_duplicates(boxes, self.overlap_threshold)
        pixels = np.round(boxes).astype(np.int32)
        return pixels[np.argsort(pixels[:, 0], kind="stable")] if len(pixels) else pixels
