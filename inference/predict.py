"""Prediction on photos (``python -m inference predict``): faces, labels, annotated copies, probability charts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.imageio import ImageDecodeError, read_image
from inference.labels import LABELS
from inference.recognizer import EmotionRecognizer, FaceResult


def annotate(image: np.ndarray, faces: list[FaceResult]) -> np.ndarray:
    """Copy of BGR ``image`` with each face's box and ``label score`` drawn on it."""
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 200, 0), thickness)
        text = f"{face.label} {face.score:.2f}"
        scale = max(0.4, w / 160)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 2)
        cv2.rectangle(out, (x, top), (x + tw + 2, top + th + base + 2), (0, 200, 0), -1)
        cv2.putText(out, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return out


def probability_chart(faces: list[FaceResult], path: str | os.PathLike, title: str = "") -> None:
    """PNG bar chart: one group of 7 bars (``LABELS`` order) per face, faces numbered left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    n = max(1, len(faces))
    width = 0.8 / n
    x = np.arange(len(LABELS))
    for i, face in enumerate(faces):
        ax.bar(x + (i - (n - 1) / 2) * width, face.probabilities, width, label=f"face {i + 1}")
    ax.set_xticks(x, LABELS)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(title or ("no face found" if not faces else "emotion probabilities"))
    if faces and n <= 10:
        ax.legend(fontsize="small", ncols=min(n, 5))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def predict_files(
    paths: list[str], out_dir: str | None = None, model_path: str | None = None, recognizer=None
) -> list[dict]:
    """Analyse photos one by one; one unreadable file never stops the others.

    Args:
        paths: image files (jpg, png, tiff, bmp, webp; grey, RGBA and 16-bit accepted).
        out_dir: when given, writes ``<stem>_annotated.jpg`` and ``<stem>_probabilities.png`` per image.
        model_path: ONNX model (default: the shipped model).
        recognizer: an ``EmotionRecognizer`` to reuse (overrides ``model_path``).

    Returns:
        Per image, in order: ``{"image": path, "faces": [FaceResult.to_dict(), ...]}`` (boxes in pixels of the
        original image), or ``{"image": path, "error": message}``.

    Raises:
        inference.classifier.ModelLoadError: the model cannot be loaded.
    """
    if recognizer is None:
        recognizer = EmotionRecognizer.from_path(model_path) if model_path else EmotionRecognizer.default()
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageDecodeError as exc:
            results.append({"image": path, "error": str(exc)})
            continue
        faces = recognizer.analyze(image)
        if out_dir:
            stem = Path(path).stem
            cv2.imwrite(str(Path(out_dir) / f"{stem}_annotated.jpg"), annotate(image, faces))
            probability_chart(faces, Path(out_dir) / f"{stem}_probabilities.png", title=Path(path).name)
        results.append({"image": path, "faces": [face.to_dict() for face in faces]})
    return results
