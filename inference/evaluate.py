"""Evaluation of a served (ONNX) model on FER2013 rows (``python -m inference evaluate``).

Besides the FER2013-label metrics it measures, on request:

- FER+ labels (``ferplus``: Barsoum et al. 2016, arXiv:1608.01041, ``fer2013new.csv``): accuracy against the FER+
  majority (the most-voted of the 7 FER2013 emotions; faces whose most-voted column is contempt, unknown or
  not-a-face are left out, see ``inference.data.ferplus_soft_targets``; on a tie any of the tied emotions counts as
  right), the accuracy on the FER+ release's own "clear majority" faces (``inference.data.ferplus_clear_majority``)
  and the cross-entropy against the vote distribution; ``agreement`` splits the kept faces into those whose
  FER2013 label is a FER+ majority label and those the FER+ annotators dispute (see ``label_agreement``).
- Face size (``sizes``): each 48x48 face is shrunk to ``s x s`` pixels with area averaging and scaled back to 48 by
  ``inference.classifier.crop_face`` (bilinear), as a face of ``s`` pixels in a camera frame is; accuracy per size.
  Sizes under ``small_face_side`` are classified by the small-face model when there is one, as
  ``inference.EmotionRecognizer`` serves them.
- Calibration (``calibration``): ECE over 15 bins (``inference.metrics.expected_calibration_error``) and, per
  class, the mean predicted probability vs the true share of that class.
"""

from __future__ import annotations

import os
from typing import Literal

import cv2
import numpy as np

from inference.classifier import EmotionClassifier, crop_face, default_model_path, default_small_face_model_path
from inference.data import (
    align_ferplus,
    ferplus_clear_majority,
    ferplus_majority,
    ferplus_soft_targets,
    load_fer2013,
    load_ferplus,
)
from inference.labels import LABELS, NUM_CLASSES
from inference.metrics import classification_report, expected_calibration_error, soft_cross_entropy
from inference.recognizer import SMALL_FACE_SIDE

#: The face sides of ``evaluate --sizes`` in the model card (pixels).
CARD_SIZES: tuple[int, ...] = (48, 32, 24, 16)
CALIBRATION_BINS = 15


def shrink_faces(images: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (N, 48, 48)`` faces as they look when the face is only ``size`` pixels wide in the frame.

    Each face is resized to ``size x size`` with ``cv2.INTER_AREA`` and back to 48x48 by ``crop_face`` (which
    upsamples with ``INTER_LINEAR``); ``size >= 48`` returns the faces unchanged.

    Raises:
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"face size must be >= 1 pixel, not {size}")
    if size >= images.shape[1]:
        return images
    out = np.empty_like(images)
    for i, face in enumerate(images):
        small = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = crop_face(small, (0, 0, size, size), size=images.shape[1])
    return out


def calibration_report(probabilities: np.ndarray, correct: np.ndarray, true_share: np.ndarray) -> dict:
    """ECE over ``CALIBRATION_BINS`` bins of the top-label confidence, and mean probability vs true share per class.

    Args:
        probabilities: ``float (N, 7)``.
        correct: ``bool (N,)`` whether each face's predicted label is right.
        true_share: ``float (7,)`` share of each class among the faces (the label frequencies).

    Returns:
        ``{"ece", "bins" (the reliability table), "per_class": {label: {"mean_probability", "true_share"}}}``.
    """
    report = expected_calibration_error(probabilities.max(axis=1), correct, CALIBRATION_BINS)
    mean_p = probabilities.mean(axis=0)
    report["per_class"] = {
        label: {"mean_probability": float(mean_p[k]), "true_share": float(true_share[k])}
        for k, label in enumerate(LABELS)
    }
    return report


