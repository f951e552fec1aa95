"""Emotion classification of face crops with the exported ONNX model (ONNX Runtime; TensorFlow is not imported).

Preprocessing is the one the model was trained with: grey ``uint8`` 48x48 faces fed as ``float32`` grey levels
0..255 (the network rescales internally, see ``inference.model``). ``crop_face`` turns a detector box on a full
image into such a crop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from inference.labels import NUM_CLASSES

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_NAME = "fer_cnn.onnx"
#: The shipped small-face model: the mean of two ``fer-vgg`` networks, each fine-tuned with most faces shrunk to
#: 12-40 px, which ``EmotionRecognizer`` serves for faces under ``inference.recognizer.SMALL_FACE_SIDE`` (README
#: "Small faces").
SMALL_FACE_MODEL_NAME = "fer_cnn_small.onnx"
FACE_SIZE = 48


class ModelLoadError(RuntimeError):
    """The model file is missing or is not a usable FER ONNX model."""


#: Whether classifiers average each face with its mirror image unless told otherwise. Flip test-time augmentation
#: lifts the shipped model from 67.8 % to 69.0 % PublicTest accuracy (its model card) for twice the classification
#: work. The web platform passes ``settings.FER_FLIP_TTA``.
DEFAULT_FLIP_TTA = True

#: Flip TTA on every face (1.0) unless told otherwise. A margin under 1 makes it adaptive: only faces whose one-pass
#: top-two probability margin is below it get the mirror pass. At 0.4 (the smallest margin, in steps of 0.1, whose
#: labels agree with full TTA on at least 99.8 % of 4,000 FER2013 Training faces, a label-free criterion; measured
#: 99.88 %, 34 % of the faces mirrored) PublicTest accuracy is that of full TTA (68.88 %, int8) for about half the
#: classification work, but smoothed labels on jittered real faces switched ~25 % more often (tests/inference/
#: test_tracking.py's set-up, 4 seeds: 34 vs 27 switches), so the library default mirrors every face. With the
#: shipped two-network ensemble the same set-up gives 23 vs 21 switches, and the web platform serves 0.4
#: (``settings.FER_TTA_MARGIN``) to stay within the per-face time budget.
DEFAULT_TTA_MARGIN = 1.0


#: Whether classifiers serve the int8 copy of their model (``quantized_path``) when one made from the very same float
#: file exists (``scripts/quantize_classifier.py``; it refuses to write one losing more than 0.3 PublicTest points).
DEFAULT_QUANTIZED = True

log = logging.getLogger(__name__)


_shared_arena_lock = threading.Lock()
_shared_arena: bool | None = None  # None: not tried yet in this process


def shared_cpu_arena() -> bool:
    """Register, once per process, one CPU memory arena that every ``onnx_session`` of the process allocates from
    (ONNX Runtime's environment allocator, "Share allocator(s) between sessions" in its C API docs).

    Why: by default each session keeps its own arena, which grows to that network's largest run and never shrinks,
    so a worker holds the peaks of BlazeFace, MTCNN's three networks and two classifiers side by side, though it runs
    one network at a time. With one shared arena it holds about the largest of them (README *Benchmark*: the
    ``worker_rss_mb`` 315 -> 252 MB on an AVX2 machine, detection time unchanged). Returns whether the shared arena
    is in use; ``False`` (logged) if this ONNX Runtime cannot register one: sessions then keep their own arenas.
    """
    global _shared_arena
    with _shared_arena_lock:
        if _shared_arena is None:
            import onnxruntime as ort

            try:
                memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(memory, ort.OrtArenaCfg({}))  # ONNX Runtime's default arena
                _shared_arena = True
            except Exception as exc:  # onnxruntime raises its own exception types
                log.warning("no shared ONNX Runtime arena (%s): each session keeps its own", exc)
                _shared_arena = False
        return _shared_arena


def onnx_session(path: str | os.PathLike, threads: int = 1):
    """ONNX Runtime CPU session of the model at ``path``: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, all graph optimisations, warnings off, memory from the process's shared arena
    (``shared_cpu_arena``). The one place every network of ``inference/`` is loaded.

    Raises:
        ModelLoadError: the file is not a loadable ONNX model.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if shared_cpu_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: not a loadable ONNX model ({exc})") from exc


def quantized_path(model_path: str | os.PathLike) -> Path:
    """Where ``scripts/quantize_classifier.py`` writes the int8 copy of a model: ``<stem>.int8.onnx`` beside it."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.int8.onnx")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_path() -> Path:
    """The model shipped in ``inference/models/`` (the web platform passes ``settings.FER_MODEL_PATH`` instead)."""
    return MODELS_DIR / DEFAULT_MODEL_NAME


def default_small_face_model_path() -> Path:
    """The shipped small-face model in ``inference/models/`` (``SMALL_FACE_MODEL_NAME``)."""
    return MODELS_DIR / SMALL_FACE_MODEL_NAME


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any OpenCV image -> the same image as ``uint8`` (channels unchanged).

    ``uint16`` is scaled by 1/257 (65535 -> 255), float in [0, 1] by 255.

    Raises:
        ValueError: unsupported dtype, or an empty image.
    """
    if image is None or image.size == 0:
        raise ValueError("empty image")
    if image.dtype == np.uint16:
        return (image / 257.0).round().astype(np.uint8)
    if image.dtype in (np.float32, np.float64):
        return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {image.dtype}")
    return image


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any OpenCV image (grey, BGR, BGRA; ``uint8``/``uint16``/float) -> ``uint8 (H, W, 3)`` RGB.

    Grey images are replicated to three channels.

    Raises:
        ValueError: unsupported shape or dtype, or an empty image.
    """
    image = to_uint8(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"unsupported image shape {image.shape}")


def to_rgb_within(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``to_rgb(image)`` downscaled (``INTER_AREA``) so that its longer side is at most ``max_side`` pixels, and the
    scale applied (working-image pixels per ``image`` pixel, 1.0 when it was small enough): the detectors' working
    image, whose boxes are divided by the scale to map them back.

    Raises:
        ValueError: unsupported shape or dtype, or an empty image.
    """
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def to_grey(image: np.ndarray) -> np.ndarray:
    """Any OpenCV image -> ``uint8 (H, W)`` grey.

    Accepts ``(H, W)``, ``(H, W, 1)``, BGR ``(H, W, 3)``, BGRA ``(H, W, 4)``; ``uint8``, ``uint16`` (scaled by
    1/257) or float in [0, 1].

    Raises:
        ValueError: unsupported shape or dtype, or an empty image.
    """
    image = to_uint8(image)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unsupported image shape {image.shape}")


def crop_face(grey: np.ndarray, box, margin: float = 0.0, size: int = FACE_SIZE) -> np.ndarray:
    """Square face crop ``uint8 (size, size)`` around a box.

    Args:
        grey: ``uint8 (H, W)`` image.
        box: ``(x, y, w, h)`` in pixels.
        margin: extra border as a fraction of the square's side on each side.
        size: output side in pixels.

    The square has side ``max(w, h) * (1 + 2 * margin)`` and the box's centre; parts outside the image are filled
    by edge replication. Resized with ``INTER_AREA`` (down) or ``INTER_LINEAR`` (up).
    """
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    height, width = grey.shape[:2]
    pad_l, pad_t = max(0, -x0), max(0, -y0)
    pad_r, pad_b = max(0, x0 + s - width), max(0, y0 + s - height)
    crop = grey[max(0, y0) : min(height, y0 + s), max(0, x0) : min(width, x0 + s)]
    if pad_l or pad_t or pad_r or pad_b:
        crop = cv2.copyMakeBorder(crop, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


class EmotionClassifier:
    """FER2013 emotion classifier served by ONNX Runtime.

    Args:
        model_path: ``.onnx`` file exported by ``inference.export`` (default ``default_model_path()``).
        threads: intra-op threads (1 suits one-process-per-core workers).
        flip_tta: average each face's probabilities with those of its mirror image (test-time augmentation);
            ``None`` = ``DEFAULT_FLIP_TTA`` (on).
        tta_margin: with ``flip_tta``, mirror only the faces whose one-pass top-two margin is below this (0..1;
            >= 1: every face, twice the work); ``None`` = ``DEFAULT_TTA_MARGIN``.
        quantized: serve the int8 copy ``quantized_path(model_path)`` instead of the float model; ``None`` =
            ``DEFAULT_QUANTIZED`` (yes, when the copy exists and its ``source_sha256`` metadata is the float
            file's SHA-256, else the float model with a logged warning for a stale copy); ``True`` requires it;
            ``False`` serves the float model. ``served_path`` says which file runs.

    Raises:
        ModelLoadError: missing or unusable model file (or ``quantized=True`` without a matching int8 copy).
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        threads: int = 1,
        flip_tta: bool | None = None,
        quantized: bool | None = None,
        tta_margin: float | None = None,
    ):
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_file():
            raise ModelLoadError(f"{self.model_path}: model file not found")
        self.served_path = self.model_path
        session = None
        want = DEFAULT_QUANTIZED if quantized is None else bool(quantized)
        int8 = quantized_path(self.model_path)
        if want and int8.is_file():
            int8_session = self._load(int8, threads)
            source = int8_session.get_modelmeta().custom_metadata_map.get("source_sha256")
            if source == _sha256(self.model_path):
                session, self.served_path = int8_session, int8
            else:
                log.warning("%s was not made from %s: serving the float model", int8, self.model_path)
        if session is None:
            if quantized is True:
                raise ModelLoadError(f"{int8}: no int8 copy made from {self.model_path}")
            session = self._load(self.model_path, threads)
        self._session = session
        self.quantized = self.served_path != self.model_path
        self._check(self._session, self.served_path)
        self.flip_tta = DEFAULT_FLIP_TTA if flip_tta is None else bool(flip_tta)
        margin = DEFAULT_TTA_MARGIN if tta_margin is None else float(tta_margin)
        self.tta_margin: float | None = None if margin >= 1 else margin  # None: every face is mirrored

    @staticmethod
    def _load(path: Path, threads: int):
        """ONNX Runtime session of ``path`` (``onnx_session``)."""
        return onnx_session(path, threads)

    def _check(self, session, path: Path) -> None:
        """Check the model's signature and remember its input and output names."""
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [FACE_SIZE, FACE_SIZE, 1] or outputs[0].shape[-1] != 7:
            raise ModelLoadError(
                f"{path}: expected input (N, 48, 48, 1) and output (N, 7), got {inputs[0].shape} -> {outputs[0].shape}"
            )
        self._input = inputs[0].name
        self._output = outputs[0].name

    #: Faces per network call: larger inputs are classified in chunks of this many, so memory stays bounded (a
    #: single call on the 28,709 FER2013 training faces with flip TTA took 24 GB and was killed).
    MAX_BATCH = 512

    def predict_proba(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of face crops.

        Args:
            faces: ``uint8 (N, 48, 48)`` grey faces (``N`` may be 0; classified ``MAX_BATCH`` at a time).

        Returns:
            ``float32 (N, 7)`` probabilities in ``LABELS`` order; each row sums to 1 (with flip TTA, the mean of the
            face's and its mirror image's for all faces or, with ``tta_margin``, for the uncertain ones).

        Raises:
            ValueError: wrong shape or dtype.
        """
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE) or faces.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, 48, 48) faces, got {faces.dtype} {faces.shape}")
        if faces.shape[0] == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        if faces.shape[0] > self.MAX_BATCH:  # bounded working memory whatever N (ONNX Runtime holds every activation)
            return np.concatenate(
                [self.predict_proba(faces[i : i + self.MAX_BATCH]) for i in range(0, faces.shape[0], self.MAX_BATCH)]
            )
        x = faces[..., None].astype(np.float32)
        if self.flip_tta and self.tta_margin is None:  # every face: both flips in one call
            n = faces.shape[0]
            probs = self._session.run([self._output], {self._input: np.concatenate([x, x[:, :, ::-1]])})[0]
            return ((probs[:n] + probs[n:]) / 2.0).astype(np.float32, copy=False)
        probs = self._session.run([self._output], {self._input: x})[0].astype(np.float32)
        if self.flip_tta:  # adaptive: mirror only the uncertain faces
            top2 = np.partition(probs, -2, axis=1)[:, -2:]
            uncertain = np.nonzero(top2[:, 1] - top2[:, 0] < self.tta_margin)[0]
            if len(uncertain):
                mirrored = self._session.run([self._output], {self._input: x[uncertain][:, :, ::-1]})[0]
                probs[uncertain] = (probs[uncertain] + mirrored) / 2.0
        return probs
