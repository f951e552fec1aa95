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


FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"


def test_ferplus_votes_align_with_fer2013_rows_by_order(fixture_csv):
    from inference.data import align_ferplus, load_ferplus

    ferplus_csv = fixture_csv.with_name("fer2013new_sample.csv")
    faces, votes = load_fer2013(fixture_csv), load_ferplus(ferplus_csv)
    assert len(votes) == 230 and votes.votes.shape == (230, 10) and votes.votes.dtype == np.int64
    # Row 173 of the FER+ sample repeats the FER2013 sample's bad Usage: reported with its row number, the rest kept.
    assert [(e.row, "SecretTest" in e.message) for e in votes.errors] == [(173, True)]
    assert 173 not in votes.rows and votes.rows[173] == 174
    aligned, found = align_ferplus(faces, votes)
    assert found.all() and aligned.shape == (224, 10)
    with open(ferplus_csv) as fh:
        lines = fh.read().splitlines()[1:]
    for i in (0, 1, 99, 104, 223):  # data row faces.rows[i] of the FER2013 file <-> vote line faces.rows[i]
        line = lines[faces.rows[i]].split(",")
        assert aligned[i].tolist() == [int(v) for v in line[2:]]
        assert line[0] == faces.usage[i]
    assert aligned[0].tolist() == [7, 0, 0, 0, 3, 0, 0, 0, 0, 0]


def test_ferplus_loader_reports_malformed_rows_by_number_and_the_rest_keeps_its_rows(tmp_path):
    from inference.data import load_ferplus

    path = tmp_path / "fer2013new.csv"
    path.write_text(
        FERPLUS_HEADER
        + "Training,a.png,10,0,0,0,0,0,0,0,0,0\n"
        + "Training,b.png,1,2,3\n"  # row 1: too few columns
        + "Training,c.png,x,0,0,0,0,0,0,0,0,10\n"  # row 2: not an integer
        + "PublicTest,d.png,0,0,-1,0,0,0,0,0,0,0\n"  # row 3: negative
        + "PublicTest,e.png,0,0,0,0,0,0,0,0,2,8\n"
    )
    votes = load_ferplus(path)
    assert votes.rows.tolist() == [0, 4]
    assert votes.usage.tolist() == ["Training", "PublicTest"]
    assert votes.votes[1].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]
    messages = {e.row: e.message for e in votes.errors}
    assert set(messages) == {1, 2, 3}
    assert "columns" in messages[1] and "not an integer" in messages[2] and "negative" in messages[3]
    assert all(str(path) in str(e) for e in votes.errors)


def test_ferplus_loader_rejects_a_file_without_the_vote_columns(tmp_path):
    from inference.data import load_ferplus

    path = tmp_path / "votes.csv"
    path.write_text("Usage,neutral,happiness\nTraining,1,2\n")
    with pytest.raises(DatasetError, match="contempt"):
        load_ferplus(path)
    with pytest.raises(DatasetError, match="no such file"):
        load_ferplus(tmp_path / "none.csv")


def test_align_ferplus_marks_missing_vote_rows_and_a_usage_mismatch(fixture_csv, tmp_path):
    from inference.data import align_ferplus, load_ferplus

    faces = load_fer2013(fixture_csv)
    path = tmp_path / "short.csv"
    lines = fixture_csv.with_name("fer2013new_sample.csv").read_text().splitlines()
    usage, rest = lines[2].split(",", 1)  # data row 1
    lines[2] = ("PublicTest" if usage == "Training" else "Training") + "," + rest
    path.write_text("\n".join(lines[:11]) + "\n")  # header + data rows 0..9
    votes, found = align_ferplus(faces, load_ferplus(path))
    assert found[faces.rows == 0].all() and not found[faces.rows == 1].any()
    assert found[faces.rows < 10].sum() == 9 and not found[faces.rows >= 10].any()
    assert (votes[~found] == 0).all()


def test_soft_targets_are_the_vote_distribution_over_the_seven_labels_in_fer2013_order():
    from inference.data import ferplus_soft_targets

    # FER+ columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    votes = np.array(
        [
            [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],  # -> angry 0.3, disgust 0.2, sad 0.1, neutral 0.4
            [0, 6, 2, 0, 0, 0, 0, 1, 1, 0],  # contempt / unknown votes left out: happy 0.75, surprise 0.25
            [0, 0, 0, 0, 0, 0, 5, 0, 0, 0],  # a single emotion
        ]
    )
    targets, keep = ferplus_soft_targets(votes)
    assert keep.tolist() == [True, True, True] and targets.dtype == np.float32
    # LABELS order: angry, disgust, fear, happy, sad, surprise, neutral
    np.testing.assert_allclose(targets[0], [0.3, 0.2, 0.0, 0.0, 0.1, 0.0, 0.4], atol=1e-7)
    np.testing.assert_allclose(targets[1], [0.0, 0.0, 0.0, 0.75, 0.0, 0.25, 0.0], atol=1e-7)
    np.testing.assert_allclose(targets[2], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-7)


def test_soft_targets_drop_not_a_face_unknown_and_contempt_majorities():
    from inference.data import ferplus_soft_targets

    votes = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face (the all-black images)
            [2, 0, 0, 1, 0, 0, 0, 0, 7, 0],  # unknown majority
            [3, 0, 0, 0, 0, 0, 0, 6, 1, 0],  # contempt majority
            [4, 0, 0, 0, 0, 0, 0, 0, 4, 2],  # emotion tied with unknown: dropped
            [5, 0, 0, 0, 0, 0, 0, 0, 4, 1],  # neutral ahead of unknown: kept
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes at all
        ]
    )
    targets, keep = ferplus_soft_targets(votes)
    assert keep.tolist() == [False, False, False, False, True, False]
    assert (targets[~keep] == 0).all() and targets[4].tolist() == [0, 0, 0, 0, 0, 0, 1.0]


def test_ferplus_majority_counts_every_tied_emotion_and_clear_majority_follows_the_ferplus_release():
    from inference.data import ferplus_clear_majority, ferplus_majority

    votes = np.array(
        [
            [0, 8, 2, 0, 0, 0, 0, 0, 0, 0],  # happy, clear
            [0, 0, 0, 5, 5, 0, 0, 0, 0, 0],  # sad = angry: a tie, no clear majority (5 is not > 5)
            [1, 0, 0, 4, 1, 0, 0, 0, 0, 0],  # single votes are outliers: 4 of 4 -> sad, clear
            [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],  # contempt: dropped by both
        ]
    )
    top, keep = ferplus_majority(votes)
    assert keep.tolist() == [True, True, True, False]
    assert np.flatnonzero(top[0]).tolist() == [3] and np.flatnonzero(top[1]).tolist() == [0, 4]
    assert np.flatnonzero(top[2]).tolist() == [4] and not top[3].any()
    labels, clear = ferplus_clear_majority(votes)
    assert clear.tolist() == [True, False, True, False] and labels.tolist() == [3, -1, 4, -1]