def evaluate_faces(
    classifier: EmotionClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    votes: np.ndarray | None = None,
    sizes=(),
    calibration: bool = False,
    small_face_classifier: EmotionClassifier | None = None,
    small_face_side: int = SMALL_FACE_SIDE,
) -> dict:
    """Metrics of ``classifier`` on ``uint8 (N, 48, 48)`` faces with FER2013 ``labels`` ``int (N,)``.

    Args:
        votes: ``int (N, 10)`` FER+ votes per face (``FERPLUS_COLUMNS`` order) or ``None``; rows of zeros (no vote
            row) are left out of the FER+ metrics like not-a-face majorities.
        sizes: face sides in pixels for the per-size accuracy (see ``shrink_faces``).
        calibration: add the calibration report.
        small_face_classifier: classifies the faces shrunk to a size under ``small_face_side`` pixels (``None``:
            ``classifier`` classifies every size).

    Returns:
        ``classification_report`` keys for the FER2013 labels, plus ``sizes`` (``{"48": {"accuracy", "macro_f1",
        "recall": {label: float}}, ...}``) and ``calibration`` when asked, plus ``ferplus`` with ``votes``: ``n``
        (faces kept), ``dropped``, ``ties``, ``accuracy`` (vs the majority), ``macro_f1``, ``per_class``,
        ``confusion``, ``cross_entropy`` (nats, vs the vote distribution), ``clear_majority`` (``n``,
        ``accuracy``), ``agreement`` (``label_agreement``) and, when asked, its own ``sizes`` and ``calibration``
        (where ``per_class`` also gives the ``mean_vote_share``).
    """
    probabilities = classifier.predict_proba(images)
    predicted = probabilities.argmax(axis=1)
    report = classification_report(labels, predicted)
    sized = {}
    for size in sizes:
        chosen = small_face_classifier if small_face_classifier is not None and size < small_face_side else classifier
        if size >= images.shape[1] and chosen is classifier:
            sized[int(size)] = probabilities
        else:
            sized[int(size)] = chosen.predict_proba(shrink_faces(images, int(size)))
    if sizes:
        report["sizes"] = {str(s): _size_entry(labels, p.argmax(axis=1)) for s, p in sized.items()}
    if calibration:
        share = np.bincount(labels, minlength=NUM_CLASSES) / max(len(labels), 1)
        report["calibration"] = calibration_report(probabilities, predicted == labels, share)
    if votes is not None:
        report["ferplus"] = _ferplus_report(probabilities, labels, votes, sized, calibration)
    return report


def _size_entry(labels: np.ndarray, predicted: np.ndarray) -> dict:
    r = classification_report(labels, predicted)
    return {
        "accuracy": r["accuracy"],
        "macro_f1": r["macro_f1"],
        "recall": {k: v["recall"] for k, v in r["per_class"].items()},
    }


def label_agreement(predicted: np.ndarray, labels: np.ndarray, top: np.ndarray, keep: np.ndarray) -> dict:
    """How the FER2013 labels and the FER+ majority split the faces, and how a model fares on each part.

    A kept face is *agreed* when its FER2013 label is one of its FER+ majority labels, else *disputed*. With ``a``
    the agreed share, ``p1``/``p2`` the accuracies on agreed faces against the FER2013 label and the FER+ majority
    (they differ only where FER+ votes tie) and ``q1``/``q2`` the same on disputed faces, the two accuracies are
    ``a*p1 + (1-a)*q1`` and ``a*p2 + (1-a)*q2``, and ``q1 + q2 <= 1`` (one answer cannot match two different
    labels). Both reach targets ``t1``, ``t2`` only if ``(p1 + p2) / 2 >= (t1 + t2 - 1 + a) / (2a)``: the label
    noise bounds what any single model can score on both label sets together.

    Args:
        predicted: ``int (N,)`` predicted labels (``LABELS`` order).
        labels: ``int (N,)`` FER2013 labels.
        top: ``bool (N, 7)`` FER+ majority labels (``inference.data.ferplus_majority``).
        keep: ``bool (N,)`` faces with a FER+ emotion majority.

    Returns:
        ``{"share": agreed / kept, "agreed": {...}, "disputed": {...}}``, each part ``{"n", "fer2013_label",
        "ferplus_majority"}``: the shares of the part's faces answered with their FER2013 label and with one of their
        FER+ majority labels (``None`` for an empty part).
    """
    rows = np.arange(len(labels))
    agreed = keep & top[rows, labels]
    disputed = keep & ~agreed

    def share(mask: np.ndarray, hit: np.ndarray) -> float | None:
        return float(hit[mask].mean()) if mask.any() else None

    fer2013, ferplus = predicted == labels, top[rows, predicted]
    return {
        "share": float(agreed.sum() / keep.sum()) if keep.any() else None,
        **{
            name: {
                "n": int(part.sum()),
                "fer2013_label": share(part, fer2013),
                "ferplus_majority": share(part, ferplus),
            }
            for name, part in (("agreed", agreed), ("disputed", disputed))
        },
    }


