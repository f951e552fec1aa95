import json
import subprocess
import sys

import numpy as np
import pytest

from inference.__main__ import main

from .conftest import REPO, hand_counts


def test_predict_json_on_real_photos_with_one_bad_file(faces_dir, tmp_path, capsys):
    photos = sorted(hand_counts(faces_dir))
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
    out_dir = tmp_path / "out"
    assert main(["predict", *map(str, photos), str(bad), "--json", "--out", str(out_dir)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [*map(str, photos), str(bad)]
    assert "error" in results[-1] and "corrupt.jpg" in results[-1]["error"]
    counts = hand_counts(faces_dir)
    for item in results[:-1]:
        assert abs(len(item["faces"]) - counts[faces_dir / item["image"].split("faces/")[1]]) <= 1
        for face in item["faces"]:
            assert len(face["box"]) == 4 and face["label"] in face["probabilities"]
            assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
    for photo in photos:
        assert (out_dir / f"{photo.stem}_annotated.jpg").stat().st_size > 1000
        assert (out_dir / f"{photo.stem}_probabilities.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_only_bad_files_exits_nonzero(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.png")]) == 1
    assert "ERROR" in capsys.readouterr().out


def test_evaluate_json_on_fixture(fixture_csv, capsys):
    assert main(["evaluate", str(fixture_csv), "--usage", "PublicTest", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 56 and 0.0 <= report["accuracy"] <= 1.0
    assert {"n", "accuracy", "macro_f1", "per_class", "confusion"} <= set(report)
    assert sum(map(sum, report["confusion"])) == 56
    assert sum(m["support"] for m in report["per_class"].values()) == 56
    assert len(report["skipped_rows"]) == 7


def test_cli_errors_are_clear_not_tracebacks(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "inference", "evaluate", str(tmp_path / "none.csv")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "error:" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "inference", "predict", "x.jpg", "--model", str(tmp_path / "m.onnx")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "model file not found" in run.stderr


@pytest.mark.slow
def test_bench_json_reports_all_keys(faces_dir):
    run = subprocess.run(
        [sys.executable, "-m", "inference", "bench", "--json"], cwd=REPO, capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout)
    keys = {
        "classify_ms_per_face_b1_1thread",
        "classify_ms_per_face_b32_1thread",
        "analyze_ms_per_frame",
        "baseline_analyze_ms_per_frame",
        "speedup_vs_baseline",
        "faces_in_frame",
        "worker_rss_mb",
        "classify_ms_per_face_b32_1thread_small",
        "detect_ms_per_frame_classroom",
        "stream_ms_per_frame_classroom",
    }
    assert keys <= set(result)
    assert result["faces_in_frame"] == 8
    assert all(result[k] > 0 for k in keys)
    assert result["small_face_model"].endswith("fer_cnn_small.onnx")  # as served: the small-face model too


def _variance_model(path, sign=1.0):
    """An ONNX model with the served interface whose answer is known: logits ``(z at happy, -z at sad, 0 elsewhere)``
    with ``z = sign * (pixel variance - 1000) / 1000``, so a contrasty face reads happy and a flat one reads sad
    (the other way round with ``sign=-1``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(sign * np.array([[0, 0, 0, 1, -1, 0, 0]], np.float32), "w")
    thousand = numpy_helper.from_array(np.array(1000.0, np.float32), "thousand")
    nodes = [
        helper.make_node("ReduceMean", ["face"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["face", "face"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["mean_square"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "mean"], ["mean_2"]),
        helper.make_node("Sub", ["mean_square", "mean_2"], ["variance"]),
        helper.make_node("Sub", ["variance", "thousand"], ["centred"]),
        helper.make_node("Div", ["centred", "thousand"], ["z"]),
        helper.make_node("Unsqueeze", ["z", "one"], ["z_column"]),
        helper.make_node("Mul", ["z_column", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    graph = helper.make_graph(
        nodes,
        "variance",
        [helper.make_tensor_value_info("face", TensorProto.FLOAT, [None, 48, 48, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 7])],
        [w, thousand, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def _softmax(z):
    logits = np.zeros(7)
    logits[3], logits[4] = z, -z
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _tiny_set(tmp_path):
    """8 PublicTest faces (4 checkerboards labelled happy, 4 flat faces labelled sad) and their FER+ votes; returns
    ``(data csv, votes csv)``."""
    checker = ((np.indices((48, 48)).sum(axis=0) % 2) * 255).astype(np.uint8)  # 1-px checkerboard, variance 16256
    flats = [np.full((48, 48), v, np.uint8) for v in (60, 100, 150, 200)]  # variance 0
    faces = [checker, checker.T, checker, checker.T, *flats]
    fer2013 = [3, 3, 3, 3, 4, 4, 4, 4]  # happy, happy, ..., sad
    # FER+ columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    votes = [[0, 8, 2, 0, 0, 0, 0, 0, 0, 0]] * 4 + [
        [4, 0, 0, 6, 0, 0, 0, 0, 0, 0],  # sad majority: right
        [0, 0, 0, 5, 5, 0, 0, 0, 0, 0],  # sad = angry tie: sad counts as right
        [7, 0, 0, 3, 0, 0, 0, 0, 0, 0],  # neutral majority: wrong
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face: dropped
    ]
    data = tmp_path / "tiny.csv"
    data.write_text(
        "emotion,pixels,Usage\n"
        + "".join(f"{y},{' '.join(map(str, f.ravel()))},PublicTest\n" for y, f in zip(fer2013, faces, strict=True))
    )
    ferplus = tmp_path / "tiny_votes.csv"
    ferplus.write_text(
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
        + "".join(f"PublicTest,f{i}.png,{','.join(map(str, v))}\n" for i, v in enumerate(votes))
    )
    return data, ferplus


def test_evaluate_ferplus_sizes_and_calibration_json_give_the_known_answer(tmp_path, capsys):
    model = tmp_path / "variance.onnx"
    _variance_model(model)
    data, ferplus = _tiny_set(tmp_path)
    args = ["evaluate", str(data), "--model", str(model), "--labels", "ferplus", "--ferplus", str(ferplus)]
    assert main([*args, "--sizes", "48,24,16", "--calibration", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    p_happy, p_flat = _softmax((16256.25 - 1000) / 1000), _softmax(-1.0)
    assert report["accuracy"] == 1.0 and report["n"] == 8
    # 24 px: each 2x2 block of the checkerboard averages to grey; 16 px: 3x3 blocks leave a faint pattern
    # (variance ~200): both read sad, so only the 4 flat faces stay right.
    assert {s: v["accuracy"] for s, v in report["sizes"].items()} == {"48": 1.0, "24": 0.5, "16": 0.5}
    assert report["sizes"]["24"]["recall"]["happy"] == 0.0 and report["sizes"]["24"]["recall"]["sad"] == 1.0
    # Everything right: ECE = mean(1 - confidence).
    cal = report["calibration"]
    assert cal["ece"] == pytest.approx(((1 - p_happy[3]) + (1 - p_flat[4])) / 2, abs=1e-5)
    assert cal["per_class"]["happy"]["true_share"] == 0.5
    assert cal["per_class"]["sad"]["mean_probability"] == pytest.approx((p_happy[4] + p_flat[4]) / 2, abs=1e-5)

    fp = report["ferplus"]
    assert (fp["n"], fp["dropped"], fp["ties"], fp["unmatched_rows"]) == (7, 1, 1, 0)
    assert fp["accuracy"] == pytest.approx(6 / 7)
    assert fp["per_class"]["neutral"]["recall"] == 0.0 and fp["per_class"]["happy"]["recall"] == 1.0
    q = np.array([[0, 0, 0, 0.8, 0, 0.2, 0]] * 4 + [[0, 0, 0, 0, 0.6, 0, 0.4], [0.5, 0, 0, 0, 0.5, 0, 0]])
    q = np.vstack([q, [0, 0, 0, 0, 0.3, 0, 0.7]])
    p = np.vstack([p_happy] * 4 + [p_flat] * 3)
    assert fp["cross_entropy"] == pytest.approx(float(-(q * np.log(p)).sum(axis=1).mean()), abs=1e-5)
    # The FER+ release's clear majority: 4 happy + the 6:4 sad + the 7:3 neutral face (the 5:5 tie is not clear).
    assert fp["clear_majority"] == {"n": 6, "accuracy": pytest.approx(5 / 6)}
    # Label agreement: the FER2013 label is a FER+ majority label on 6 of the 7 kept faces (the tie counts); the
    # model answers them all right, and answers the disputed 7:3 neutral face with its FER2013 label, sad.
    assert fp["agreement"] == {
        "share": pytest.approx(6 / 7),
        "agreed": {"n": 6, "fer2013_label": 1.0, "ferplus_majority": 1.0},
        "disputed": {"n": 1, "fer2013_label": 1.0, "ferplus_majority": 0.0},
    }
    assert {s: v["accuracy"] for s, v in fp["sizes"].items()} == pytest.approx({"48": 6 / 7, "24": 2 / 7, "16": 2 / 7})
    assert fp["calibration"]["per_class"]["happy"]["mean_vote_share"] == pytest.approx(3.2 / 7)
    # Two bins: the 4 happy faces (all right) and the 3 flat ones (confidence p_flat[4], 2 of 3 right).
    assert fp["calibration"]["ece"] == pytest.approx((4 * (1 - p_happy[3]) + 3 * abs(2 / 3 - p_flat[4])) / 7, abs=1e-5)

    assert main(args + ["--sizes", "48,16", "--calibration"]) == 0  # the text form prints the same sections
    text = capsys.readouterr().out
    assert "FER+ majority (7 faces, 1 dropped, 1 ties): accuracy 0.8571" in text and "16 px 0.5000" in text
    assert "FER+ majority label on 0.8571 of these faces; accuracy there 1.0000; on the 1 disputed" in text
    assert main(["evaluate", str(data), "--labels", "ferplus"]) == 2
    assert "--ferplus" in capsys.readouterr().err


def test_evaluate_classifies_sizes_under_the_small_face_side_with_the_small_face_model(tmp_path, capsys):
    model, inverted = tmp_path / "variance.onnx", tmp_path / "inverted.onnx"
    _variance_model(model)
    _variance_model(inverted, sign=-1.0)
    data, _ = _tiny_set(tmp_path)
    args = ["evaluate", str(data), "--model", str(model), "--sizes", "48,24", "--json"]
    assert main([*args, "--small-face-model", str(inverted)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["small_face_model"] == str(inverted) and report["small_face_side"] == 40
    # 48 px: the main model, all right. 24 px: the checkerboards blur to flat grey, which the inverted small-face
    # model reads happy, like the flat faces: happy recall 1, sad recall 0 (the main model gives the opposite).
    assert report["accuracy"] == 1.0 and report["sizes"]["48"]["accuracy"] == 1.0
    assert report["sizes"]["24"]["recall"] == pytest.approx(
        {**dict.fromkeys(report["sizes"]["24"]["recall"], 0.0), "happy": 1.0}
    )
    assert main(args) == 0  # a model of one's own: no small-face model unless asked for
    report = json.loads(capsys.readouterr().out)
    assert report["small_face_model"] is None
    assert report["sizes"]["24"]["recall"]["sad"] == 1.0 and report["sizes"]["24"]["recall"]["happy"] == 0.0
