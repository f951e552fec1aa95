"""Serving benchmark (``python -m inference bench``): our path vs the seed-style baseline, in one process and run.

Measured:
- ``classify_ms_per_face_b1_1thread`` / ``_b32_1thread``: ONNX Runtime classification as served (``flip_tta``:
  mirror-image averaging, on by default, see ``inference.classifier.DEFAULT_FLIP_TTA``), one intra-op thread, batch 1
  and batch 32 real face crops; median of repeated runs, per face. ``_b32_1thread_no_tta``: one network pass per face.
- ``analyze_ms_per_frame``: ``EmotionRecognizer.analyze`` on a 640x480 frame made from a real group photo
  (detection with the default detector + crops + one batched classification), OpenCV and ONNX Runtime limited to
  one thread; median. ``detector`` names the default detector.
- ``detect_ms_per_frame`` / ``detect_ms_per_frame_haar``: detection alone on that frame with the default detector
  and with the Haar fallback, and the faces each finds (``faces_in_frame``, ``faces_in_frame_haar``).
- ``baseline_analyze_ms_per_frame``: what the seed demo apps do on the same frame: OpenCV's
  ``haarcascade_frontalface_default.xml`` (scaleFactor 1.1, minNeighbors 5, minSize 30) then one Keras
  ``model.predict`` call per face (the same trained weights); median.
- ``worker_rss_mb``: resident memory (VmRSS) of a fresh process that loaded the serving model and the detector
  and analysed one frame (TensorFlow never imported there).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from inference.classifier import MODELS_DIR, EmotionClassifier, crop_face, default_model_path, to_grey
from inference.detector import HaarFaceDetector, default_detector
from inference.imageio import read_image
from inference.recognizer import EmotionRecognizer

DEFAULT_PHOTO = Path(__file__).resolve().parent.parent.parent / "shared/data/faces/group_photos/ultralight_imgs_9.jpg"
KERAS_MODEL = MODELS_DIR / "fer_cnn.keras"


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _worker_rss_mb(model_path: str, image_path: str) -> float:
    code = (
        "import sys; sys.path.insert(0, sys.argv[3]);"
        "from inference.recognizer import EmotionRecognizer; from inference.imageio import read_image;"
        "r = EmotionRecognizer.from_path(sys.argv[1]); r.analyze(read_image(sys.argv[2]));"
        "assert not any(m.startswith('tensorflow') for m in sys.modules);"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code, model_path, image_path, root], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def run_bench(image_path: str | None = None, model_path: str | None = None, repeats: int = 20) -> dict:
    """Run the benchmark (about 20-40 s on 2 cores) and return the measurements as a dict (keys in module doc).

    Raises:
        FileNotFoundError: no photo given and the default group photo is missing.
        inference.imageio.ImageDecodeError: the photo cannot be read.
    """
    photo = Path(image_path) if image_path else DEFAULT_PHOTO
    if not photo.is_file():
        raise FileNotFoundError(f"{photo}: photo not found (pass one: python -m inference bench PHOTO)")
    model_path = str(model_path or default_model_path())
    cv2.setNumThreads(1)
    frame = cv2.resize(read_image(photo), (640, 480), interpolation=cv2.INTER_AREA)

    detector = default_detector()
    recognizer = EmotionRecognizer(EmotionClassifier(model_path, threads=1), detector)
    faces = recognizer.analyze(frame)
    haar = HaarFaceDetector()
    detect_ms = _median_ms(lambda: detector.detect(frame), repeats)
    detect_haar_ms = _median_ms(lambda: haar.detect(frame), max(3, repeats // 4))
    grey = to_grey(frame)
    crops = np.stack([crop_face(grey, f.box) for f in faces]) if faces else np.zeros((1, 48, 48), np.uint8)
    batch32 = np.resize(crops, (32, 48, 48))
    clf = recognizer.classifier
    b1 = _median_ms(lambda: clf.predict_proba(crops[:1]), repeats * 5)
    b32 = _median_ms(lambda: clf.predict_proba(batch32), repeats) / 32
    single = EmotionClassifier(model_path, threads=1, flip_tta=False)
    b32_single = _median_ms(lambda: single.predict_proba(batch32), repeats) / 32
    analyze_ms = _median_ms(lambda: recognizer.analyze(frame), repeats)

    result = {
        "photo": str(photo),
        "frame": [640, 480],
        "faces_in_frame": len(faces),
        "detector": type(detector).__name__,
        "detect_ms_per_frame": round(detect_ms, 3),
        "detect_ms_per_frame_haar": round(detect_haar_ms, 3),
        "faces_in_frame_haar": len(haar.detect(frame)),
        "flip_tta": clf.flip_tta,
        "classify_ms_per_face_b1_1thread": round(b1, 4),
        "classify_ms_per_face_b32_1thread": round(b32, 4),
        "classify_ms_per_face_b32_1thread_no_tta": round(b32_single, 4),
        "analyze_ms_per_frame": round(analyze_ms, 3),
    }

    # Seed-style baseline, same frame, same weights, Keras model.predict per face.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras_model = keras.models.load_model(KERAS_MODEL, compile=False)
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def baseline():
        g = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        boxes = cascade.detectMultiScale(g, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        out = []
        for x, y, w, h in boxes:
            face = cv2.resize(g[y : y + h, x : x + w], (48, 48)).astype(np.float32)[None, :, :, None]
            out.append(keras_model.predict(face, verbose=0))
        return out

    baseline_faces = len(baseline())
    baseline_ms = _median_ms(baseline, max(3, repeats // 4), warmup=1)
    result.update(
        baseline_analyze_ms_per_frame=round(baseline_ms, 3),
        baseline_faces_in_frame=baseline_faces,
        speedup_vs_baseline=round(baseline_ms / analyze_ms, 2),
        worker_rss_mb=round(_worker_rss_mb(model_path, str(photo)), 1),
        cpu=_cpu(),
    )
    return result


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs"


def format_bench(result: dict) -> str:
    """Human-readable lines of a ``run_bench`` result."""
    return "\n".join(
        [
            f"frame 640x480 from {result['photo']}: {result['faces_in_frame']} faces (baseline found "
            f"{result['baseline_faces_in_frame']}); flip TTA {'on' if result['flip_tta'] else 'off'}; {result['cpu']}",
            f"classify, 1 thread: {result['classify_ms_per_face_b1_1thread']:.3f} ms/face at batch 1, "
            f"{result['classify_ms_per_face_b32_1thread']:.3f} ms/face at batch 32 "
            f"({result['classify_ms_per_face_b32_1thread_no_tta']:.3f} without flip TTA)",
            f"detect: {result['detect_ms_per_frame']:.1f} ms/frame ({result['detector']}), Haar fallback "
            f"{result['detect_ms_per_frame_haar']:.1f} ms/frame ({result['faces_in_frame_haar']} faces)",
            f"analyze: {result['analyze_ms_per_frame']:.1f} ms/frame; seed-style baseline "
            f"{result['baseline_analyze_ms_per_frame']:.1f} ms/frame; speedup x{result['speedup_vs_baseline']:.1f}",
            f"worker RSS (model + detector loaded): {result['worker_rss_mb']:.0f} MB",
            json.dumps(result),
        ]
    )
