"""Face detection with MTCNN on ONNX Runtime: a three-network cascade that finds faces down to ~12 px.

MTCNN is Zhang, Zhang, Li and Qiao, "Joint Face Detection and Alignment using Multi-task Cascaded Convolutional
Networks", IEEE Signal Processing Letters 2016 (arXiv:1604.02878). The weights are those of the MIT-licensed
``mtcnn==1.0.0`` wheel (PyPI, Iván de Paz Centeno), converted to ONNX by ``scripts/convert_mtcnn.py`` (outputs
checked against the wheel's TensorFlow networks within 1e-4) and shipped as ``inference/models/mtcnn_pnet.onnx``,
``mtcnn_rnet.onnx`` and ``mtcnn_onet.onnx`` (licence in ``inference/models/MTCNN_LICENSE``). This module is our own
implementation of the cascade with NumPy and OpenCV; it follows the wheel's pipeline and defaults (pyramid factor
0.709, thresholds 0.6 / 0.7 / 0.8, NMS 0.5 and 0.7 for PNet, 0.7 for RNet, 0.7 "min" for ONet). TensorFlow is
never imported.

The cascade (boxes ``x1, y1, x2, y2`` in continuous pixel coordinates, pixel ``i`` spanning ``[i, i + 1)``):

1. **PNet** (fully convolutional, 12x12 window, stride 2) runs on every level of an image pyramid, the first
   scaled so that a face of ``min_size`` pixels becomes 12 px, each next one 0.709 times smaller, down to 12 px
   (large levels in blocks, which bounds memory). Every output cell whose face probability exceeds the first
   threshold gives its window moved by the regressed offsets (in units of the window side); NMS (IoU 0.5) per
   level, then over all levels (IoU 0.7); boxes are made square around their centre.
2. **RNet** scores a 24x24 patch of each candidate (bilinear, outside the image = 0 in normalised space, i.e. mid
   grey); candidates above the second threshold are moved by its offsets (units of the box side), NMS (IoU 0.7),
   made square.
3. **ONet** does the same with 48x48 patches and the third threshold, adds five landmarks, and a last NMS removes
   boxes covering more than 0.7 of a smaller one ("min" overlap).
4. (ours, ``verify``) ONet once more on each final box: boxes it no longer scores above the third threshold go.

Differences from the wheel: NMS is the usual greedy one (the wheel drops a box overlapping any higher-scoring box,
even one that was itself dropped); RNet/ONet patches and box refinements use pixel-edge coordinates (the wheel adds
1 to widths and samples ``crop_and_resize``-style from the first to the last pixel centre, a shift of up to a
pixel); pyramid levels are resized with OpenCV ``INTER_AREA`` instead of ``tf.image.resize(..., "area")``; step 4.
Measured on shared/data/faces at min_size 12: the same number of faces as the wheel on 17 of its 19 photos, one
fewer on the other two (201 vs 202 on a crowd of ~200 faces of 10-30 px, 77 vs 78 on the company photo).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from inference.boxes import clip_boxes
from inference.classifier import MODELS_DIR, ModelLoadError, onnx_session, to_rgb_within

__all__ = ["MTCNN_MODEL_NAMES", "MTCNNDetector", "nms"]

#: The three network files in ``inference/models`` (``scripts/convert_mtcnn.py``).
MTCNN_MODEL_NAMES = {"pnet": "mtcnn_pnet.onnx", "rnet": "mtcnn_rnet.onnx", "onet": "mtcnn_onet.onnx"}
#: Outputs of each network (name -> last dimension) and its input side (``None``: free height and width).
_SIGNATURES: dict[str, tuple[dict[str, int], int | None]] = {
    "pnet": ({"offsets": 4, "probabilities": 2}, None),
    "rnet": ({"offsets": 4, "probabilities": 2}, 24),
    "onet": ({"offsets": 4, "landmarks": 10, "probabilities": 2}, 48),
}
PATCH_SIDE = {"rnet": 24, "onet": 48}  #: RNet and ONet input side in pixels


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression: keep the best-scoring box, drop the boxes overlapping it by more than
    ``threshold``, repeat with the best remaining one. IoU NMS of more than 64 boxes runs in OpenCV
    (``cv2.dnn.NMSBoxes``, the same greedy rule: PNet's thousands of candidates took 0.14 s of the 0.70 s of a
    1280x720 crowd frame in the Python loop, 0.04 s there; the same faces found on every photo of
    shared/data/faces).

    Args:
        boxes: ``float (K, 4)`` ``x1, y1, x2, y2`` corners.
        scores: ``float (K,)``.
        threshold: overlap above which a box is dropped, 0..1.
        mode: ``"union"``: overlap = intersection over union; ``"min"``: intersection over the smaller box's area
            (drops a box mostly inside a better one).

    Returns:
        ``int64 (K',)`` indices of the kept boxes, best first (ties keep the input order).

    Raises:
        ValueError: unknown ``mode``.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"unknown NMS mode {mode!r}: expected 'union' or 'min'")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if mode == "union" and len(boxes) > 64:  # OpenCV's greedy IoU NMS, the same rule in C++ (PNet's thousands)
        rects = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        kept = cv2.dnn.NMSBoxes(rects.tolist(), np.asarray(scores, np.float64).tolist(), 0.0, float(threshold))
        return np.asarray(kept, np.int64).reshape(-1)
    x1, y1, x2, y2 = boxes.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = iw * ih
        if mode == "min":
            denominator = np.minimum(area[best], area[rest])
        else:
            denominator = area[best] + area[rest] - inter
        order = rest[inter <= threshold * np.maximum(denominator, 1e-12)]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """``x1, y1, x2, y2`` boxes made square (side = the longer side) around their centre."""
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def _moved(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by regressed offsets ``(dx1, dy1, dx2, dy2)`` in units of the box's width and height."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes + offsets.astype(np.float64) * np.stack([w, h, w, h], axis=1)


def _block_spans(length: int, block: int, overlap: int) -> list[tuple[int, int]]:
    """Blocks ``[start, end)`` along one axis of a PNet level: as few as keep each at most ``block`` pixels, of
    about equal size, even starts, each overlapping the next by ``overlap`` pixels (the last one runs to the
    end)."""
    count = max(1, -(-(length - overlap) // (block - overlap)))
    step = -(-(length - overlap) // count)
    step += step % 2
    starts = [k * step for k in range(count) if k * step < length - overlap] or [0]
    return [(a, b + overlap) for a, b in zip(starts, starts[1:])] + [(starts[-1], length)]


class MTCNNDetector:
    """Faces with the MTCNN cascade (PNet over an image pyramid, then RNet and ONet on batched patches; see the
    module docstring).

    Args:
        models_dir: folder with ``mtcnn_pnet.onnx``, ``mtcnn_rnet.onnx``, ``mtcnn_onet.onnx`` (default
            ``inference/models``, ``inference.classifier.MODELS_DIR``).
        min_size: smallest face side to find, in pixels of the original image (default 12, PNet's window; the
            wheel's default is 20). Below 12 the first pyramid level is an upscale, bounded by ``MAX_LEVEL_SIDE``.
        max_side: images whose longer side exceeds this many pixels are downscaled first (``INTER_AREA``; boxes
            are mapped back), default 1920; the smallest face found grows accordingly.
        thresholds: minimum face probabilities (0..1) of PNet, RNet and ONet (default 0.6, 0.7, 0.8, the paper's
            and the wheel's).
        scale_factor: size ratio of consecutive pyramid levels, in (0, 1) (default 0.709 = 1/sqrt(2)).
        threads: ONNX Runtime intra-op threads (1 suits one-process-per-core workers).
        verify: run ONet once more on each final (refined, squared) box and keep only the boxes it again scores
            above the ONet threshold (default on; not in the paper or the wheel). A real face stays a face when
            its box moves by a few pixels, a chance pattern rarely does. Measured on shared/data/faces at
            min_size 12: it removes both false positives (a blurred background beside the Obama portrait, a tie in
            the company photo crowds/ultralight_imgs_26.jpg) and 4 of 205 faces of 10-20 px in
            crowds/ultralight_imgs_25.jpg, for no measurable time (one more ONet batch of the final boxes).

    Raises:
        ModelLoadError: a model file is missing, not loadable, or not the expected network.
        ValueError: an argument out of range.
    """

    CELL = 12  #: PNet's window side in level pixels (the face size each pyramid level sees)
    STRIDE = 2  #: PNet's output stride in level pixels
    #: PNet's window of output cell ``j`` is ``[2j + 1, 2j + 12]`` level pixels (width 11) and its offsets are in
    #: units of 11 px, as in the wheel (and the original MATLAB code, which divides the 1-based window ``2j + 1 ..
    #: 2j + 12`` by the scale), not the exact receptive field ``[2j, 2j + 12)``. Measured on the 9-12 px faces of
    #: crowds/ultralight_imgs_25.jpg: the exact field gives candidates RNet and ONet reject more often (-8 faces
    #: at min_size 12, -16 at 20; the cascade is that sensitive to a pixel at its detection limit).
    WINDOW = (1, 12)
    PNET_NMS_LEVEL = 0.5  #: IoU threshold of NMS within one pyramid level
    PNET_NMS = 0.7  #: IoU threshold of NMS over all levels
    RNET_NMS = 0.7  #: IoU threshold of NMS after RNet
    ONET_NMS = 0.7  #: "min" overlap threshold of the last NMS (after ONet)
    #: RNet/ONet patches per ONNX Runtime call. Measured on a 1920x1080 frame (2368 RNet candidates): peak memory
    #: +270 MB with 256 per call for both networks and 1024-px PNet blocks, +145 MB with 64 / 16 and 384-px blocks,
    #: for the same CPU time (0.9 s); a network's working memory grows with the batch (ONet ~0.5 MB per patch).
    #: With these and 256-px blocks a default worker's RSS after a 1080p crowd frame is 279 MB (313 with 64 / 16 and
    #: 384 px), the same faces found on shared/data/faces and no slower.
    BATCH = {"rnet": 32, "onet": 8}
    MAX_LEVEL_SIDE = 2304  #: longest side of the first (largest) pyramid level, in pixels (1.2 x 1920)
    #: Pyramid levels with a side over ``BLOCK`` pixels run PNet in blocks of at most ``BLOCK`` (+1) px side, even
    #: origins, overlapping by ``CELL - STRIDE`` px, each output cell taken from the block its window starts in:
    #: exactly the whole-level result, with bounded memory (PNet's working memory, measured: 45 MB for a 512x512
    #: block, 110 MB for 1024x1024; see ``BATCH`` for the choice of 256).
    BLOCK = 256

    def __init__(
        self,
        models_dir: str | os.PathLike | None = None,
        min_size: int = 12,
        max_side: int = 1920,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8),
        scale_factor: float = 0.709,
        threads: int = 1,
        verify: bool = True,
    ):
        probabilities = tuple(float(t) for t in thresholds)
        if len(probabilities) != 3 or not all(0.0 <= t <= 1.0 for t in probabilities):
            raise ValueError(f"thresholds must be three probabilities in [0, 1], got {thresholds}")
        if not 0.0 < scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
        if min_size < 1 or max_side < self.CELL:
            raise ValueError(f"min_size must be >= 1 and max_side >= {self.CELL}, got {min_size} and {max_side}")
        self.models_dir = Path(models_dir) if models_dir else MODELS_DIR
        self.min_size = min_size
        self.max_side = max_side
        self.thresholds = probabilities
        self.scale_factor = scale_factor
        self.verify = verify
        self._sessions = {name: self._load(name, threads) for name in MTCNN_MODEL_NAMES}

    def _load(self, name: str, threads: int):
        """ONNX Runtime session of network ``name``, its signature checked."""
        path = self.models_dir / MTCNN_MODEL_NAMES[name]
        if not path.is_file():
            raise ModelLoadError(f"{path}: MTCNN {name.upper()} model not found (scripts/convert_mtcnn.py)")
        session = onnx_session(path, threads)
        outputs, side = _SIGNATURES[name]
        got = {o.name: o.shape[-1] for o in session.get_outputs()}
        shape = session.get_inputs()[0].shape
        expected_input = [side, side, 3] if side else [3]
        if got != outputs or len(shape) != 4 or list(shape[4 - len(expected_input) :]) != expected_input:
            raise ModelLoadError(f"{path}: not the MTCNN {name.upper()} network (input {shape}, outputs {got})")
        return session

    # ------------------------------------------------------------------------------------------------ public API
    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes: ``int32 (K, 4)`` ``(x, y, w, h)`` in pixels of ``image``, clipped to it, left to right (see
        ``detect_with_scores``).

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        return self.detect_with_scores(image)[0]

    def detect_with_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes and their ONet face probabilities.

        Args:
            image: BGR ``uint8 (H, W, 3)``, BGRA or grey ``(H, W)`` image (``uint8``/``uint16``/float in [0, 1]).

        Returns:
            ``int32 (K, 4)`` boxes ``(x, y, w, h)`` in pixels of ``image`` (clipped to it; MTCNN geometry: brow to
            chin, taller than wide), sorted left to right, and ``float32 (K,)`` face probabilities (0..1); ``K`` may
            be 0 (also for images smaller than ``min_size``).

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        boxes, scores, _ = self.detect_with_landmarks(image)
        return boxes, scores

    def detect_with_landmarks(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face boxes, scores and ONet's five landmarks.

        Args:
            image: as ``detect_with_scores``.

        Returns:
            ``(boxes, scores, landmarks)``: as ``detect_with_scores``, plus ``float32 (K, 5, 2)`` landmarks ``(x,
            y)`` in pixels of ``image`` (not clipped): the eye on the image's left, the eye on its right, the nose
            tip, the mouth corner on the image's left, the one on its right.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        rgb, resize = to_rgb_within(image, self.max_side)
        normalised = (rgb.astype(np.float32) - 127.5) / 128.0
        boxes, scores, landmarks = self._cascade(normalised)
        boxes, landmarks = boxes / resize, landmarks / resize
        xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        xywh = np.round(clip_boxes(xywh, image.shape[1], image.shape[0]))
        keep = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        xywh, scores, landmarks = xywh[keep], scores[keep], landmarks[keep]
        order = np.argsort(xywh[:, 0], kind="stable")
        return (
            xywh[order].astype(np.int32),
            scores[order].astype(np.float32),
            landmarks[order].astype(np.float32),
        )

    def refine(self, image: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONet, the cascade's last stage, on given candidate boxes instead of RNet's: whether each is a face, and
        its box refined. Used to follow small crowd faces from frame to frame without the whole cascade
        (``HybridFaceDetector.follow_with_keypoints``).

        Args:
            image: as ``detect_with_scores``.
            candidates: ``(K, 4)`` square boxes ``(x, y, w, h)`` in pixels of ``image``, each around a face as RNet
                would hand it to ONet (MTCNN geometry: the side of a face's brow-to-chin height).

        Returns:
            ``float64 (K, 4)`` refined boxes ``(x, y, w, h)`` in pixels of ``image`` (MTCNN geometry, not clipped)
            and ``float32 (K,)`` face probabilities: ONet's on the candidate, or with ``verify`` the lower of that
            and ONet's on the refined box made square (as ``detect_with_landmarks`` keeps a face). A face is one
            whose probability exceeds ``thresholds[2]``.

        Raises:
            ValueError: unsupported image shape or dtype, or an empty image.
        """
        candidates = np.asarray(candidates, np.float64).reshape(-1, 4)
        if len(candidates) == 0:
            return np.zeros((0, 4)), np.zeros((0,), np.float32)
        rgb, resize = to_rgb_within(image, self.max_side)
        normalised = (rgb.astype(np.float32) - 127.5) / 128.0
        xyxy = np.concatenate([candidates[:, :2], candidates[:, :2] + candidates[:, 2:]], axis=1) * resize
        offsets, _, scores = self._run_patches("onet", normalised, xyxy)
        refined = _moved(xyxy, offsets)
        if self.verify:
            scores = np.minimum(scores, self._run_patches("onet", normalised, _square(refined))[-1])
        refined /= resize
        xywh = np.concatenate([refined[:, :2], refined[:, 2:] - refined[:, :2]], axis=1)
        return xywh, scores.astype(np.float32)

    def level_scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales (level pixels per working-image pixel) for a ``height x width`` working image, largest
        first: ``12 / min_size`` (at most ``MAX_LEVEL_SIDE`` on the longer side) times ``scale_factor ** k`` while
        the shorter side stays at least 12 px; empty for an image smaller than that."""
        scale = min(self.CELL / self.min_size, self.MAX_LEVEL_SIDE / max(height, width))
        scales = []
        while min(height, width) * scale >= self.CELL:
            scales.append(scale)
            scale *= self.scale_factor
        return scales

    # ------------------------------------------------------------------------------------------------- cascade
    def _cascade(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three stages on a normalised ``float32 (H, W, 3)`` RGB image: ``float64 (K, 4)`` ``x1, y1, x2, y2``
        boxes, ``(K,)`` scores and ``(K, 5, 2)`` landmarks in its pixels."""
        empty = np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2))
        boxes = self._proposals(image)
        if len(boxes) == 0:
            return empty
        offsets, scores = self._run_patches("rnet", image, boxes)
        keep = scores > self.thresholds[1]
        boxes = _moved(boxes[keep], offsets[keep])
        boxes = _square(boxes[nms(boxes, scores[keep], self.RNET_NMS)])
        if len(boxes) == 0:
            return empty
        offsets, points, scores = self._run_patches("onet", image, boxes)
        keep = scores > self.thresholds[2]
        boxes, offsets, scores, points = boxes[keep], offsets[keep], scores[keep], points[keep]
        w, h = boxes[:, 2:3] - boxes[:, 0:1], boxes[:, 3:4] - boxes[:, 1:2]
        # ONet landmarks: x1..x5 then y1..y5, in units of the (input) box
        landmarks = np.stack([boxes[:, 0:1] + points[:, :5] * w, boxes[:, 1:2] + points[:, 5:] * h], axis=2)
        boxes = _moved(boxes, offsets)
        kept = nms(boxes, scores, self.ONET_NMS, mode="min")
        boxes, scores, landmarks = boxes[kept], scores[kept], landmarks[kept]
        if self.verify and len(boxes):
            again = self._run_patches("onet", image, _square(boxes))[-1]
            keep = again > self.thresholds[2]
            boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
        return boxes, scores, landmarks

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        """PNet stage: square candidate boxes ``float64 (K, 4)`` in pixels of ``image``."""
        height, width = image.shape[:2]
        all_boxes, all_scores = [], []
        for scale in self.level_scales(height, width):
            lw, lh = max(self.CELL, int(width * scale)), max(self.CELL, int(height * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            level = cv2.resize(image, (lw, lh), interpolation=interp) if (lw, lh) != (width, height) else image
            boxes, scores = self._pnet_level(level)
            if len(boxes) == 0:
                continue
            kept = nms(boxes, scores, self.PNET_NMS_LEVEL)
            all_boxes.append(boxes[kept] / (lw / width, lh / height, lw / width, lh / height))
            all_scores.append(scores[kept])
        if not all_boxes:
            return np.zeros((0, 4))
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        boxes = _square(boxes[nms(boxes, scores, self.PNET_NMS)])
        return boxes[(boxes[:, 2] - boxes[:, 0]) >= 1]

    def _pnet_level(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """PNet on one pyramid level (in blocks when large): the windows of the cells above the first threshold,
        moved by their offsets, ``float64 (n, 4)`` in level pixels, and their scores ``(n,)``."""
        lh, lw = level.shape[:2]
        overlap = self.CELL - self.STRIDE
        ys, xs = _block_spans(lh, self.BLOCK, overlap), _block_spans(lw, self.BLOCK, overlap)
        parts_boxes, parts_scores = [], []
        for iy, (y0, y1) in enumerate(ys):
            for ix, (x0, x1) in enumerate(xs):
                block = np.ascontiguousarray(level[y0:y1, x0:x1])
                offsets, probabilities = self._sessions["pnet"].run(None, {"input": block[None]})
                score = probabilities[0, :, :, 1]
                gy, gx = np.nonzero(score > self.thresholds[0])
                wx0, wy0 = x0 + self.STRIDE * gx, y0 + self.STRIDE * gy  # receptive field origins, level pixels
                # each cell belongs to the block it starts in (blocks overlap: this keeps each cell once)
                inside = np.ones(len(gx), bool)
                if ix + 1 < len(xs):
                    inside &= wx0 < xs[ix + 1][0]
                if iy + 1 < len(ys):
                    inside &= wy0 < ys[iy + 1][0]
                gy, gx, wx0, wy0 = gy[inside], gx[inside], wx0[inside], wy0[inside]
                first, last = self.WINDOW
                windows = np.stack([wx0 + first, wy0 + first, wx0 + last, wy0 + last], axis=1).astype(np.float64)
                parts_boxes.append(windows + offsets[0, gy, gx].astype(np.float64) * (last - first))
                parts_scores.append(score[gy, gx].astype(np.float64))
        return np.concatenate(parts_boxes), np.concatenate(parts_scores)

    def _run_patches(self, name: str, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
        """RNet or ONet on the patches of ``boxes`` (``BATCH`` per call): its outputs in the model's order
        (offsets, [landmarks,] probabilities), the probabilities reduced to the face column ``float32 (K,)``."""
        side = PATCH_SIDE[name]
        session = self._sessions[name]
        parts: list[list[np.ndarray]] = []
        batch = self.BATCH[name]
        for start in range(0, len(boxes), batch):
            chunk = boxes[start : start + batch]
            parts.append(session.run(None, {"input": self._patches(image, chunk, side)}))
        outputs = [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
        outputs[-1] = outputs[-1][:, 1]
        return tuple(outputs)

    @staticmethod
    def _patches(image: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
        """``float32 (K, side, side, 3)`` bilinear patches of ``boxes`` (``x1, y1, x2, y2``) from the normalised
        image; outside the image 0 (mid grey). The box's extent maps onto the patch's (pixel centres at ``+0.5``),
        as a crop resized to ``side``."""
        out = np.empty((len(boxes), side, side, 3), np.float32)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            sx, sy = side / max(x2 - x1, 1e-6), side / max(y2 - y1, 1e-6)
            affine = np.array([[sx, 0, (0.5 - x1) * sx - 0.5], [0, sy, (0.5 - y1) * sy - 0.5]], np.float64)
            out[k] = cv2.warpAffine(
                image, affine, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
        return out
