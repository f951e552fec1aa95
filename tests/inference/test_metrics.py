import numpy as np
import pytest

from inference.metrics import classification_report, confusion_matrix, format_report


def test_report_matches_hand_computation():
    y_true = np.array([0, 0, 0, 3, 3, 6, 6, 6])
    y_pred = np.array([0, 0, 3, 3, 6, 6, 6, 0])
    r = classification_report(y_true, y_pred)
    assert r["n"] == 8 and r["accuracy"] == pytest.approx(5 / 8)
    # angry: TP 2, FP 1 (a neutral), FN 1 -> P = R = 2/3
    assert r["per_class"]["angry"]["precision"] == pytest.approx(2 / 3)
    assert r["per_class"]["angry"]["recall"] == pytest.approx(2 / 3)
    # happy: TP 1, FP 1, FN 1 -> F1 0.5; neutral: TP 2, FP 1, FN 1 -> F1 2/3; classes without rows -> 0
    assert r["per_class"]["happy"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["disgust"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 7)
    assert r["confusion"][0] == [2, 0, 0, 1, 0, 0, 0] and sum(map(sum, r["confusion"])) == 8
    assert "accuracy = 0.6250" in format_report(r)


def test_confusion_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.array([0, 1]), np.array([0]))
