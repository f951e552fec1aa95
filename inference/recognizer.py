"""Whole-image emotion recognition: detect every face, classify all faces in one batched model call."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from inference.boxes import FaceDetector, KeypointDetector
from inference.classifier import EmotionClassifier, crop_face, default_small_face_model_path, to_grey
from inference.detector import default_detector
from inference.labels import LABELS, NUM_CLASSES, arousal_of, valence_of
from inference.pose import head_pose

#: Faces whose box side (the longer of ``w`` and ``h``, pixels of the analysed image) is below this are too small to
#: read: they are kept with their box and counted, marked ``too_small``, and left out of emotion shares. Source:
#: PublicTest accuracy of the shipped model (flip TTA) on faces downscaled to a side and scaled back to 48 px
#: (README "Face detection"), which falls from 69 % at 48 px to well below 60 % under this side.
MIN_READABLE_SIDE = 24

#: With a smallest face to look for (``EmotionRecognizer.analyze``'s ``min_face_px``), boxes of a detector without
#: a search band of its own are kept from this fraction of it: BlazeFace's pyramid finds faces down to 0.8x the size
#: its first level is made for (``BlazeFaceDetector``: 0.8 x ``MIN_FACE_INPUT``), so every detector keeps the same.
MIN_FACE_BAND = 0.8

#: Faces whose box side is below this (pixels) go to the small-face classifier when the recogniser has one. The
#: shipped one was fine-tuned with 60 % of its faces shrunk to 12-40 px (``train --lowres-share 0.6``), so 40 px
#: is the top of the range it was made for: the threshold comes from its recipe, not from test scores. Measured
#: (README "Small faces"): on PublicTest faces shrunk to 24 px it reads 64.2 % against the ensemble's 62.6 %.
SMALL_FACE_SIDE = 40


@dataclass(frozen=True)
class FaceResult:
    """One face.

    Attributes:
        box: ``(x, y, w, h)`` bounding box in pixels of the analysed image.
        label: most probable label (one of ``LABELS``).
        score: probability of ``label``, 0..1.
        probabilities: ``float32 (7,)`` in ``LABELS`` order, summing to 1.
        too_small: the face is smaller than the recogniser's ``min_readable_side`` (default
            ``MIN_READABLE_SIDE`` px): count it, but leave it out of emotion shares; ``label``, ``score`` and
            ``probabilities`` are still the classifier's output (so consumers that need a label keep working) and
            are not to be trusted.
        head_pose: ``(yaw, pitch, roll)`` in degrees (``inference.pose``: yaw positive toward the image's right,
            pitch positive chin up, roll positive clockwise in the image), or ``None``: the detector gives no
            keypoints (Haar), the face is ``too_small`` (keypoints of a face that small are not reliable), or no
            pose was found.
    """

    box: tuple[int, int, int, int]
    label: str
    score: float
    probabilities: np.ndarray
    too_small: bool = False
    head_pose: tuple[float, float, float] | None = None

    @property
    def valence(self) -> float:
        """Valence of the raw probabilities, -1..1 (``inference.labels.VALENCE``)."""
        return valence_of(self.probabilities)

    @property
    def arousal(self) -> float:
        """Arousal of the raw probabilities, -1..1 (``inference.labels.AROUSAL``)."""
        return arousal_of(self.probabilities)

    def to_dict(self) -> dict:
        """JSON-ready ``{"box": [x, y, w, h], "label", "score", "probabilities": {label: p}, "too_small",
        "valence", "arousal", "head_pose": {"yaw", "pitch", "roll"} | None}`` (angles in degrees)."""
        pose = None
        if self.head_pose is not None:
            pose = {name: float(v) for name, v in zip(("yaw", "pitch", "roll"), self.head_pose, strict=True)}
        return {
            "box": [int(v) for v in self.box],
            "label": self.label,
            "score": round(float(self.score), 6),
            "probabilities": {label: round(float(p), 6) for label, p in zip(LABELS, self.probabilities)},
            "too_small": bool(self.too_small),
            "valence": round(self.valence, 6),
            "arousal": round(self.arousal, 6),
            "head_pose": pose,
        }


class EmotionRecognizer:
    """Face detector + emotion classifier with the training-time preprocessing.

    Args:
        classifier: an ``EmotionClassifier`` (default: the shipped model).
        detector: a ``FaceDetector`` (``detect(image) -> int32 (K, 4)`` boxes), e.g. ``BlazeFaceDetector`` or
            ``HaarFaceDetector`` (default: ``inference.detector.default_detector()``, BlazeFace).
        margin: extra border around each detected box when cropping, as a fraction of the box side.
        min_readable_side: faces with a box side below this (pixels) are marked ``too_small`` (default
            ``MIN_READABLE_SIDE``).
        small_face_classifier: an ``EmotionClassifier`` for faces whose box side is below ``small_face_side``;
            ``None`` = none, except that with ``classifier`` also ``None`` the shipped pair is served: the shipped
            model and the shipped small-face model (``default_small_face_model_path``).
        small_face_side: box side in pixels under which a face goes to ``small_face_classifier`` (default
            ``SMALL_FACE_SIDE``; 0 sends every face to ``classifier``).

    Raises:
        inference.classifier.ModelLoadError: a default model file is missing or unusable.
    """

    def __init__(
        self,
        classifier: EmotionClassifier | None = None,
        detector: FaceDetector | None = None,
        margin: float = 0.0,
        min_readable_side: int = MIN_READABLE_SIDE,
        small_face_classifier: EmotionClassifier | None = None,
        small_face_side: int = SMALL_FACE_SIDE,
    ):
        if classifier is None and small_face_classifier is None:
            small_face_classifier = EmotionClassifier(default_small_face_model_path())
        self.classifier = classifier or EmotionClassifier()
        self.small_face_classifier = small_face_classifier
        self.small_face_side = int(small_face_side)
        self.detector: FaceDetector = detector or default_detector()
        self.margin = margin
        self.min_readable_side = min_readable_side

    @classmethod
    def default(cls) -> EmotionRecognizer:
        """The shipped models (the ensemble, and the small-face model for faces under ``SMALL_FACE_SIDE``) with the
        default detector. Needs no network."""
        return cls()

    @classmethod
    def from_path(cls, model_path: str | os.PathLike, threads: int = 1) -> EmotionRecognizer:
        """Recogniser serving the ONNX model at ``model_path`` for every face (no small-face model).

        Raises:
            inference.classifier.ModelLoadError: missing or unusable model file.
        """
        return cls(EmotionClassifier(model_path, threads=threads))

    def analyze(self, image: np.ndarray, min_face_px: int | None = None) -> list[FaceResult]:
        """Detect and classify every face.

        Args:
            image: BGR ``uint8 (H, W, 3)``, BGRA, or grey ``(H, W)`` (``uint8`` or ``uint16``).
            min_face_px: smallest face side to look for, px (``None``: whatever the detector finds). A
                ``KeypointDetector`` starts its search there (faces from about 0.8x that side are found, and the
                search is cheaper); with another detector, boxes whose longer side is under 0.8x it are left out.

        Returns:
            One ``FaceResult`` per detected face, left to right (with ``head_pose`` when the detector gives
            keypoints); empty when no face is found.

        Raises:
            ValueError: unsupported image shape or dtype.
        """
        if isinstance(self.detector, KeypointDetector):
            boxes, _, keypoints = self.detector.detect_with_keypoints(image, min_face_px)
            return self.classify(image, boxes, keypoints)
        boxes = np.asarray(self.detector.detect(image)).reshape(-1, 4)
        if min_face_px is not None:
            boxes = boxes[np.maximum(boxes[:, 2], boxes[:, 3]) >= MIN_FACE_BAND * min_face_px]
        return self.classify(image, boxes)

    def classify(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> list[FaceResult]:
        """Classify the faces at known boxes (one batched call per classifier, see ``predict_proba``).

        Args:
            image: as ``analyze``.
            boxes: ``int (K, 4)`` ``(x, y, w, h)`` in pixels of ``image``.
            keypoints: optional ``float (K, 6, 2)`` BlazeFace keypoints of those faces (``NaN`` where unknown),
                from which ``head_pose`` is estimated for faces that are not too small.

        Returns:
            One ``FaceResult`` per box, in the order given (``too_small`` set from ``min_readable_side``).

        Raises:
            ValueError: unsupported image shape or dtype, or ``keypoints`` not ``(K, 6, 2)``.
        """
        if len(boxes) == 0:
            return []
        if keypoints is not None and np.shape(keypoints) != (len(boxes), 6, 2):
            raise ValueError(f"keypoints must be ({len(boxes)}, 6, 2), got {np.shape(keypoints)}")
        grey = to_grey(image)
        size = (grey.shape[1], grey.shape[0])
        crops = np.stack([crop_face(grey, box, self.margin) for box in boxes])
        probabilities = self.predict_proba(crops, boxes)
        results = []
        for i, (box, probs) in enumerate(zip(boxes, probabilities)):
            k = int(np.argmax(probs))
            small = max(int(box[2]), int(box[3])) < self.min_readable_side
            xywh = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
            pose = head_pose(keypoints[i], size) if keypoints is not None and not small else None
            results.append(FaceResult(xywh, LABELS[k], float(probs[k]), probs, small, pose))
        return results

    def predict_proba(self, crops: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Probabilities of face crops, each from the classifier for its face's size.

        Args:
            crops: ``uint8 (K, 48, 48)`` grey crops (``crop_face``).
            boxes: ``int (K, 4)`` ``(x, y, w, h)`` boxes the crops were cut from, in pixels: faces whose longer side
                is below ``small_face_side`` go to ``small_face_classifier`` when there is one.

        Returns:
            ``float32 (K, 7)`` probabilities in ``LABELS`` order, rows in the order given.
        """
        if self.small_face_classifier is None or self.small_face_side <= 0 or len(crops) == 0:
            return self.classifier.predict_proba(crops)
        boxes = np.asarray(boxes).reshape(-1, 4)
        small = np.maximum(boxes[:, 2], boxes[:, 3]) < self.small_face_side
        if small.all():
            return self.small_face_classifier.predict_proba(crops)
        if not small.any():
            return self.classifier.predict_proba(crops)
        probabilities = np.empty((len(crops), NUM_CLASSES), np.float32)
        probabilities[small] = self.small_face_classifier.predict_proba(crops[small])
        probabilities[~small] = self.classifier.predict_proba(crops[~small])
        return probabilities
