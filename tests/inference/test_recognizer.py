"""``EmotionRecognizer``'s choice of classifier by face size (the shipped ensemble, and the small-face model)."""

import cv2
import numpy as np
import pytest

from inference import EmotionClassifier, EmotionRecognizer
from inference.classifier import default_small_face_model_path
from inference.data import load_fer2013
from inference.imageio import read_image
from inference.recognizer import SMALL_FACE_SIDE

from .conftest import jittered_labels


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


def _label_switches(recognizer, photo, boxes, seed):
    raw, smooth, noisy, _ = jittered_labels(recognizer, photo, boxes, np.random.default_rng(seed))
    small = np.maximum(noisy[..., 2], noisy[..., 3]) < SMALL_FACE_SIDE
    switches = (raw[1:] != raw[:-1]).sum(), (smooth[1:] != smooth[:-1]).sum(), (small[1:] != small[:-1]).sum()
    return tuple(int(n) for n in switches)


def test_faces_hovering_at_the_small_face_side_do_not_flicker_more_than_with_one_model(shipped, faces_dir):
    ensemble_only = EmotionRecognizer(shipped.classifier, shipped.detector, small_face_side=0)
    routed_raw = routed_smooth = single_raw = single_smooth = crossings = 0
    for name in ("dlib_2008_002506.jpg", "dlib_2008_007676.jpg", "ultralight_imgs_9.jpg"):
        photo = read_image(faces_dir / "group_photos" / name)
        sides = np.array([f.box[2] for f in shipped.analyze(photo)], np.float64)
        photo = cv2.resize(
            photo, None, fx=40 / np.median(sides), fy=40 / np.median(sides), interpolation=cv2.INTER_AREA
        )
        boxes = np.array([f.box for f in shipped.analyze(photo)])
        for seed in range(2):
            raw, smooth, crossed = _label_switches(shipped, photo, boxes, seed)
            routed_raw, routed_smooth, crossings = routed_raw + raw, routed_smooth + smooth, crossings + crossed
            raw, smooth, _ = _label_switches(ensemble_only, photo, boxes, seed)
            single_raw, single_smooth = single_raw + raw, single_smooth + smooth
    assert crossings >= 50  # faces did switch between the two models, often
    assert routed_raw <= single_raw and routed_smooth <= single_smooth + 2


def test_a_smallest_face_reaches_the_detector_and_boxes_of_other_detectors_are_cut_at_its_band(shipped, faces_dir):
    """``analyze(image, min_face_px)``: a keypoint detector searches from that size (no small crowd faces, every
    face read with a head pose); a detector without a search band of its own (Haar) has its smaller boxes left out."""
    from inference.detector import HaarFaceDetector
    from inference.imageio import letterbox
    from inference.recognizer import MIN_FACE_BAND

    crowd = letterbox(read_image(faces_dir / "crowds/ultralight_imgs_26.jpg"), (1280, 720))
    every = shipped.analyze(crowd)  # 77 faces of 23-45 px
    large = shipped.analyze(crowd, 32)
    assert len(every) >= 60 and 0 < len(large) < len(every) / 2
    assert min(max(f.box[2], f.box[3]) for f in large) >= MIN_FACE_BAND * 32
    assert all(f.head_pose is not None for f in large)
    haar = EmotionRecognizer(shipped.classifier, HaarFaceDetector())
    all_haar = haar.analyze(crowd)
    cut = haar.analyze(crowd, 48)
    kept = [f.box for f in all_haar if max(f.box[2], f.box[3]) >= MIN_FACE_BAND * 48]
    assert len(cut) < len(all_haar) and [f.box for f in cut] == kept
