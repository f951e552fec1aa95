"""Several trained emotion CNNs served as one network: the mean of their probabilities in one ONNX graph.

``python -m inference ensemble A.keras B.keras --data fer2013_train_val.csv.gz --ferplus fer2013new.csv --out DIR``
builds the Keras model (``build_ensemble``), exports and checks ``DIR/model.onnx`` (``inference.export``),
evaluates it on PublicTest as served and in one pass (the same ``evaluation`` report as a trained model's card) and
writes ``DIR/model.keras`` and ``DIR/model_card.json``. The card lists its members (file, SHA-256, the labels each
was trained on) and adds up their training wall time, counting a warm start's source once.

Averaging the probabilities of independently trained networks is the classic ensemble (Hansen & Salamon, "Neural
network ensembles", IEEE TPAMI 1990); on FER2013 it is how the strongest single-dataset results are reached
(Pramerdorfer & Kampel, "Facial Expression Recognition using Convolutional Neural Networks: State of the Art",
arXiv:1612.02903, 2016). The cost is one network pass per member per face.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

#: ``architecture`` of an ensemble's card: ``<member architecture>-ensemble<number of members>``.
ARCHITECTURE_SUFFIX = "-ensemble"


class EnsembleError(ValueError):
    """The members cannot form an ensemble (fewer than two, or different input/output shapes)."""


def build_ensemble(members: Sequence, name: str | None = None):
    """A Keras model whose output is the mean of the members' outputs.

    Args:
        members: two or more Keras models with the same input ``(None, 48, 48, 1)`` float32 grey levels 0..255 and
            output ``(None, 7)`` probabilities in ``LABELS`` order (e.g. ``inference.model.build_model``).
        name: the model's name (default ``<first member's name>-ensemble<N>``). The members are renamed
            ``member0``, ``member1``, ... (nested models need unique names); their weights are untouched.

    Returns:
        A functional ``keras.Model``: input ``face`` ``(None, 48, 48, 1)``, output ``(None, 7)`` probabilities
        (each row sums to 1, since each member's does).

    Raises:
        EnsembleError: fewer than two members, or their shapes differ.
    """
    import keras

    if len(members) < 2:
        raise EnsembleError(f"an ensemble needs at least two models, got {len(members)}")
    shapes = {(tuple(m.input_shape), tuple(m.output_shape)) for m in members}
    if len(shapes) != 1:
        raise EnsembleError(f"members differ in input/output shape: {sorted(shapes)}")
    ((input_shape, _),) = shapes
    name = name or f"{members[0].name}{ARCHITECTURE_SUFFIX}{len(members)}"
    face = keras.Input(shape=input_shape[1:], name="face")
    outputs = []
    for index, member in enumerate(members):
        member.name = f"member{index}"  # nested models need unique names; the weights are untouched
        outputs.append(member(face, training=False))
    mean = keras.layers.Average(name="probabilities")(outputs)
    return keras.Model(face, mean, name=name)


def training_wall_time(members: Sequence[dict]) -> dict:
    """Training cost of an ensemble from its members' descriptions.

    Args:
        members: one dict per member with ``sha256`` (of its ``.keras`` file) and ``card`` (its model card: own
            ``epochs_run``/``training_wall_time_s``/``total_wall_time_s`` and, after a warm start, ``init`` with the
            same keys for everything before it, plus its ``sha256``).

    Returns:
        ``{"epochs_run", "training_wall_time_s", "total_wall_time_s"}`` summed over the members, where a warm
        start's source is counted once, and not at all when it is itself a member (a member fine-tuned from another
        member shares that member's training).
    """
    own = {m["sha256"] for m in members}
    counted: set[str] = set()
    epochs = wall = total = 0.0
    for member in members:
        card = member.get("card") or {}
        epochs += card.get("epochs_run") or 0
        wall += card.get("training_wall_time_s") or 0.0
        total += max(card.get("total_wall_time_s") or 0.0, card.get("training_wall_time_s") or 0.0)
        init = card.get("init") or {}
        source = init.get("sha256")
        if source and source not in own and source not in counted:
            counted.add(source)
            epochs += init.get("epochs_run") or 0
            wall += init.get("training_wall_time_s") or 0.0
            total += init.get("total_wall_time_s") or 0.0
    return {"epochs_run": int(epochs), "training_wall_time_s": round(wall, 1), "total_wall_time_s": round(total, 1)}


def ensemble(
    member_paths: Sequence[str | os.PathLike],
    *,
    data: str,
    out: str | os.PathLike,
    ferplus: str | None = None,
    log=print,
) -> dict:
    """Build, export, evaluate and describe the ensemble of ``member_paths`` (``.keras`` files).

    Args:
        member_paths: two or more ``.keras`` models of the same input/output shapes.
        data: the FER2013 CSV; its ``PublicTest`` rows are evaluated (and the first 256 check the ONNX export).
        out: output folder: ``model.keras``, ``model.onnx``, ``model_card.json``.
        ferplus: FER+ ``fer2013new.csv`` aligned with ``data``: adds the FER+ metrics to the card's ``evaluation``.
        log: progress lines.

    Returns:
        The model card (also written): the keys of a trained model's card (``inference.train.finalize``) where they
        apply, ``members`` (``path``, ``sha256``, ``architecture``, ``labels``, ``epochs_run``,
        ``training_wall_time_s`` of each) and ``labels = {"training": "ensemble", "members": [...]}``.

    Raises:
        EnsembleError: see ``build_ensemble``. FileNotFoundError: a member file is missing.
        inference.export.ExportMismatchError: ONNX and Keras disagree. inference.data.DatasetError: bad data.
    """
    import keras

    from inference.data import file_sha256, load_fer2013
    from inference.evaluate import CARD_SIZES, evaluate
    from inference.export import export_onnx
    from inference.labels import LABELS
    from inference.model import count_flops
    from inference.train import card_beside

    started = time.time()
    paths = [Path(p) for p in member_paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
    models = [keras.models.load_model(p, compile=False) for p in paths]
    members = []
    for path, model in zip(paths, models, strict=True):
        card = card_beside(path)
        members.append(
            {
                "path": str(path),
                "sha256": file_sha256(path),
                "architecture": card.get("architecture", model.name),
                "labels": (card.get("labels") or {"training": "fer2013"}),
                "recipe": card.get("recipe"),
                "epochs_run": card.get("epochs_run"),
                "training_wall_time_s": card.get("training_wall_time_s"),
                "card": card,
            }
        )
    architecture = f"{members[0]['architecture']}{ARCHITECTURE_SUFFIX}{len(models)}"
    combined = build_ensemble(models, name=architecture)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    combined.save(out_dir / "model.keras")
    public_test = load_fer2013(data, usage="PublicTest")
    onnx_path = out_dir / "model.onnx"
    max_abs_diff = export_onnx(combined, onnx_path, check_images=public_test.images[:256])
    log(f"exported {onnx_path} (max |ONNX - Keras| = {max_abs_diff:.2e})")
    evaluation = {
        name: evaluate(
            data,
            usage="PublicTest",
            model_path=str(onnx_path),
            flip_tta=tta,
            ferplus=ferplus,
            sizes=CARD_SIZES,
            calibration=True,
        )
        for name, tta in (("flip_tta", True), ("one_pass", False))
    }
    for name, report in evaluation.items():
        log(
            f"{name}: PublicTest {report['accuracy']:.4f}"
            + (f", FER+ majority {report['ferplus']['accuracy']:.4f}" if "ferplus" in report else "")
            + ", "
            + ", ".join(f"{s} px {v['accuracy']:.4f}" for s, v in report["sizes"].items())
        )
    import tensorflow as tf

    cost = training_wall_time(members)
    one_pass, served = evaluation["one_pass"], evaluation["flip_tta"]
    card = {
        "architecture": architecture,
        "layers": [layer.__class__.__name__ + ":" + layer.name for layer in combined.layers],
        "input": {"shape": [None, 48, 48, 1], "dtype": "float32", "range": "grey levels 0..255"},
        "output": {"shape": [None, len(LABELS)], "dtype": "float32", "labels": list(LABELS)},
        "parameters": int(combined.count_params()),
        "flops_per_face": sum(count_flops(m) for m in models),
        "data": {
            "source": Path(data).name,
            "sha256": file_sha256(data),
            "validation_split": "PublicTest",
        },
        "members": [{k: v for k, v in m.items() if k != "card"} for m in members],
        "labels": {"training": "ensemble", "members": [m["labels"].get("training") for m in members]},
        "combination": "mean of the members' probabilities",
        "epochs_run": cost["epochs_run"],
        "best_epoch": None,
        "training_wall_time_s": cost["training_wall_time_s"],
        "total_wall_time_s": round(cost["total_wall_time_s"] + time.time() - started, 1),
        "hardware": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
        "software": {"tensorflow": tf.__version__, "python": platform.python_version()},
        "onnx_max_abs_diff_vs_keras": max_abs_diff,
        "public_test": {k: one_pass[k] for k in ("n", "accuracy", "macro_f1", "per_class", "confusion")},
        "public_test_flip_tta": {k: served[k] for k in ("n", "accuracy", "macro_f1")},
        "evaluation": evaluation,
    }
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2))
    return card
