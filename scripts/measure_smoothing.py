"""Measure causal smoothing filters for per-track emotion probabilities on jittered FER2013 PublicTest sequences.

Builds two kinds of synthetic "video" of one face, classifies every frame with the shipped classifier as served
(``EmotionClassifier()``: int8 if present, flip TTA) and compares the raw per-frame label with the label of
smoothed probabilities:

* steady sequences: ``--frames`` frames of one PublicTest face, each frame independently warped (random shift,
  rotation, scale, brightness and Gaussian noise; ``--jitter`` sets the amplitudes): label switches per sequence
  (frames whose label differs from the previous frame's) and accuracy against the FER2013 label.
* switch sequences: ``--frames`` frames of face A then ``--frames`` frames of face B (another PublicTest face with a
  different FER2013 label), both jittered: onset delay = frames after the switch until the smoothed label first
  equals the label the raw classifier gives most often on B's frames (pairs where that label equals A's raw majority
  label are left out); a filter that never gets there within B's frames counts B's length and is reported.

Filters: raw; exponential moving average ``s_t = a p_t + (1 - a) s_{t-1}``, ``s_0 = p_0``; window mean of the last
``k`` frames (fewer at the start). Run (about a minute on 2 cores)::

    .venv/bin/python scripts/measure_smoothing.py ../shared/data/fer2013/fer2013_train_val.csv.gz [--json]

Prints a Markdown table (the one in the README, "Tracks and smoothing"), or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.classifier import EmotionClassifier
from inference.data import load_fer2013
from inference.tracking import ema_filter, window_filter

#: jitter amplitudes: (shift px, rotation degrees, scale fraction, brightness grey levels, noise sigma grey levels)
JITTER = {
    "mild": (2.0, 4.0, 0.04, 6.0, 2.0),
    "strong": (4.0, 10.0, 0.10, 15.0, 5.0),
}
ALPHAS = (0.7, 0.5, 0.4, 0.3, 0.2, 0.1)
WINDOWS = (3, 5, 8, 12)


def jitter(face: np.ndarray, rng: np.random.Generator, amplitudes: tuple[float, ...]) -> np.ndarray:
    """One randomly warped copy of a ``uint8 (48, 48)`` face (border replicated): ``uint8 (48, 48)``."""
    shift, rotation, scale, brightness, noise = amplitudes
    matrix = cv2.getRotationMatrix2D((23.5, 23.5), rng.uniform(-rotation, rotation), 1 + rng.uniform(-scale, scale))
    matrix[:, 2] += rng.uniform(-shift, shift, 2)
    out = cv2.warpAffine(face, matrix, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = out.astype(np.float32) + rng.uniform(-brightness, brightness) + rng.normal(0, noise, out.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def classify_sequences(classifier, faces: np.ndarray, rng, amplitudes, frames: int) -> np.ndarray:
    """``float32 (S, T, 7)`` probabilities of ``frames`` jittered frames of each sequence's faces.

    ``faces`` is ``uint8 (S, F, 48, 48)``: F source faces per sequence, each shown for ``frames`` frames in turn."""
    seqs, per = faces.shape[:2]
    crops = np.stack(
        [jitter(faces[s, f], rng, amplitudes) for s in range(seqs) for f in range(per) for _ in range(frames)]
    )
    probs = np.concatenate([classifier.predict_proba(crops[i : i + 256]) for i in range(0, len(crops), 256)])
    return probs.reshape(seqs, per * frames, -1)


def switches(labels: np.ndarray) -> np.ndarray:
    """Label changes per sequence of ``int (S, T)`` labels: ``int (S,)``."""
    return (labels[:, 1:] != labels[:, :-1]).sum(axis=1)


def majority(labels: np.ndarray) -> np.ndarray:
    """Most frequent label of each row of ``int (S, T)`` (lowest label on ties): ``int (S,)``."""
    return np.array([np.bincount(row, minlength=7).argmax() for row in labels])


def measure(data_path: str, sequences: int, frames: int, seed: int) -> dict:
    data = load_fer2013(data_path, usage="PublicTest")
    classifier = EmotionClassifier()
    rng = np.random.default_rng(seed)
    filters = {"raw": lambda p: p}
    filters.update({f"EMA a={a}": (lambda p, a=a: ema_filter(p, a)) for a in ALPHAS})
    filters.update({f"window k={k}": (lambda p, k=k: window_filter(p, k)) for k in WINDOWS})
    results = {
        "model": str(classifier.served_path.name),
        "flip_tta": classifier.flip_tta,
        "sequences": sequences,
        "frames": frames,
        "seed": seed,
        "jitter": {},
    }
    for name, amplitudes in JITTER.items():
        t0 = time.time()
        pick = rng.choice(len(data), sequences, replace=False)
        steady = classify_sequences(classifier, data.images[pick][:, None], rng, amplitudes, frames)
        truth = data.labels[pick]
        # switch pairs: B is a random face with another FER2013 label
        partners = np.array([rng.choice(np.flatnonzero(data.labels != data.labels[i])) for i in pick])
        pair_faces = np.stack([data.images[pick], data.images[partners]], axis=1)
        pairs = classify_sequences(classifier, pair_faces, rng, amplitudes, frames)
        raw_pairs = pairs.argmax(-1)
        a_major, b_major = majority(raw_pairs[:, :frames]), majority(raw_pairs[:, frames:])
        usable = a_major != b_major
        rows = {}
        for label, fn in filters.items():
            smooth = fn(steady).argmax(-1)
            smooth_pairs = fn(pairs).argmax(-1)[usable, frames:]
            hit = smooth_pairs == b_major[usable, None]
            reached = hit.any(axis=1)
            delay = np.where(reached, hit.argmax(axis=1), frames)
            rows[label] = {
                "switches_per_sequence": round(float(switches(smooth).mean()), 3),
                "sequences_without_switch": round(float((switches(smooth) == 0).mean()), 3),
                "accuracy": round(float((smooth == truth[:, None]).mean()), 4),
                "onset_delay_mean": round(float(delay.mean()), 2),
                "onset_delay_p90": float(np.percentile(delay, 90)),
                "onset_never": int((~reached).sum()),
            }
        results["jitter"][name] = {
            "amplitudes": dict(zip(("shift_px", "rotation_deg", "scale", "brightness", "noise_sigma"), amplitudes)),
            "switch_pairs": int(usable.sum()),
            "seconds": round(time.time() - t0, 1),
            "filters": rows,
        }
    return results


def format_table(results: dict) -> str:
    names = list(results["jitter"])
    head = "| filter | " + " | ".join(
        f"{n}: switches / seq | {n}: accuracy | {n}: onset delay, frames (mean / p90)" for n in names
    )
    lines = [head + " |", "|---" * (1 + 3 * len(names)) + "|"]
    for label in results["jitter"][names[0]]["filters"]:
        cells = []
        for n in names:
            r = results["jitter"][n]["filters"][label]
            cells += [
                f"{r['switches_per_sequence']:.2f}",
                f"{100 * r['accuracy']:.1f} %",
                f"{r['onset_delay_mean']:.2f} / {r['onset_delay_p90']:.0f}",
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="fer2013.csv[.gz] with PublicTest rows")
    parser.add_argument("--sequences", type=int, default=300, help="sequences per jitter level (default 300)")
    parser.add_argument("--frames", type=int, default=20, help="frames per face (default 20)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = measure(args.data, args.sequences, args.frames, args.seed)
    print(json.dumps(results, indent=1) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
