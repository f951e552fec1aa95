"""``EmotionRecognizer``'s choice of classifier by face size (the shipped ensemble, and the small-face model)."""

import cv2
import numpy as np
import pytest

from inference import EmotionClassifier, EmotionRecognizer
from inference.classifier import default_small_face_model_path
from inference.data import load_fer2013
from inference.imageio import read_image
from inference.recognizer import SMALL_FACE_SIDE


@pytest.fixture(scope="module")
def shipped() -> EmotionRecognizer:
    return EmotionRecognizer.default()


def test_the_default_recogniser_serves_the_shipped_small_face_model_under_the_small_face_side(shipped):
    assert shipped.small_face_classifier is not None and shipped.small_face_side == SMALL_FACE_SIDE == 40
    assert shipped.small_face_classifier.model_path == default_small_face_model_path()
    assert shipped.small_face_classifier.model_path != shipped.classifier.model_path
    assert EmotionRecognizer.from_path(shipped.classifier.model_path).small_face_classifier is None


def test_each_face_is_classified_by_the_model_for_its_size_in_the_order_given(shipped, fixture_csv):
    crops = load_fer2013(fixture_csv, use_cache=False).images[:6]
    sides = np.array([39, 40, 12, 100, 24, 48])  # longer side of each box: 39 is small, 40 is not
    boxes = np.stack([np.zeros(6, int), np.zeros(6, int), sides, sides // 2], axis=1)
    small = sides < 40
    got = shipped.predict_proba(crops, boxes)
    np.testing.assert_allclose(got[small], shipped.small_face_classifier.predict_proba(crops[small]), atol=1e-6)
    np.testing.assert_allclose(got[~small], shipped.classifier.predict_proba(crops[~small]), atol=1e-6)
    # The two models do disagree on these faces, so the routing is visible in the answers.
    assert (
        np.abs(shipped.small_face_classifier.predict_proba(crops) - shipped.classifier.predict_proba(crops)).max()
        > 0.05
    )
    assert shipped.predict_proba(crops[:0], boxes[:0]).shape == (0, 7)
    only_small = shipped.predict_proba(crops[small], boxes[small])
    np.testing.assert_allclose(only_small, got[small], atol=1e-6)


def test_small_face_side_zero_sends_every_face_to_the_main_model(shipped, fixture_csv):
    crops = load_fer2013(fixture_csv, use_cache=False).images[:4]
    boxes = np.array([[0, 0, 20, 20]] * 4)
    off = EmotionRecognizer(
        shipped.classifier, shipped.detector, small_face_classifier=shipped.small_face_classifier, small_face_side=0
    )
    np.testing.assert_allclose(off.predict_proba(crops, boxes), shipped.classifier.predict_proba(crops), atol=1e-6)


def test_a_real_photo_small_faces_get_the_small_face_models_probabilities(shipped, photos):
    path = next(p for p in photos if "group" in str(p.parent))
    image = read_image(path)
    boxes = shipped.detector.detect(image)
    assert len(boxes) > 0
    scale = 30.0 / float(np.max(boxes[:, 2:]))  # shrink the photo until every face is under 40 px
    small_image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces = shipped.analyze(small_image)
    assert faces and all(max(f.box[2], f.box[3]) < 40 for f in faces)
    alone = EmotionRecognizer(EmotionClassifier(default_small_face_model_path()), shipped.detector, small_face_side=0)
    for got, want in zip(faces, alone.analyze(small_image), strict=True):
        assert got.box == want.box
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)
