"""Serving benchmark (``python -m inference bench``): our path vs the seed-style baseline, in one process and run.

Measured:
- ``classify_ms_per_face_b1_1thread`` / ``_b32_1thread``: ONNX Runtime classification as served (``flip_tta``:
  mirror-image averaging, on by default, see ``inference.classifier.DEFAULT_FLIP_TTA``; ``classifier_int8``: the
  int8 copy of ``scripts/quantize_classifier.py`` is served), one intra-op thread, batch 1 and batch 32 real face
  crops; median of repeated runs, per face. As served: flip TTA on every face (both flips in one call) unless
  ``tta_margin`` is set (adaptive: only faces whose one-pass top-two margin is below it are mirrored;
  ``tta_mirrored_share_at_0_4``: the share of the batch a margin of 0.4 mirrors); ``_b32_1thread_full_tta``:
  every face mirrored; ``_b32_1thread_no_tta``: one network pass per face; ``_b32_1thread_float``: as served but
  with the float model; ``_b32_1thread_small``: the small-face model (``small_face_model``, served for faces under
  ``inference.recognizer.SMALL_FACE_SIDE`` px when no ``--model`` is given) as served.
- ``analyze_ms_per_frame``: ``EmotionRecognizer.analyze`` on a 640x480 frame made from a real group photo
  (detection with the default detector + crops + one batched classification), OpenCV and ONNX Runtime limited to
  one thread; median. ``detector`` names the default detector.
- ``stream_ms_per_frame``: ``StreamAnalyzer.analyze`` (default settings) over ``STREAM_FRAMES`` 640x480 frames cut
  from that photo scaled to 704x528 by a window drifting slowly (at most ~1.6 px per frame each way, a smooth
  camera sway), the state passed through ``to_dict``/``from_dict`` each frame as a worker would; mean over all
  frames after the first
  (keyframes included: steady state). ``stream_follow_ms_per_frame``: median over the follow-only frames;
  ``stream_keyframes``: how many of the frames ran the full detector; ``stream_speedup_vs_baseline``.
  ``_classroom``: the same with keyframes looking for faces from ``CLASSROOM_MIN_FACE_PX`` px, as a classroom
  session's cameras do (``stream_ms_per_frame_classroom``, ``stream_keyframes_classroom``, and detection alone:
  ``detect_ms_per_frame_classroom``, ``faces_in_frame_classroom``).
- ``crowd_analyze_ms_per_frame`` / ``crowd_faces_in_frame``: ``analyze`` on a 1280x720 frame made from
  ``crowds/ultralight_imgs_26.jpg`` (77 people); median. ``crowd_too_small``: faces marked ``too_small``.
- ``detect_ms_per_frame`` / ``detect_ms_per_frame_haar``: detection alone on that frame with the default detector
  and with the Haar fallback, and the faces each finds (``faces_in_frame``, ``faces_in_frame_haar``).
- ``baseline_analyze_ms_per_frame``: what the seed demo apps do on the same frame: OpenCV's
  ``haarcascade_frontalface_default.xml`` (scaleFactor 1.1, minNeighbors 5, minSize 30) then one Keras
  ``model.predict`` call per face (the same trained weights); median.
- ``worker_rss_mb``: resident memory (VmRSS) of a fresh process that loaded the serving models and the detector
  and analysed the full-size photo with ``analyze`` and two ``StreamAnalyzer`` frames, then a 1920x1080
  frame holding the crowd photo at its own size (faces ~20 px: the default detector loads and runs MTCNN on the
  whole 1080p frame, its largest working set; TensorFlow never imported).

All times are CPU time of the process (``time.process_time``), so a busy machine inflates them less than wall
time; the baseline runs with TensorFlow's thread pools at one thread.
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

from inference.classifier import (
    MODELS_DIR,
    EmotionClassifier,
    crop_face,
    default_model_path,
    default_small_face_model_path,
    to_grey,
)
from inference.detector import HaarFaceDetector, default_detector
from inference.imageio import read_image
from inference.recognizer import MIN_READABLE_SIDE, EmotionRecognizer
from inference.stream import StreamAnalyzer

FACES_DIR = Path(__file__).resolve().parent.parent.parent / "shared/data/faces"
DEFAULT_PHOTO = FACES_DIR / "group_photos/ultralight_imgs_9.jpg"
CROWD_PHOTO = FACES_DIR / "crowds/ultralight_imgs_26.jpg"
STREAM_FRAMES = 90
KERAS_MODEL = MODELS_DIR / "fer_cnn.keras"


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def stream_frames(photo: np.ndarray, count: int = STREAM_FRAMES) -> list[np.ndarray]:
    """``count`` 640x480 BGR frames: a window drifting smoothly over ``photo`` scaled to 704x528 (offsets
    ``32 + 24 sin(t / 15)``, ``24 + 16 cos(t / 20)`` px at frame ``t``: at most ~1.6 px per frame each way)."""
    big = cv2.resize(photo, (704, 528), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(count):
        dx = int(round(32 + 24 * np.sin(t / 15)))
        dy = int(round(24 + 16 * np.cos(t / 20)))
        frames.append(np.ascontiguousarray(big[dy : dy + 480, dx : dx + 640]))
    return frames


#: Smallest face of a classroom session's keyframes: the platform's default ``FER_CLASSROOM_MIN_FACE_PX``, which is
#: the smallest face it reads (``inference.recognizer.MIN_READABLE_SIDE``).
CLASSROOM_MIN_FACE_PX = MIN_READABLE_SIDE


def _stream(
    analyzer: StreamAnalyzer, frames: list[np.ndarray], min_face_px: int | None = None
) -> tuple[list[float], list[bool], list[int]]:
    """Per-frame CPU ms, keyframe flags and face counts of one pass over ``frames`` (state through JSON dicts;
    keyframes look for faces from ``min_face_px``)."""
    state, times, keys, counts = None, [], [], []
    for frame in frames:
        t0 = time.process_time()
        faces, new_state = analyzer.analyze(frame, state, min_face_px=min_face_px)
        state = new_state.to_dict()
        times.append((time.process_time() - t0) * 1000)
        keys.append(new_state.keyframe)
        counts.append(len(faces))
    return times, keys, counts


def _worker_rss_mb(model_path: str, image_path: str, small_face_model_path: str) -> float:
    code = (
        "import sys, cv2; sys.path.insert(0, sys.argv[3]);"
        "from inference.recognizer import EmotionRecognizer; from inference.imageio import read_image;"
        "from inference.stream import StreamAnalyzer;"
        "from inference.classifier import EmotionClassifier;"
        "small = EmotionClassifier(sys.argv[5]) if sys.argv[5] else None;"
        "r = EmotionRecognizer(EmotionClassifier(sys.argv[1]), small_face_classifier=small);"
        "image = read_image(sys.argv[2]); r.analyze(image);"
        "s = StreamAnalyzer(r); state = s.analyze(image)[1]; s.analyze(image, state);"
        "import numpy as np; crowd = read_image(sys.argv[4]); frame = np.full((1080, 1920, 3), 128, np.uint8);"
        "frame[:crowd.shape[0], :crowd.shape[1]] = crowd; r.analyze(frame);"  # a 1080p crowd frame: MTCNN runs
        "assert not any(m.startswith('tensorflow') for m in sys.modules);"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code, model_path, image_path, root, str(CROWD_PHOTO), small_face_model_path],
        capture_output=True,
        text=True,
        check=True,
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
    # As served: the shipped ensemble with the shipped small-face model, or a given model alone.
    small_path = "" if model_path else str(default_small_face_model_path())
    model_path = str(model_path or default_model_path())
    cv2.setNumThreads(1)
    frame = cv2.resize(read_image(photo), (640, 480), interpolation=cv2.INTER_AREA)

    detector = default_detector()
    small_clf = EmotionClassifier(small_path, threads=1) if small_path else None
    recognizer = EmotionRecognizer(EmotionClassifier(model_path, threads=1), detector, small_face_classifier=small_clf)
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
    full_tta = EmotionClassifier(model_path, threads=1, tta_margin=1.0)
    b32_full = _median_ms(lambda: full_tta.predict_proba(batch32), repeats) / 32
    one_pass = single.predict_proba(batch32)
    top2 = np.partition(one_pass, -2, axis=1)[:, -2:]
    margin = clf.tta_margin if clf.tta_margin is not None else 0.4  # the share an adaptive 0.4 would mirror
    mirrored_share = float(np.mean(top2[:, 1] - top2[:, 0] < margin))
    b32_small = _median_ms(lambda: small_clf.predict_proba(batch32), repeats) / 32 if small_clf else None
    float_clf = EmotionClassifier(model_path, threads=1, quantized=False)
    b32_float = _median_ms(lambda: float_clf.predict_proba(batch32), repeats) / 32
    analyze_ms = _median_ms(lambda: recognizer.analyze(frame), repeats)

    analyzer = StreamAnalyzer(recognizer)
    frames = stream_frames(read_image(photo))
    _stream(analyzer, frames[:5])  # warm-up
    stream_times, stream_keys, stream_counts = _stream(analyzer, frames)
    follow_times = [t for t, k in zip(stream_times, stream_keys) if not k]
    class_times, class_keys, _ = _stream(StreamAnalyzer(recognizer), frames, CLASSROOM_MIN_FACE_PX)
    class_faces = detector.detect_with_keypoints(frame, CLASSROOM_MIN_FACE_PX)[0]
    detect_class_ms = _median_ms(lambda: detector.detect_with_keypoints(frame, CLASSROOM_MIN_FACE_PX), repeats)

    crowd = cv2.resize(read_image(CROWD_PHOTO), (1280, 720), interpolation=cv2.INTER_LINEAR)
    crowd_faces = recognizer.analyze(crowd)
    crowd_ms = _median_ms(lambda: recognizer.analyze(crowd), max(3, repeats // 4), warmup=1)

    stream_ms = round(statistics.fmean(stream_times[1:]), 3)
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
        "classify_ms_per_face_b32_1thread_full_tta": round(b32_full, 4),
        "tta_margin": clf.tta_margin,
        "tta_mirrored_share_at_0_4": round(mirrored_share, 3),
        "classifier_int8": clf.quantized,
        "small_face_model": small_path or None,
        "classify_ms_per_face_b32_1thread_small": round(b32_small, 4) if b32_small is not None else None,
        "classify_ms_per_face_b32_1thread_float": round(b32_float, 4),
        "analyze_ms_per_frame": round(analyze_ms, 3),
        "stream_frames": len(frames),
        "stream_ms_per_frame": stream_ms,
        "stream_follow_ms_per_frame": round(statistics.median(follow_times), 3) if follow_times else None,
        "stream_keyframes": int(sum(stream_keys)),
        "stream_faces_per_frame": [min(stream_counts), max(stream_counts)],
        "detect_ms_per_frame_classroom": round(detect_class_ms, 3),
        "faces_in_frame_classroom": len(class_faces),
        "stream_ms_per_frame_classroom": round(statistics.fmean(class_times[1:]), 3),
        "stream_keyframes_classroom": int(sum(class_keys)),
        "crowd_photo": str(CROWD_PHOTO),
        "crowd_frame": [1280, 720],
        "crowd_faces_in_frame": len(crowd_faces),
        "crowd_too_small": sum(f.too_small for f in crowd_faces),
        "crowd_analyze_ms_per_frame": round(crowd_ms, 3),
    }

    # Seed-style baseline, same frame, same weights, Keras model.predict per face.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras_model = keras.models.load_model(KERAS_MODEL, compile=False)
    haar_dir = Path(cv2.data.haarcascades)  # type: ignore[attr-defined]  # cv2.data: not in the stubs
    cascade = cv2.CascadeClassifier(str(haar_dir / "haarcascade_frontalface_default.xml"))

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
        stream_speedup_vs_baseline=round(baseline_ms / stream_ms, 2),
        worker_rss_mb=round(_worker_rss_mb(model_path, str(photo), small_path), 1),
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
            f"({result['classify_ms_per_face_b32_1thread_no_tta']:.3f} without flip TTA, "
            f"{result['classify_ms_per_face_b32_1thread_float']:.3f} float model; int8 {result['classifier_int8']})"
            + (
                f"; small-face model {result['classify_ms_per_face_b32_1thread_small']:.3f} ms/face at batch 32"
                if result["small_face_model"]
                else ""
            ),
            f"detect: {result['detect_ms_per_frame']:.1f} ms/frame ({result['detector']}), Haar fallback "
            f"{result['detect_ms_per_frame_haar']:.1f} ms/frame ({result['faces_in_frame_haar']} faces)",
            f"analyze: {result['analyze_ms_per_frame']:.1f} ms/frame; seed-style baseline "
            f"{result['baseline_analyze_ms_per_frame']:.1f} ms/frame; speedup x{result['speedup_vs_baseline']:.1f}",
            f"stream ({result['stream_frames']} frames, {result['stream_keyframes']} keyframes): "
            f"{result['stream_ms_per_frame']:.1f} ms/frame (follow-only frames "
            f"{result['stream_follow_ms_per_frame']} ms); speedup x{result['stream_speedup_vs_baseline']:.1f}",
            f"classroom cameras (faces from {CLASSROOM_MIN_FACE_PX} px): detect "
            f"{result['detect_ms_per_frame_classroom']:.1f} ms ({result['faces_in_frame_classroom']} faces), stream "
            f"{result['stream_ms_per_frame_classroom']:.1f} ms/frame "
            f"({result['stream_keyframes_classroom']} keyframes)",
            f"crowd 1280x720: {result['crowd_faces_in_frame']} faces ({result['crowd_too_small']} too small) in "
            f"{result['crowd_analyze_ms_per_frame']:.1f} ms",
            f"worker RSS (model + detector loaded): {result['worker_rss_mb']:.0f} MB",
            json.dumps(result),
        ]
    )
