import numpy as np
import pytest

from inference import LABELS, EmotionClassifier
from inference.classifier import ModelLoadError, crop_face, default_model_path, to_grey
from inference.data import load_fer2013


@pytest.fixture(scope="module")
def classifier():
    return EmotionClassifier()


def test_default_model_is_shipped_and_loads_without_arguments(classifier):
    assert default_model_path().is_file()
    assert classifier.model_path == default_model_path()


def test_probabilities_shape_dtype_and_rows_sum_to_one(classifier, fixture_csv):
    faces = load_fer2013(fixture_csv, usage="PublicTest").images
    probs = classifier.predict_proba(faces)
    assert probs.shape == (len(faces), len(LABELS)) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()
    assert classifier.predict_proba(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


def test_a_large_input_is_classified_in_chunks_with_the_same_answers(fixture_csv, monkeypatch):
    faces = load_fer2013(fixture_csv, usage="PublicTest").images[:40]
    for kwargs in ({"tta_margin": 1.0}, {"tta_margin": 0.4}, {"flip_tta": False}):
        clf = EmotionClassifier(**kwargs)
        whole = clf.predict_proba(faces)
        calls = []
        run = clf._session.run
        monkeypatch.setattr(
            clf._session,
            "run",
            lambda out, feed, calls=calls, run=run: calls.append(len(next(iter(feed.values())))) or run(out, feed),
        )
        monkeypatch.setattr(EmotionClassifier, "MAX_BATCH", 16)
        chunked = clf.predict_proba(faces)
        monkeypatch.undo()
        np.testing.assert_allclose(chunked, whole, atol=1e-6)
        assert max(calls) <= 32  # 16 faces a call, 32 with their mirror images


def test_full_flip_tta_gives_mirror_invariant_predictions(fixture_csv):
    tta = EmotionClassifier(flip_tta=True, tta_margin=1.0)
    faces = load_fer2013(fixture_csv, usage="PublicTest").images[:16]
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    assert np.allclose(tta.predict_proba(faces), tta.predict_proba(mirrored), atol=1e-6)
    plain = EmotionClassifier(flip_tta=False)
    expected = (plain.predict_proba(faces) + plain.predict_proba(mirrored)) / 2
    assert np.allclose(tta.predict_proba(faces), expected, atol=1e-6)


def test_adaptive_flip_tta_mirrors_only_faces_whose_top_two_margin_is_small(fixture_csv):
    faces = load_fer2013(fixture_csv, usage="PublicTest").images[:64]
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    plain = EmotionClassifier(flip_tta=False)
    one, flipped = plain.predict_proba(faces), plain.predict_proba(mirrored)
    top2 = np.sort(one, axis=1)[:, -2:]
    uncertain = top2[:, 1] - top2[:, 0] < 0.4
    assert 0 < uncertain.sum() < len(faces)  # the sample has both kinds
    expected = np.where(uncertain[:, None], (one + flipped) / 2, one)
    adaptive = EmotionClassifier(tta_margin=0.4)
    assert adaptive.flip_tta and adaptive.tta_margin == 0.4
    assert EmotionClassifier().tta_margin is None  # the default mirrors every face
    assert np.allclose(adaptive.predict_proba(faces), expected, atol=1e-6)
    assert np.allclose(adaptive.predict_proba(faces).sum(axis=1), 1.0, atol=1e-5)
    # the same labels as full TTA on nearly every face (measured 99.8 % on FER2013; here a small sample)
    full = EmotionClassifier(tta_margin=1.0).predict_proba(faces)
    assert (adaptive.predict_proba(faces).argmax(1) == full.argmax(1)).mean() >= 0.95


def test_bad_inputs_and_bad_model_files(classifier, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        classifier.predict_proba(np.zeros((2, 48, 48), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 48, 48\)"):
        classifier.predict_proba(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(ModelLoadError, match="not found"):
        EmotionClassifier(tmp_path / "missing.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="broken.onnx"):
        EmotionClassifier(broken)


def test_crop_face_squares_and_pads_at_borders():
    grey = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80).astype(np.uint8)
    assert crop_face(grey, (10, 10, 20, 40)).shape == (48, 48)
    corner = crop_face(np.full((50, 50), 7, np.uint8), (-10, -10, 30, 30))
    assert corner.shape == (48, 48) and (corner == 7).all()
    assert to_grey(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4)
    with pytest.raises(ValueError):
        to_grey(np.zeros((4, 4, 2), np.uint8))


def test_int8_copy_is_served_only_while_it_matches_the_float_model(tmp_path, fixture_csv):
    import shutil

    from inference.classifier import quantized_path

    shipped = default_model_path()
    assert quantized_path(shipped).is_file()
    assert EmotionClassifier().served_path == quantized_path(shipped)
    assert EmotionClassifier(quantized=False).served_path == shipped

    model = tmp_path / "model.onnx"
    shutil.copy(shipped, model)
    shutil.copy(quantized_path(shipped), quantized_path(model))
    assert EmotionClassifier(model).quantized is True
    shutil.copy(quantized_path(shipped), model)  # the float model was replaced: the int8 copy is stale
    stale = EmotionClassifier(model)
    assert stale.quantized is False and stale.served_path == model
    with pytest.raises(ModelLoadError, match="no int8 copy made from"):
        EmotionClassifier(model, quantized=True)

    faces = load_fer2013(fixture_csv, usage="PublicTest").images
    agree = EmotionClassifier(quantized=True).predict_proba(faces).argmax(1)
    agree = agree == EmotionClassifier(quantized=False).predict_proba(faces).argmax(1)
    assert agree.mean() >= 0.9


def test_networks_sharing_the_process_arena_answer_as_with_arenas_of_their_own(fixture_csv):
    """Every network of a process allocates from one shared arena (``shared_cpu_arena``); runs of other networks
    of other sizes in between (the detector's, on a small and a large frame) must not change a classifier's
    answers, compared with a session that has an arena of its own."""
    import onnxruntime as ort

    from inference import BlazeFaceDetector
    from inference.classifier import onnx_session, shared_cpu_arena

    assert shared_cpu_arena()  # this ONNX Runtime supports it: the shared arena is really in use
    faces = load_fer2013(fixture_csv, usage="PublicTest").images[:24][..., None].astype(np.float32)
    path = EmotionClassifier(quantized=False).served_path
    shared = onnx_session(path)
    own_options = ort.SessionOptions()
    own_options.intra_op_num_threads = 1
    own = ort.InferenceSession(str(path), sess_options=own_options, providers=["CPUExecutionProvider"])
    name = own.get_inputs()[0].name
    expected = own.run(None, {name: faces})[0]
    detector = BlazeFaceDetector()
    rng = np.random.default_rng(0)
    for size in ((480, 640), (1080, 1920), (240, 320)):
        detector.detect(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        np.testing.assert_allclose(shared.run(None, {name: faces})[0], expected, atol=1e-6)
        np.testing.assert_allclose(shared.run(None, {name: faces[:3]})[0], expected[:3], atol=1e-6)
