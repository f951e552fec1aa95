"""Whole-image emotion recognition: detect every face, classify all faces in one batched model call."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from inference.classifier import EmotionClassifier, crop_face, to_grey
from inference.detector import default_detector
from inference.labels import LABELS


@dataclass(frozen=True)
class FaceResult:
    """One face.

    Attributes:
        box: ``(x, y, w, h)`` bounding box in pixels of the analysed image.
        label: most probable label (one of ``LABELS``).
        score: probability of ``label``, 0..1.
        probabilities: ``float32 (7,)`` in ``LABELS`` order, summing to 1.
    """

    box: tuple[int, int, int, int]
    label: str
    score: float
    probabilities: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready ``{"box": [x, y, w, h], "label", "score", "probabilities": {label: p}}``."""
        return {
            "box": [int(v) for v in self.box],
            "label": self.label,
            "score": round(float(self.score), 6),
            "probabilities": {label: round(float(p), 6) for label, p in zip(LABELS, self.probabilities)},
        }


class EmotionRecognizer:
    """Face detector + emotion classifier with the training-time preprocessing.

    Args:
        classifier: an ``EmotionClassifier`` (default: the shipped model).
        detector: any object with ``detect(image) -> int (K, 4)`` boxes, e.g. ``BlazeFaceDetector`` or
            ``HaarFaceDetector`` (default: ``inference.detector.default_detector()``, BlazeFace).
        margin: extra border around each detected box when cropping, as a fraction of the box side.
    """

    def __init__(
        self,
        classifier: EmotionClassifier | None = None,
        detector=None,
        margin: float = 0.0,
    ):
        self.classifier = classifier or EmotionClassifier()
        self.detector = detector or default_detector()
        self.margin = margin

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
            One ``FaceResult`` per detected face, left to right; empty when no face is found.

        Raises:
            ValueError: unsupported image shape or dtype.
        """
        grey = to_grey(image)
        boxes = self.detector.detect(image)
        if len(boxes) == 0:
            return []
        crops = np.stack([crop_face(grey, box, self.margin) for box in boxes])
        probabilities = self.classifier.predict_proba(crops)
        results = []
        for box, probs in zip(boxes, probabilities):
            k = int(np.argmax(probs))
            results.append(FaceResult(tuple(int(v) for v in box), LABELS[k], float(probs[k]), probs))
        return results
