"""``inference.evaluate.label_agreement``: the split of faces by FER2013 / FER+ label agreement."""

import numpy as np
import pytest

from inference.data import ferplus_majority
from inference.evaluate import label_agreement


def test_label_agreement_splits_kept_faces_and_leaves_an_empty_part_as_none():
    # FER+ columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    votes = np.array(
        [
            [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],  # happy, FER2013 happy: agreed
            [6, 0, 0, 4, 0, 0, 0, 0, 0, 0],  # neutral, FER2013 sad: disputed
            [0, 0, 0, 0, 0, 0, 0, 0, 10, 0],  # unknown: not kept
        ]
    )
    top, keep = ferplus_majority(votes)
    labels = np.array([3, 4, 0])
    report = label_agreement(np.array([3, 6, 0]), labels, top, keep)
    assert report == {
        "share": 0.5,
        "agreed": {"n": 1, "fer2013_label": 1.0, "ferplus_majority": 1.0},
        "disputed": {"n": 1, "fer2013_label": 0.0, "ferplus_majority": 1.0},
    }
    only_agreed = label_agreement(np.array([3]), labels[:1], top[:1], keep[:1])
    assert only_agreed["disputed"] == {"n": 0, "fer2013_label": None, "ferplus_majority": None}
    assert label_agreement(np.array([0]), labels[2:], top[2:], keep[2:])["share"] is None


def test_both_accuracies_follow_from_the_agreement_split_and_obey_the_joint_bound():
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 6, size=(2000, 10))
    votes[:, 7:] = 0
    top, keep = ferplus_majority(votes)
    labels = rng.integers(0, 7, size=2000)
    labels[:1200] = top[:1200].argmax(axis=1)  # most FER2013 labels agree with FER+, as in the real data
    predicted = np.where(rng.random(2000) < 0.7, labels, rng.integers(0, 7, size=2000))
    r = label_agreement(predicted, labels, top, keep)
    a, p1, p2 = r["share"], r["agreed"]["fer2013_label"], r["agreed"]["ferplus_majority"]
    fer2013 = (predicted == labels)[keep].mean()
    ferplus = top[np.arange(2000), predicted][keep].mean()
    assert fer2013 == pytest.approx(a * p1 + (1 - a) * r["disputed"]["fer2013_label"])
    assert ferplus == pytest.approx(a * p2 + (1 - a) * r["disputed"]["ferplus_majority"])
    assert p2 > p1  # a tied FER+ vote accepts a second answer on some agreed faces
    # One answer cannot match two different labels: the two accuracies together are bounded by a, p1 and p2.
    assert fer2013 + ferplus <= a * (p1 + p2) + (1 - a) + 1e-12
