"""Evaluation of a served (ONNX) model on FER2013 rows (``python -m inference evaluate``)."""

from __future__ import annotations

import os

from inference.classifier import EmotionClassifier, default_model_path
from inference.data import load_fer2013
from inference.metrics import classification_report


def evaluate(data: str, usage: str | None = None, model_path: str | None = None, flip_tta: bool | None = None) -> dict:
    """Metrics of the model on the rows of ``data`` (optionally only one ``Usage`` split).

    Args:
        data: FER2013 CSV (``.csv``/``.csv.gz``) or image-folder root.
        usage: ``Training``, ``PublicTest``, ``PrivateTest`` or ``None`` (all rows).
        model_path: ONNX model; ``None`` = the shipped default.
        flip_tta: also average with the mirrored face (test-time augmentation); ``None`` = as served
            (``inference.classifier.DEFAULT_FLIP_TTA``).

    Returns:
        ``inference.metrics.classification_report`` keys (``n``, ``accuracy``, ``macro_f1``, ``per_class``,
        ``confusion``, ``labels``) plus ``source``, ``usage``, ``model``, ``flip_tta`` and ``skipped_rows``
        (messages of malformed rows, which are left out of the metrics).

    Raises:
        inference.data.DatasetError: unreadable data or no rows for ``usage``.
        inference.classifier.ModelLoadError: missing or unusable model.
    """
    from inference.data import DatasetError

    classifier = EmotionClassifier(model_path, threads=os.cpu_count() or 1, flip_tta=flip_tta)
    dataset = load_fer2013(data, usage=usage)
    if len(dataset) == 0:
        raise DatasetError(f"{data}: no rows with Usage {usage}")
    probabilities = classifier.predict_proba(dataset.images)
    report = classification_report(dataset.labels, probabilities.argmax(axis=1))
    report.update(
        source=str(data),
        usage=usage,
        model=str(model_path or default_model_path()),
        flip_tta=classifier.flip_tta,
        skipped_rows=[str(e) for e in dataset.errors],
    )
    return report
