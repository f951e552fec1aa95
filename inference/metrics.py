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
