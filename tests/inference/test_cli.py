import json
import subprocess
import sys

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
    }
    assert keys <= set(result)
    assert result["faces_in_frame"] == 8
    assert all(result[k] > 0 for k in keys)
