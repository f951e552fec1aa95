"""Face detection: BlazeFace (default) over a tile pyramid, or OpenCV's Viola-Jones Haar cascade.

Two detectors with one interface, ``detect(image) -> int32 (K, 4)`` boxes ``(x, y, w, h)`` in pixels:

- ``BlazeFaceDetector`` (default): Google's BlazeFace short-range network (Bazarevsky et al., "BlazeFace:
  Sub-millisecond Neural Face Detection on Mobile GPUs", arXiv:1907.05047), taken from the Apache-2.0
  ``mediapipe==0.10.21`` wheel (``mediapipe/modules/face_detection/face_detection_short_range.tflite``) and converted
  to ONNX by ``scripts/convert_blazeface.py`` (outputs checked against TFLite within 1e-4); it ships as
  ``inference/models/blazeface_short_range.onnx`` (licence beside it) and runs on ONNX Runtime, like the emotion
  model. The network sees 128x128 inputs and finds faces of ~15-85 % of its input side, so the image is covered
  by a pyramid of overlapping square tiles, from the whole image down to tiles ``min_size / 0.15`` pixels wide,
  all run as one batch. Measured on the hand-counted photos in ``shared/data/faces`` (README "Face detection"):
  exact counts on all six, more small faces found than Haar, and several times faster.
- ``HaarFaceDetector``: ``haarcascade_frontalface_alt2.xml`` on a histogram-equalised image (Viola & Jones,
  "Rapid object detection using a boosted cascade of simple features", CVPR 2001; cascade by Lienhart et al.,
  shipped in ``opencv-python-headless``). Kept as the no-extra-weights fallback (``FER_DETECTOR=haar``).

``default_detector(name)`` picks one by name (``blazeface`` or ``haar``; default ``blazeface``).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from inference.classifier import MODELS_DIR, ModelLoadError, to_grey, to_rgb

BLAZEFACE_MODEL_NAME = "blazeface_short_range.onnx"
DETECTORS = ("blazeface", "haar")


def default_detector(name: str | None = None):
    """The detector named by ``name`` (``"blazeface"``, the default, or ``"haar"``; the web platform passes
    ``settings.FER_DETECTOR``).

    Raises:
        ValueError: unknown detector name.
        ModelLoadError: the BlazeFace model file is missing or unusable.
    """
    name = (name or "blazeface").strip().lower()
    if name == "blazeface":
        return BlazeFaceDetector()
    if name == "haar":
        return HaarFaceDetector()
    raise ValueError(f"unknown face detector {name!r}: expected one of {', '.join(DETECTORS)}")


def _blazeface_anchors() -> np.ndarray:
    """BlazeFace short-range anchor centres, ``float32 (896, 2)`` as ``(x, y)`` in units of the 128-px input.

    MediaPipe's ``SsdAnchorsCalculator`` options of ``face_detection_short_range.pbtxt``: 4 layers, strides
    (8, 16, 16, 16), one aspect ratio plus one interpolated scale per layer, ``fixed_anchor_size: true`` (every
    anchor is 1x1) and ``anchor_offset 0.5``. Layers of equal stride share a grid: 16x16 cells x 2 anchors, then
    8x8 cells x 6 anchors, row-major, anchors of a cell consecutive.
    """
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.mgrid[0:grid, 0:grid]
        cells = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


class BlazeFaceDetector:
    """Faces with BlazeFace (short range) over a pyramid of overlapping square tiles.

    Args:
        model_path: BlazeFace ONNX file (default ``inference/models/blazeface_short_range.onnx``).
        min_size: smallest face side to find, in pixels of the original image (sets the smallest tile:
            ``min_size / MIN_FACE_FRACTION``).
        max_side: images whose longer side exceeds this are downscaled first (boxes are mapped back).
        score_threshold: minimum face probability (sigmoid of the network's logit), 0..1.
        iou_threshold: detections of one face from overlapping tiles and levels with IoU above this are merged
            (score-weighted average, as MediaPipe's weighted NMS).
        overlap_threshold: after merging, a box whose intersection covers more than this fraction of the smaller
            box is dropped in favour of the higher-scoring one.
        threads: ONNX Runtime intra-op threads (1 suits one-process-per-core workers).

    Raises:
        ModelLoadError: the model file is missing or is not the BlazeFace network.
    """

    INPUT = 128  #: network input side in pixels
    #: Faces are found from ~14 % to ~86 % of the input side (measured: a portrait scaled into a 128-px canvas
    #: scores > 0.9 from 18 to 110 px); tiles are sized so that every face falls in 15-30 % of some level.
    MIN_FACE_FRACTION = 0.15
    TILE_STRIDE = 0.6  #: tile step as a fraction of the tile side (faces up to 40 % of a tile are never cut)
    #: BlazeFace boxes are tighter and sit lower than the Haar boxes the serving crops were validated with
    #: (measured on the 21 faces of shared/data/faces: width 0.90x, centre 0.085 Haar widths lower). Boxes are
    #: mapped to Haar geometry, so both detectors give the classifier the same crop of a face.
    BOX_SCALE = 1 / 0.90
    BOX_SHIFT_Y = -0.085 / 0.90  #: centre shift as a fraction of the BlazeFace box width
    BATCH = 4  #: tiles per ONNX Runtime call (measured: larger batches are slower per tile on CPU)

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        min_size: int = 24,
        max_side: int = 1280,
        score_threshold: float = 0.75,
        iou_threshold: float = 0.3,
        overlap_threshold: float = 0.5,
        threads: int = 1,
    ):
        import onnxruntime as ort

        self.model_path = Path(model_path) if model_path else MODELS_DIR / BLAZEFACE_MODEL_NAME
        if not self.model_path.is_file():
            raise ModelLoadError(f"{self.model_path}: face detection model not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{self.model_path}: not a loadable ONNX model ({exc})") from exc
        shapes = {o.name: o.shape[1:] for o in self._session.get_outputs()}
        if shapes != {"regressors": [896, 16], "classificators": [896, 1]}:
            raise ModelLoadError(f"{self.model_path}: not the BlazeFace short-range network (outputs {shapes})")
        self._input = self._session.get_inputs()[0].name
        self._anchors = _blazeface_anchors() * self.INPUT
        self.min_size = min_size
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.overlap_threshold = overlap_threshold

    def _tiles(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tile pyramid of ``rgb``: ``uint8 (T, 128, 128, 3)`` tiles and ``float64 (T, 3)`` rows
        ``(x0, y0, scale)``: tile pixel ``(u, v)`` is image pixel ``(x0 + u / scale, y0 + v / scale)``."""
        height, width = rgb.shape[:2]
        side = float(max(height, width))
        smallest = max(self.INPUT, self.min_size / self.MIN_FACE_FRACTION)
        tiles, origins = [], []
        while True:
            scale = self.INPUT / side
            level = rgb
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
                level = cv2.resize(rgb, size, interpolation=interp)
            lh, lw = level.shape[:2]
            if lh < self.INPUT or lw < self.INPUT:
                level = cv2.copyMakeBorder(
                    level, 0, max(0, self.INPUT - lh), 0, max(0, self.INPUT - lw), cv2.BORDER_CONSTANT, value=0
                )
            step = int(self.INPUT * self.TILE_STRIDE)
            for y0 in _positions(level.shape[0], self.INPUT, step):
                for x0 in _positions(level.shape[1], self.INPUT, step):
                    tiles.append(level[y0 : y0 + self.INPUT, x0 : x0 + self.INPUT])
                    origins.append((x0 / scale, y0 / scale, scale))
            if side / 2 < smallest:
                break
            side /= 2
        return np.stack(tiles), np.asarray(origins, dtype=np.float64)

    def detect_with_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes and their scores.

        Args:
            image: BGR ``(H, W, 3)``, BGRA or grey ``(H, W)`` image (``uint8``/``uint16``/float in [0, 1]).

        Returns:
            ``int32 (K, 4)`` boxes ``(x, y, w, h)`` in pixels of ``image`` (clipped to it), sorted left to right,
            and their ``float32 (K,)`` face probabilities; ``K`` may be 0.

        Raises:
            ValueError: unsupported image shape or dtype.
        """
        rgb = to_rgb(image)
        height, width = rgb.shape[:2]
        resize = 1.0
        if max(height, width) > self.max_side:
            resize = self.max_side / max(height, width)
            rgb = cv2.resize(rgb, None, fx=resize, fy=resize, interpolation=cv2.INTER_AREA)
        tiles, origins = self._tiles(rgb)
        boxes, scores = [], []
        for start in range(0, len(tiles), self.BATCH):
            batch = tiles[start : start + self.BATCH].astype(np.float32) / 127.5 - 1.0  # MediaPipe: [-1, 1]
            regressors, logits = self._session.run(None, {self._input: batch})
            probability = 1.0 / (1.0 + np.exp(-np.clip(logits[:, :, 0], -80.0, 80.0)))
            tile_idx, anchor_idx = np.nonzero(probability >= self.score_threshold)
            if len(tile_idx) == 0:
                continue
            raw = regressors[tile_idx, anchor_idx, :4]  # (cx, cy, w, h) offsets in input pixels
            centre = raw[:, :2] + self._anchors[anchor_idx]
            x0, y0, scale = origins[start + tile_idx].T
            w, h = raw[:, 2] / scale, raw[:, 3] / scale
            cx, cy = x0 + centre[:, 0] / scale, y0 + centre[:, 1] / scale + self.BOX_SHIFT_Y * w
            w, h = w * self.BOX_SCALE, h * self.BOX_SCALE
            boxes.append(np.stack([cx - w / 2, cy - h / 2, w, h], axis=1))
            scores.append(probability[tile_idx, anchor_idx])
        if not boxes:
            return np.zeros((0, 4), np.int32), np.zeros((0,), np.float32)
        boxes, scores = weighted_nms(np.concatenate(boxes), np.concatenate(scores), self.iou_threshold)
        keep = suppress_contained(boxes, scores, self.overlap_threshold)
        boxes, scores = boxes[keep] / resize, scores[keep]
        boxes = _clip(boxes, width / resize, height / resize)
        order = np.argsort(boxes[:, 0], kind="stable")
        return np.round(boxes[order]).astype(np.int32), scores[order].astype(np.float32)

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes: ``int32 (K, 4)`` ``(x, y, w, h)`` in pixels of ``image``, left to right (see
        ``detect_with_scores``).

        Raises:
            ValueError: unsupported image shape or dtype.
        """
        return self.detect_with_scores(image)[0]


def _positions(length: int, tile: int, step: int) -> list[int]:
    """Tile origins along one axis: every ``step`` pixels, plus a last tile flush with the end."""
    if length <= tile:
        return [0]
    positions = list(range(0, length - tile + 1, step))
    if positions[-1] != length - tile:
        positions.append(length - tile)
    return positions


def _clip(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """``(x, y, w, h)`` boxes cut to the image ``[0, width] x [0, height]``."""
    x1 = np.clip(boxes[:, 0], 0, width)
    y1 = np.clip(boxes[:, 1], 0, height)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one ``(x, y, w, h)`` box with each of ``boxes`` ``(K, 4)``."""
    ix = np.clip(np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter + 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Weighted non-maximum suppression (MediaPipe ``NonMaxSuppressionCalculator``, ``WEIGHTED``; BlazeFace paper
    section 2.2): take the highest-scoring box, replace it by the score-weighted mean of all boxes overlapping it
    with IoU above ``iou_threshold``, remove those, repeat.

    Args:
        boxes: ``float (K, 4)`` ``(x, y, w, h)``.
        scores: ``float (K,)``.

    Returns:
        Merged boxes ``float64 (K', 4)`` and their scores (the best score of each group), best first.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order].astype(np.float64), scores[order]
    out_boxes, out_scores = [], []
    remaining = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        group = remaining & (_iou(boxes[i], boxes) > iou_threshold)
        group[i] = True
        weights = scores[group][:, None]
        out_boxes.append((boxes[group] * weights).sum(axis=0) / weights.sum())
        out_scores.append(scores[i])
        remaining &= ~group
    return np.asarray(out_boxes).reshape(-1, 4), np.asarray(out_scores)


def suppress_contained(boxes: np.ndarray, scores: np.ndarray, overlap_threshold: float = 0.5) -> np.ndarray:
    """Indices of boxes to keep: in score order, a box whose intersection with a kept box covers more than
    ``overlap_threshold`` of the smaller of the two is dropped (catches a face found at two pyramid levels with
    different extents, which IoU alone misses).

    Args:
        boxes: ``float (K, 4)`` ``(x, y, w, h)``.
        scores: ``float (K,)``.

    Returns:
        ``int64 (K',)`` indices into ``boxes``, best first.
    """
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        x, y, w, h = boxes[i]
        duplicate = False
        for k in kept:
            kx, ky, kw, kh = boxes[k]
            ix = max(0.0, min(x + w, kx + kw) - max(x, kx))
            iy = max(0.0, min(y + h, ky + kh) - max(y, ky))
            if ix * iy > overlap_threshold * min(w * h, kw * kh):
                duplicate = True
                break
        if not duplicate:
            kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


#: The default detector class.
FaceDetector = BlazeFaceDetector


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
            path = Path(cv2.data.haarcascades) / cascade
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
        boxes = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if scale != 1.0:
            boxes = boxes / scale
        boxes = suppress_duplicates(boxes, self.overlap_threshold)
        boxes = np.round(boxes).astype(np.int32)
        return boxes[np.argsort(boxes[:, 0], kind="stable")] if len(boxes) else boxes


def suppress_duplicates(boxes: np.ndarray, overlap_threshold: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression by size: keep the largest box, drop boxes whose intersection with a kept box
    covers more than ``overlap_threshold`` of the smaller of the two, repeat.

    Args:
        boxes: ``float (K, 4)`` boxes ``(x, y, w, h)``.
        overlap_threshold: 0..1.

    Returns:
        The kept boxes, ``float (K', 4)``, largest first.
    """
    if len(boxes) < 2:
        return boxes
    order = np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")
    kept: list[np.ndarray] = []
    for box in boxes[order]:
        x, y, w, h = box
        duplicate = False
        for k in kept:
            ix = max(0.0, min(x + w, k[0] + k[2]) - max(x, k[0]))
            iy = max(0.0, min(y + h, k[1] + k[3]) - max(y, k[1]))
            if ix * iy > overlap_threshold * min(w * h, k[2] * k[3]):
                duplicate = True
                break
        if not duplicate:
            kept.append(box)
    return np.stack(kept)
