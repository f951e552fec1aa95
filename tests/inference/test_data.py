import gzip

import cv2
import numpy as np
import pytest

from inference import data as data_module
from inference.data import DatasetError, load_fer2013

from .conftest import BAD_ROWS


def test_loads_fixture_and_reports_each_malformed_row(fixture_csv):
    d = load_fer2013(fixture_csv)
    assert len(d) == 224
    assert d.images.shape == (224, 48, 48) and d.images.dtype == np.uint8
    assert d.labels.dtype == np.int64 and set(d.labels.tolist()) == set(range(7))
    assert {e.row for e in d.errors} == BAD_ROWS
    assert not BAD_ROWS & set(d.rows.tolist())
    messages = {e.row: e.message for e in d.errors}
    assert "2304" in messages[100] and "out of range" in messages[101]
    assert "columns" in messages[102] and "not an integer" in messages[103]
    assert "non-integer" in messages[172] and "SecretTest" in messages[173] and "0..255" in messages[174]
    assert all(str(fixture_csv) in str(e) for e in d.errors)


def test_usage_filter_and_pixels_match_source(fixture_csv):
    train, public = load_fer2013(fixture_csv, usage="Training"), load_fer2013(fixture_csv, usage="PublicTest")
    assert (len(train), len(public)) == (168, 56)
    assert np.bincount(public.labels, minlength=7).tolist() == [8] * 7
    with gzip.open(fixture_csv, "rt") as fh:
        first = fh.read().splitlines()[1].split(",")
    assert train.labels[0] == int(first[0])
    assert train.images[0].ravel().tolist() == [int(v) for v in first[1].split()]
    with pytest.raises(DatasetError, match="unknown usage"):
        load_fer2013(fixture_csv, usage="Validation")


def test_plain_csv_equals_gzip_and_second_load_uses_cache(fixture_csv, tmp_path, monkeypatch):
    plain = tmp_path / "fer2013.csv"
    plain.write_bytes(gzip.decompress(fixture_csv.read_bytes()))
    first = load_fer2013(plain)
    assert np.array_equal(first.images, load_fer2013(fixture_csv).images)

    def no_parsing(path):
        raise AssertionError("CSV parsed again despite the cache")

    monkeypatch.setattr(data_module, "_parse_csv", no_parsing)
    second = load_fer2013(plain)
    assert np.array_equal(second.images, first.images) and np.array_equal(second.labels, first.labels)
    assert [str(e) for e in second.errors] == [str(e) for e in first.errors]


def test_image_folder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for split, label, n in [("train", "Happy", 3), ("train", "SAD", 2), ("test", "neutral", 2)]:
        folder = tmp_path / split / label
        folder.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    (tmp_path / "train" / "Happy" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "train" / "contempt").mkdir()
    big = tmp_path / "test" / "neutral" / "big.jpg"
    cv2.imwrite(str(big), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    d = load_fer2013(tmp_path)
    assert len(d) == 8 and d.images.shape == (8, 48, 48)
    assert sorted(d.labels.tolist()) == [3, 3, 3, 4, 4, 6, 6, 6]
    assert (d.usage == "PublicTest").sum() == 3
    assert any("broken.png" in str(e) for e in d.errors) and any("contempt" in str(e) for e in d.errors)


@pytest.mark.parametrize(
    "content, message",
    [("", "empty file"), ("label,image\n1,2\n", "lacks 'emotion'"), ("emotion,pixels\n", "no usable rows")],
)
def test_unusable_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_fer2013(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_fer2013(tmp_path / "nope.csv")
    bad_gz = tmp_path / "bad.csv.gz"
    bad_gz.write_bytes(b"this is not gzip")
    with pytest.raises(DatasetError, match="bad.csv.gz"):
        load_fer2013(bad_gz)
    with pytest.raises(DatasetError, match="no split folders"):
        load_fer2013(tmp_path)