def _ferplus_report(
    probabilities: np.ndarray, labels: np.ndarray, votes: np.ndarray, sized: dict, calibration: bool
) -> dict:
    top, keep = ferplus_majority(votes)
    targets, _ = ferplus_soft_targets(votes)
    predicted = probabilities.argmax(axis=1)

    def majority_labels(pred):
        correct = top[np.arange(len(pred)), pred]
        return np.where(correct, pred, top.argmax(axis=1)), correct

    truth, correct = majority_labels(predicted)
    r = classification_report(truth[keep], predicted[keep])
    clear_labels, clear = ferplus_clear_majority(votes)
    out = {
        "n": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "ties": int((top.sum(axis=1) > 1)[keep].sum()),
        "accuracy": r["accuracy"],
        "macro_f1": r["macro_f1"],
        "per_class": r["per_class"],
        "confusion": r["confusion"],
        "cross_entropy": soft_cross_entropy(targets[keep], probabilities[keep]) if keep.any() else None,
        "clear_majority": {
            "n": int(clear.sum()),
            "accuracy": float((predicted[clear] == clear_labels[clear]).mean()) if clear.any() else None,
        },
        "agreement": label_agreement(predicted, labels, top, keep),
    }
    if sized:
        out["sizes"] = {}
        for s, p in sized.items():
            t, _ = majority_labels(p.argmax(axis=1))
            out["sizes"][str(s)] = _size_entry(t[keep], p.argmax(axis=1)[keep])
    if calibration and keep.any():
        share = np.bincount(truth[keep], minlength=NUM_CLASSES) / keep.sum()
        cal = calibration_report(probabilities[keep], correct[keep], share)
        vote_share = targets[keep].mean(axis=0)
        for k, label in enumerate(LABELS):
            cal["per_class"][label]["mean_vote_share"] = float(vote_share[k])
        out["calibration"] = cal
    return out


def evaluate(
    data: str,
    usage: str | None = None,
    model_path: str | None = None,
    flip_tta: bool | None = None,
    ferplus: str | None = None,
    sizes=(),
    calibration: bool = False,
    small_face_model: str | Literal[False] | None = None,
) -> dict:
    """Metrics of the model on the rows of ``data`` (optionally only one ``Usage`` split).

    Args:
        data: FER2013 CSV (``.csv``/``.csv.gz``) or image-folder root.
        usage: ``Training``, ``PublicTest``, ``PrivateTest`` or ``None`` (all rows).
        model_path: ONNX model; ``None`` = the shipped default.
        flip_tta: also average with the mirrored face (test-time augmentation); ``None`` = as served
            (``inference.classifier.DEFAULT_FLIP_TTA``).
        ferplus: FER+ ``fer2013new.csv`` aligned by row with ``data`` (adds the ``ferplus`` key).
        sizes: face sides in pixels (adds ``sizes``), e.g. ``(48, 32, 24, 16)``.
        calibration: add ``calibration``.
        small_face_model: ONNX model for the ``sizes`` under ``SMALL_FACE_SIDE`` px; ``None`` = as served: the
            shipped small-face model when ``model_path`` is ``None`` too, else none; ``False``: none.

    Returns:
        ``evaluate_faces`` keys plus ``source``, ``usage``, ``model``, ``small_face_model`` (its path or ``None``)
        and ``small_face_side``, ``flip_tta`` and ``skipped_rows`` (messages
        of malformed rows, which are left out of the metrics); with ``ferplus`` also ``ferplus["source"]``,
        ``ferplus["skipped_rows"]`` and ``ferplus["unmatched_rows"]`` (FER2013 rows without a usable vote row).

    Raises:
        inference.data.DatasetError: unreadable data or FER+ file, or no rows for ``usage``.
        inference.classifier.ModelLoadError: missing or unusable model.
    """
    from inference.data import DatasetError

    threads = os.cpu_count() or 1
    classifier = EmotionClassifier(model_path, threads=threads, flip_tta=flip_tta)
    if small_face_model is None and model_path is None:
        small_face_model = str(default_small_face_model_path())
    small = EmotionClassifier(small_face_model, threads=threads, flip_tta=flip_tta) if small_face_model else None
    dataset = load_fer2013(data, usage=usage)
    if len(dataset) == 0:
        raise DatasetError(f"{data}: no rows with Usage {usage}")
    votes: np.ndarray | None = None
    ferplus_info: dict | None = None
    if ferplus:
        vote_file = load_ferplus(ferplus)
        votes, found = align_ferplus(dataset, vote_file)
        ferplus_info = {
            "source": str(ferplus),
            "skipped_rows": [str(e) for e in vote_file.errors],
            "unmatched_rows": int((~found).sum()),
        }
    report = evaluate_faces(classifier, dataset.images, dataset.labels, votes, sizes, calibration, small)
    if ferplus_info is not None:
        report["ferplus"].update(ferplus_info)
    report.update(
        source=str(data),
        usage=usage,
        model=str(model_path or default_model_path()),
        small_face_model=str(small.model_path) if small else None,
        small_face_side=SMALL_FACE_SIDE,
        flip_tta=classifier.flip_tta,
        skipped_rows=[str(e) for e in dataset.errors],
    )
    return report
