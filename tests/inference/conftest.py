import csv
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE_CSV = REPO / "tests/fixtures/fer2013_sample.csv.gz"
FACES_DIR = Path(os.environ.get("FER_FACES_DIR", REPO.parent / "shared/data/faces"))
BAD_ROWS = {100, 101, 102, 103, 172, 173, 174}


@pytest.fixture(scope="session")
def fixture_csv() -> Path:
    return FIXTURE_CSV


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES_DIR.is_dir():
        pytest.skip(f"face photos not found at {FACES_DIR}")
    return FACES_DIR


def jitter_boxes(boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detector-like box noise: each ``(x, y, w, h)`` moved by up to +-6 % of its side and grown or shrunk by up to
    +-6 %; returns ``int32 (K, 4)``."""
    boxes = np.asarray(boxes, np.float64)
    side = boxes[:, 2:3]
    noisy = boxes + np.hstack([rng.uniform(-0.06, 0.06, (len(boxes), 2)) * side, np.zeros((len(boxes), 2))])
    grow = rng.uniform(-0.06, 0.06, (len(boxes), 1)) * side
    return np.hstack([noisy[:, :2] - grow / 2, noisy[:, 2:] + grow]).round().astype(np.int32)


def jittered_labels(recognizer, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, frames: int = 30):
    """Classify the faces at ``boxes`` of ``image`` over ``frames`` frames of ``jitter_boxes`` noise, tracked by a
    fresh ``inference.tracking.Tracker``.

    Returns:
        ``(raw, smoothed, boxes, ids)``: ``int (frames, K)`` argmax labels of each frame's probabilities and of the
        tracks' smoothed ones, the jittered ``int32 (frames, K, 4)`` boxes and the ``int (frames, K)`` track ids.
    """
    from inference.tracking import Tracker

    tracker, raw, smooth, noisy_boxes, track_ids = Tracker(), [], [], [], []
    for _ in range(frames):
        noisy = jitter_boxes(boxes, rng)
        faces = recognizer.classify(image, noisy)
        ids = tracker.update(noisy, np.array([f.probabilities for f in faces]))
        raw.append([int(np.argmax(f.probabilities)) for f in faces])
        smooth.append(tracker.smoothed(ids).argmax(axis=1).tolist())
        noisy_boxes.append(noisy)
        track_ids.append(ids)
    return np.array(raw), np.array(smooth), np.array(noisy_boxes), np.array(track_ids)


def hand_counts(faces_dir: Path) -> dict[Path, int]:
    """Photo path -> hand-counted number of visible faces, from the faces.csv files."""
    counts = {}
    for table in sorted(faces_dir.glob("*/faces.csv")):
        with open(table, newline="") as fh:
            for row in csv.DictReader(fh):
                counts[table.parent / row["file"]] = int(row["faces_visible"])
    return counts


def crowd_references(faces_dir: Path) -> dict[Path, tuple[int, int]]:
    """Crowd photo path -> (smaller, larger) of the two reference detector counts in reference_counts.csv."""
    refs = {}
    with open(faces_dir / "crowds/reference_counts.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            counts = sorted((int(row["rfb640"]), int(row["mtcnn"])))
            refs[faces_dir / "crowds" / row["file"]] = (counts[0], counts[1])
    return refs


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own parsed-data cache folder."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
