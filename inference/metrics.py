"""Classification metrics in plain NumPy: accuracy, confusion matrix, per-class precision/recall/F1, macro-F1.

Definitions follow scikit-learn's ``classification_report`` (precision = TP / (TP + FP), recall = TP / (TP + FN),
F1 = 2PR / (P + R), 0 where undefined; macro-F1 = unweighted mean of per-class F1).
"""

from __future__ import annotations

import numpy as np

from inference.labels import LABELS, NUM_CLASSES


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``int64 (C, C)`` counts; row = true label, column = predicted label.

    Raises:
        ValueError: the arrays differ in length or hold labels outside ``0..C-1``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Metrics of predicted vs true labels.

    Args:
        y_true, y_pred: ``int (N,)`` label indices in ``LABELS`` order.

    Returns:
        ``{"n": int, "accuracy": float, "macro_f1": float, "per_class": {label: {"precision", "recall", "f1",
        "support"}}, "confusion": list[list[int]] (7x7, rows = true), "labels": list[str]}``.
    """
    cm = confusion_matrix(y_true, y_pred)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(LABELS)
        },
        "confusion": cm.tolist(),
        "labels": list(LABELS),
    }


def format_report(report: dict) -> str:
    """Human-readable text table of a ``classification_report`` result."""
    lines = [
        f"n = {report['n']}   accuracy = {report['accuracy']:.4f}   macro-F1 = {report['macro_f1']:.4f}",
        "",
        f"{'label':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for label, m in report["per_class"].items():
        lines.append(f"{label:<10}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>10d}")
    lines += [
        "",
        "confusion (rows = true, columns = predicted):",
        " " * 10 + "".join(f"{lab[:7]:>8}" for lab in LABELS),
    ]
    for label, row in zip(LABELS, report["confusion"]):
        lines.append(f"{label:<10}" + "".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error of top-label confidences (Guo et al. 2017, "On Calibration of Modern Neural
    Networks", arXiv:1706.04599, eq. 3; 15 equal-width bins as in that paper).

    Bin ``b`` holds the confidences in ``((b - 1) / bins, b / bins]`` (a confidence of 0 goes to the first bin).
    ``ECE = sum_b n_b / N * |accuracy_b - mean confidence_b|``.

    Args:
        confidence: ``float (N,)`` probability of the predicted label, 0..1.
        correct: ``bool (N,)`` whether the predicted label is right.
        bins: number of bins.

    Returns:
        ``{"ece": float (0..1), "bins": [{"lower", "upper", "count", "confidence", "accuracy"}, ...]}`` (empty bins
        listed with count 0 and ``None`` means).

    Raises:
        ValueError: the arrays differ in length.
    """
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence {confidence.shape} and correct {correct.shape} differ in shape")
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    n = confidence.size
    ece = 0.0
    table = []
    for b in range(bins):
        in_bin = index == b
        count = int(in_bin.sum())
        conf: float | None = None
        acc: float | None = None
        if count:
            conf = float(confidence[in_bin].mean())
            acc = float(correct[in_bin].mean())
            ece += count / n * abs(acc - conf)
        table.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "bins": table}


def soft_cross_entropy(targets: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    """Mean cross-entropy ``-sum_k q_k log p_k`` in nats of predicted ``probabilities`` against target
    distributions ``targets`` (both ``float (N, C)``, rows summing to 1); ``p`` is clipped to ``eps`` first.

    Raises:
        ValueError: shapes differ or ``N`` is 0.
    """
    q = np.asarray(targets, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1.0)
    if q.shape != p.shape or q.shape[0] == 0:
        raise ValueError(f"targets {q.shape} and probabilities {p.shape} must have one equal, non-empty shape")
    return float(-(q * np.log(p)).sum(axis=1).mean())
