import json

import numpy as np
import pytest

from inference.train import class_weights, train

TINY = {"stages": ((8, 1), (16, 1)), "dense_units": 16, "batch_size": 32, "learning_rate": 1e-2}


def test_class_weights_lift_rare_labels():
    labels = np.array([3] * 80 + [1] * 5 + [0] * 20 + [6] * 20)
    w = class_weights(labels)
    assert w[1] > w[0] > w[3] and w[2] == 0.0
    assert w[labels].mean() == pytest.approx(1.0)


@pytest.mark.slow
def test_training_smoke_loss_falls_and_writes_card_plots_and_export(fixture_csv, tmp_path):
    out = tmp_path / "run"
    lines = []
    card = train(str(fixture_csv), out=str(out), epochs=4, patience=10, log=lines.append, **TINY)
    history = card_history(out)
    assert len(history) == 4
    assert history[-1]["loss"] < history[0]["loss"]
    for name in ("model.keras", "model.onnx", "model_card.json", "training_curves.png", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "model_card.json").read_text())
    assert saved == card
    assert card["parameters"] > 0 and card["flops_per_face"] > 0 and card["epochs_run"] == 4
    assert len(card["data"]["sha256"]) == 64
    assert card["public_test"]["n"] == 56 and len(card["public_test"]["confusion"]) == 7
    assert set(card["public_test"]["per_class"]["happy"]) == {"precision", "recall", "f1", "support"}
    assert card["onnx_max_abs_diff_vs_keras"] <= 1e-4
    assert card["hardware"]["cpu_count"] >= 1 and card["training_wall_time_s"] > 0
    assert any("skipped:" in line for line in lines)

    # --resume with a larger epoch budget continues after the last checkpoint instead of starting over.
    resumed = train(str(fixture_csv), out=str(out), epochs=5, patience=10, resume=True, log=lines.append, **TINY)
    assert any("resuming after epoch 4" in line for line in lines)
    assert resumed["epochs_run"] == 5
    assert card_history(out)[:4] == history


def card_history(out):
    import csv

    with open(out / "history.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
