"""The shipped default model: its model card, and its accuracy measured again on the real FER2013 PublicTest rows."""

import json
from pathlib import Path

import pytest

from inference.classifier import MODELS_DIR
from inference.labels import LABELS

from .conftest import REPO

FER2013 = REPO.parent / "shared/data/fer2013/fer2013_train_val.csv.gz"
CARD = MODELS_DIR / "model_card.json"
SMALL_CARD = MODELS_DIR / "fer_cnn_small.model_card.json"
TARGET_ACCURACY = 0.68  # issue #2: the shipped model reaches >= 68 % on PublicTest (flip TTA allowed, and served)


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


def test_model_card_describes_the_shipped_model(card):
    assert card["output"]["labels"] == list(LABELS)
    assert card["data"]["validation_split"] == "PublicTest" and len(card["data"]["sha256"]) == 64
    assert card["parameters"] > 0 and card["flops_per_face"] > 0 and card["epochs_run"] >= 1
    assert card["training_wall_time_s"] > 0 and card["hardware"]["cpu_count"] >= 1
    assert card["onnx_max_abs_diff_vs_keras"] <= 1e-4
    public, served = card["public_test"], card["public_test_flip_tta"]
    assert public["n"] == served["n"] == 3589 and served["accuracy"] >= TARGET_ACCURACY
    assert sum(map(sum, public["confusion"])) == public["n"]
    for name in ("training_curves.png", "confusion_matrix.png"):
        assert (MODELS_DIR / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_shipped_model_as_served_reaches_the_target_on_real_public_test(card, monkeypatch):
    if not Path(FER2013).is_file():
        pytest.skip(f"FER2013 not found at {FER2013}")
    from inference.evaluate import evaluate

    served = evaluate(str(FER2013), usage="PublicTest")  # as served: flip TTA, int8 copy when there is one
    assert served["model"] == str(MODELS_DIR / "fer_cnn.onnx") and served["flip_tta"] is True
    assert served["n"] == 3589 and served["accuracy"] >= TARGET_ACCURACY
    # scripts/quantize_classifier.py writes an int8 copy only within 0.3 points of the float model
    assert served["accuracy"] >= card["public_test_flip_tta"]["accuracy"] - 0.003

    monkeypatch.setattr("inference.classifier.DEFAULT_QUANTIZED", False)  # the float model the card describes
    monkeypatch.setattr("inference.classifier.DEFAULT_TTA_MARGIN", 0.4)  # adaptive TTA, mirroring about a third
    adaptive_float = evaluate(str(FER2013), usage="PublicTest")
    assert adaptive_float["accuracy"] >= card["public_test_flip_tta"]["accuracy"] - 0.003
    monkeypatch.setattr("inference.classifier.DEFAULT_TTA_MARGIN", 1.0)  # every face mirrored, as in the card
    served_float = evaluate(str(FER2013), usage="PublicTest")
    assert served_float["accuracy"] == pytest.approx(card["public_test_flip_tta"]["accuracy"], abs=1e-3)
    single = evaluate(str(FER2013), usage="PublicTest", flip_tta=False)
    assert single["accuracy"] == pytest.approx(card["public_test"]["accuracy"], abs=1e-3)
    assert single["confusion"] == card["public_test"]["confusion"]


def test_flip_tta_is_on_by_default_and_ignores_the_environment(monkeypatch):
    from inference.classifier import EmotionClassifier

    monkeypatch.setenv("FER_FLIP_TTA", "0")  # settings, not inference/, read the environment
    assert EmotionClassifier().flip_tta is True
    assert EmotionClassifier(flip_tta=False).flip_tta is False


def test_small_face_model_card_gives_each_members_recipe_and_adds_up_the_training_they_started_from():
    from inference.recognizer import SMALL_FACE_SIDE

    card = json.loads(SMALL_CARD.read_text())
    assert card["output"]["labels"] == list(LABELS) and card["labels"]["training"] == "ensemble"
    assert card["onnx_max_abs_diff_vs_keras"] <= 1e-4 and card["public_test"]["n"] == 3589
    members = card["members"]
    assert len(members) == 2 and card["labels"]["members"] == ["mixed", "mixed"]
    for member in members:
        assert member["recipe"]["lowres_share"] == 0.6
        assert max(member["recipe"]["lowres_sizes"]) == SMALL_FACE_SIDE  # the serving threshold comes from the recipe
        init = member["init"]
        assert member["epochs_run_including_init"] == member["epochs_run"] + init["epochs_run"]
        assert member["training_wall_time_including_init_s"] == pytest.approx(
            member["training_wall_time_s"] + init["training_wall_time_s"], abs=0.1
        )
        assert (MODELS_DIR / member["training_curves"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (MODELS_DIR / member["history"]).read_text().startswith("epoch")
    # member 0 started from the first ensemble's fine-tune of member 0, member 1 from the shipped member 1
    assert members[0]["init"]["epochs_run"] == sum(step["epochs_run"] for step in members[0]["init"]["chain"]) == 94
    assert members[1]["init"]["epochs_run"] == 60
    assert card["epochs_run"] == sum(m["epochs_run_including_init"] for m in members)
    assert card["training_wall_time_s"] == pytest.approx(
        sum(m["training_wall_time_including_init_s"] for m in members), abs=0.2
    )


@pytest.mark.slow
def test_small_faces_are_read_better_with_the_small_face_model_as_served():
    """Faces under 40 px go to the small-face model: better than the ensemble at 24 and 16 px on both label sets
    (measured as served: 64.9 vs 63.6 % and 58.4 vs 55.4 % on the FER2013 labels), and meets issue 10's 16-px 55 %."""
    if not Path(FER2013).is_file():
        pytest.skip(f"FER2013 not found at {FER2013}")
    from inference.evaluate import evaluate

    ferplus = str(FER2013.parent / "fer2013new.csv")
    served = evaluate(str(FER2013), usage="PublicTest", sizes=(24, 16), ferplus=ferplus)
    ensemble_only = evaluate(str(FER2013), usage="PublicTest", sizes=(24, 16), ferplus=ferplus, small_face_model=False)
    assert served["small_face_model"] == str(MODELS_DIR / "fer_cnn_small.onnx")
    assert served["accuracy"] == ensemble_only["accuracy"]  # 48-px faces: the ensemble either way
    assert served["sizes"]["24"]["accuracy"] > ensemble_only["sizes"]["24"]["accuracy"] + 0.003
    for size in ("24", "16"):
        assert served["ferplus"]["sizes"][size]["accuracy"] > ensemble_only["ferplus"]["sizes"][size]["accuracy"] + 0.01
    assert served["sizes"]["16"]["accuracy"] > ensemble_only["sizes"]["16"]["accuracy"] + 0.01
    assert served["sizes"]["16"]["accuracy"] >= 0.55  # issue 10's 16-px target
