"""Whole-image emotion recognition: detect every face, classify all faces in one batched model call."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from inference.boxes import FaceDetector, KeypointDetector
from inference.classifier import EmotionClassifier, crop_face, to_grey
from inference.detector import default_detector
from inference.labels import LABELS, arousal_of, valence_of
from inference.pose import head_pose

#: Faces whose box side (the longer of ``w`` and ``h``, pixels of the analysed image) is below this are too small to
#: read: they are kept with their box and counted, marked ``too_small``, and left out of emotion shares. Source:
#: PublicTest accuracy of the shipped model (flip TTA) on faces downscaled to a side and scaled back to 48 px
#: (README "Face detection"), which falls from 69 % at 48 px to well below 60 % under this side.
MIN_READABLE_SIDE = 24


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
    """

    def __init__(
        self,
        classifier: EmotionClassifier | None = None,
        detector: FaceDetector | None = None,
        margin: float = 0.0,
        min_readable_side: int = MIN_READABLE_SIDE,
    ):
        self.classifier = classifier or EmotionClassifier()
        self.detector: FaceDetector = detector or default_detector()
        self.margin = margin
        self.min_readable_side = min_readable_side

    @classmethod
    def default(cls) -> EmotionRecognizer:
        """The shipped model with the default detector. Needs no network."""
        return cls()

    @classmethod
    def from_path(cls, model_path: str | os.PathLike, threads: int = 1) -> EmotionRecognizer:
        """Recogniser serving the ONNX model at ``model_path``.

        Raises:
            inference.classifier.ModelLoadError: missing or unusable model file.
        """
        return cls(EmotionClassifier(model_path, threads=threads))

    def analyze(self, image: np.ndarray) -> list[FaceResult]:
        """Detect and classify every face.

        Args:
            image: BGR ``uint8 (H, W, 3)``, BGRA, or grey ``(H, W)`` (``uint8`` or ``uint16``).

        Returns:
            One ``FaceResult`` per detected face, left to right (with ``head_pose`` when the detector gives
            keypoints); empty when no face is found.

        Raises:
            ValueError: unsupported image shape or dtype.
        """
        if isinstance(self.detector, KeypointDetector):
            boxes, _, keypoints = self.detector.detect_with_keypoints(image)
            return self.classify(image, boxes, keypoints)
        return self.classify(image, self.detector.detect(image))

    def classify(self, image: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> list[FaceResult]:
        """Classify the faces at known boxes (one batched classifier call).

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
        probabilities = self.classifier.predict_proba(crops)
        results = []
        for i, (box, probs) in enumerate(zip(boxes, probabilities)):
            k = int(np.argmax(probs))
            small = max(int(box[2]), int(box[3])) < self.min_readable_side
            xywh = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
            pose = head_pose(keypoints[i], size) if keypoints is not None and not small else None
            results.append(FaceResult(xywh, LABELS[k], float(probs[k]), probs, small, pose))
        return results
