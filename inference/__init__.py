"""Facial-emotion recognition core: FER2013 data, training, evaluation, face detection, classification.

This package is plain Python + NumPy + OpenCV + ONNX Runtime on the serving path. TensorFlow/Keras are imported
only by the training and export modules (``inference.train``, ``inference.export``), so a Celery worker that only
serves the model never pays TensorFlow's ~550 MB import cost. It never imports Django.

Public API (lazily imported, see ``__getattr__``):

- ``LABELS``: the seven FER2013 labels in dataset order 0..6.
- ``EmotionClassifier``: ``uint8 (N, 48, 48)`` grey face crops -> ``float32 (N, 7)`` probabilities.
- ``FaceDetector``: the detector interface (a ``typing.Protocol``: ``detect(image) -> int32 (K, 4)`` bounding boxes
  ``(x, y, w, h)`` in pixels); ``BlazeFaceDetector`` (the default), ``HaarFaceDetector``, ``default_detector()``.
- ``EmotionRecognizer``: ``analyze(image) -> list[FaceResult]`` (detector + classifier; small faces marked
  ``too_small``).
- ``StreamAnalyzer``: ``analyze(frame, state) -> (list[FaceResult], state)`` for a stream of frames (detect on
  keyframes, follow the faces in between); ``StreamState`` is small JSON (``to_dict``/``from_dict``).
- ``Tracker``: ``update(boxes, probabilities) -> list[track_id]``, anonymous per-stream face tracks with smoothed
  probabilities, JSON state; ``TrackedStreamAnalyzer``: ``StreamAnalyzer`` + ``Tracker`` in one call.
"""

from inference.labels import LABELS, NUM_CLASSES, VALENCE

__all__ = [
    "LABELS",
    "NUM_CLASSES",
    "VALENCE",
    "EmotionClassifier",
    "FaceDetector",
    "BlazeFaceDetector",
    "HaarFaceDetector",
    "default_detector",
    "EmotionRecognizer",
    "FaceResult",
    "StreamAnalyzer",
    "StreamState",
    "Tracker",
    "TrackedStreamAnalyzer",
    "default_model_path",
]

_LAZY = {
    "EmotionClassifier": "inference.classifier",
    "default_model_path": "inference.classifier",
    "FaceDetector": "inference.boxes",
    "BlazeFaceDetector": "inference.detector",
    "HaarFaceDetector": "inference.detector",
    "default_detector": "inference.detector",
    "EmotionRecognizer": "inference.recognizer",
    "FaceResult": "inference.recognizer",
    "StreamAnalyzer": "inference.stream",
    "StreamState": "inference.stream",
    "Tracker": "inference.tracking",
    "TrackedStreamAnalyzer": "inference.tracked_stream",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")
