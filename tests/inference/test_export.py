import numpy as np
import pytest

from inference.classifier import MODELS_DIR, EmotionClassifier
from inference.data import load_fer2013


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def test_shipped_onnx_model_agrees_with_shipped_keras_model(keras, fixture_csv):
    faces = load_fer2013(fixture_csv).images
    keras_model = keras.models.load_model(MODELS_DIR / "fer_cnn.keras", compile=False)
    expected = keras_model.predict(faces[..., None].astype(np.float32), verbose=0)
    got = EmotionClassifier(MODELS_DIR / "fer_cnn.onnx", flip_tta=False, quantized=False).predict_proba(faces)
    assert np.abs(got - expected).max() <= 1e-4


def test_export_of_a_fresh_model_is_checked(keras, tmp_path, fixture_csv):
    from inference.export import export_onnx
    from inference.model import build_model, count_flops

    model = build_model(stages=((8, 1), (16, 1)), dense_units=16)
    # Conv 1->8 at 48x48 and 8->16 at 24x24 (3x3), dense 16->16 and 16->7, two FLOPs per multiply-add.
    assert count_flops(model) == 2 * (48 * 48 * 9 * 8 + 24 * 24 * 9 * 8 * 16 + 16 * 16 + 16 * 7)
    faces = load_fer2013(fixture_csv).images[:32]
    diff = export_onnx(model, tmp_path / "m.onnx", check_images=faces)
    assert diff <= 1e-4
    expected = model.predict(faces[..., None].astype(np.float32), verbose=0)
    assert np.abs(EmotionClassifier(tmp_path / "m.onnx", flip_tta=False).predict_proba(faces) - expected).max() <= 1e-4
