import json

import numpy as np
import pytest

from inference.ensemble import EnsembleError, build_ensemble, training_wall_time

TINY = {"stages": ((8, 1), (16, 1)), "dense_units": 16}


def _tiny_model(seed: int):
    import keras

    from inference.model import build_model

    keras.utils.set_random_seed(seed)
    return build_model(**TINY)


def test_ensemble_output_is_the_mean_of_its_members_probabilities():
    a, b = _tiny_model(1), _tiny_model(2)
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 1)).astype(np.float32)
    expected = (a.predict(faces, verbose=0) + b.predict(faces, verbose=0)) / 2
    combined = build_ensemble([a, b])
    got = combined.predict(faces, verbose=0)
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a.predict(faces, verbose=0), b.predict(faces, verbose=0), atol=1e-3)  # members differ


def test_ensemble_needs_two_members_of_the_same_shape():
    import keras

    with pytest.raises(EnsembleError, match="at least two"):
        build_ensemble([_tiny_model(1)])
    other = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(), keras.layers.Dense(7)])
    with pytest.raises(EnsembleError, match="shape"):
        build_ensemble([_tiny_model(1), other])


def test_training_time_counts_a_shared_warm_start_once_and_a_member_source_not_again():
    base = {"sha256": "a" * 64, "card": {"epochs_run": 86, "training_wall_time_s": 6000.0, "total_wall_time_s": 1.0}}
    init_card = {"sha256": "a" * 64, "epochs_run": 86, "training_wall_time_s": 6000.0, "total_wall_time_s": 6100.0}
    tuned = {
        "sha256": "b" * 64,
        "card": {"epochs_run": 8, "training_wall_time_s": 400.0, "total_wall_time_s": 500.0, "init": init_card},
    }
    # the fine-tune's source is the other member: its training is counted once (total: the larger of the two)
    assert training_wall_time([base, tuned]) == {
        "epochs_run": 94,
        "training_wall_time_s": 6400.0,
        "total_wall_time_s": 6500.0,
    }
    # two fine-tunes of one model that is not a member: that model's training counted once
    other = {**tuned, "sha256": "c" * 64}
    assert training_wall_time([tuned, other]) == {
        "epochs_run": 102,
        "training_wall_time_s": 6800.0,
        "total_wall_time_s": 7100.0,
    }


@pytest.mark.slow
def test_ensemble_command_exports_checks_evaluates_and_writes_the_card(fixture_csv, tmp_path):
    from inference.__main__ import main
    from inference.classifier import EmotionClassifier
    from inference.data import file_sha256
    from inference.train import train

    ferplus = str(fixture_csv.with_name("fer2013new_sample.csv"))
    small = {**TINY, "batch_size": 32, "learning_rate": 1e-2}
    first = train(str(fixture_csv), out=str(tmp_path / "a"), epochs=1, log=lambda _: None, **small)
    second = train(
        str(fixture_csv), out=str(tmp_path / "b"), epochs=1, labels="mixed", ferplus=ferplus,
        init=str(tmp_path / "a" / "model.keras"), log=lambda _: None, **small,
    )  # fmt: skip
    out = tmp_path / "ens"
    code = main(
        ["ensemble", str(tmp_path / "a/model.keras"), str(tmp_path / "b/model.keras"), "--data", str(fixture_csv),
         "--ferplus", ferplus, "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["labels"] == {"training": "ensemble", "members": ["fer2013", "mixed"]}
    assert [m["sha256"] for m in card["members"]] == [file_sha256(tmp_path / p / "model.keras") for p in "ab"]
    assert card["flops_per_face"] == first["flops_per_face"] * 2
    # b was fine-tuned from a: a's epochs are counted once
    assert card["epochs_run"] == 2
    assert card["training_wall_time_s"] == pytest.approx(
        first["training_wall_time_s"] + second["training_wall_time_s"], abs=0.2
    )
    assert card["onnx_max_abs_diff_vs_keras"] <= 1e-4
    served = card["evaluation"]["flip_tta"]
    assert card["public_test"]["n"] == 56 and set(served["sizes"]) == {"48", "32", "24", "16"}
    assert "ferplus" in served and 0 <= served["calibration"]["ece"] <= 1

    # The served ONNX graph is the mean of the two members' ONNX models.
    faces = np.random.default_rng(3).integers(0, 256, (9, 48, 48), dtype=np.uint8)
    members = [EmotionClassifier(tmp_path / p / "model.onnx", flip_tta=False).predict_proba(faces) for p in "ab"]
    got = EmotionClassifier(out / "model.onnx", flip_tta=False).predict_proba(faces)
    np.testing.assert_allclose(got, (members[0] + members[1]) / 2, atol=1e-5)
    assert card["public_test"]["accuracy"] == pytest.approx(card["evaluation"]["one_pass"]["accuracy"])

    # A fine-tune can start from the ensemble file: it takes the first member's weights, and the ensemble's training.
    import keras

    from inference.model import build_model
    from inference.train import warm_start

    fresh = build_model(**TINY)
    info = warm_start(fresh, str(out / "model.keras"))
    for got_w, want_w in zip(fresh.get_weights(), keras.models.load_model(tmp_path / "a/model.keras").get_weights()):
        np.testing.assert_array_equal(got_w, want_w)
    assert info["epochs_run"] == 2 and info["training_wall_time_s"] == card["training_wall_time_s"]


def test_ensemble_command_reports_a_missing_member_file_in_one_line(fixture_csv, tmp_path, capsys):
    from inference.__main__ import main

    missing = tmp_path / "nope.keras"
    assert main(["ensemble", str(missing), str(missing), "--data", str(fixture_csv), "--out", str(tmp_path)]) == 2
    assert "no such model file" in capsys.readouterr().err
