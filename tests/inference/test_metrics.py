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


def test_expected_calibration_error_matches_hand_computation_over_fifteen_bins():
    from inference.metrics import expected_calibration_error

    # Bins of width 1/15: 0.95 and 0.99 -> bin 15 (both right), 0.5 -> bin 8 (wrong), 0.1 -> bin 2 (right),
    # 0.0 -> bin 1 (wrong).
    confidence = np.array([0.95, 0.99, 0.5, 0.1, 0.0])
    correct = np.array([True, True, False, True, False])
    r = expected_calibration_error(confidence, correct, bins=15)
    expected = (2 * abs(1 - 0.97) + abs(0 - 0.5) + abs(1 - 0.1) + abs(0 - 0.0)) / 5
    assert r["ece"] == pytest.approx(expected)
    counts = [b["count"] for b in r["bins"]]
    assert len(counts) == 15 and counts[14] == 2 and counts[7] == 1 and counts[1] == 1 and counts[0] == 1
    assert r["bins"][14]["confidence"] == pytest.approx(0.97) and r["bins"][3]["accuracy"] is None
    assert expected_calibration_error(np.array([0.7, 0.7]), np.array([True, False]))["ece"] == pytest.approx(0.2)


def test_soft_cross_entropy_against_vote_distributions():
    from inference.metrics import soft_cross_entropy

    targets = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    probs = np.array([[0.5, 0.25, 0.25], [0.8, 0.1, 0.1]])
    expected = (-(0.5 * np.log(0.5) + 0.5 * np.log(0.25)) - np.log(0.8)) / 2
    assert soft_cross_entropy(targets, probs) == pytest.approx(expected)
    with pytest.raises(ValueError, match="shape"):
        soft_cross_entropy(targets, probs[:1])
