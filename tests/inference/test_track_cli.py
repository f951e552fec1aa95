import json

import cv2
import numpy as np
import pytest

from inference.__main__ import main
from inference.imageio import read_image
from inference.labels import LABELS

FACE_KEYS = {
    "track",
    "box",
    "label",
    "score",
    "probabilities",
    "smoothed_label",
    "smoothed_probabilities",
    "too_small",
    "valence",
    "arousal",
    "head_pose",
}


@pytest.fixture(scope="module")
def video(faces_dir, tmp_path_factory):
    """A 12-frame, 10 fps MJPG/AVI of the 3-men photo (500x375) sliding 6 px per frame over a 560x400 grey frame."""
    photo = read_image(faces_dir / "group_photos/dlib_2008_002506.jpg")
    small = cv2.resize(photo, (480, 360), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("video") / "three_men.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (560, 400))
    assert writer.isOpened()
    for t in range(12):
        frame = np.full((400, 560, 3), 110, np.uint8)
        frame[20 : 20 + 360, 6 * t : 6 * t + 480] = small
        writer.write(frame)
    writer.release()
    return path


def test_track_json_gives_every_frame_its_tracked_faces_and_a_track_summary(video, capsys):
    assert main(["track", str(video), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"video", "fps", "frames", "tracks"}
    assert result["video"] == str(video) and result["fps"] == pytest.approx(10.0)
    assert [f["index"] for f in result["frames"]] == list(range(12))
    assert [f["t_s"] for f in result["frames"]] == pytest.approx([i / 10 for i in range(12)])
    for frame in result["frames"]:
        assert len(frame["faces"]) == 3
        assert [face["track"] for face in frame["faces"]] == [1, 2, 3]  # left to right, one track per man
        for face in frame["faces"]:
            assert set(face) == FACE_KEYS and face["too_small"] is False
            assert set(face["head_pose"]) == {"yaw", "pitch", "roll"}
            assert -1 <= face["valence"] <= 1 and -1 <= face["arousal"] <= 1
            assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
            for key, label_key in (("probabilities", "label"), ("smoothed_probabilities", "smoothed_label")):
                assert list(face[key]) == list(LABELS) and abs(sum(face[key].values()) - 1) < 1e-4
                assert face[label_key] == max(face[key], key=face[key].get)
    assert result["tracks"] == [
        {"track": k, "first_s": 0.0, "last_s": pytest.approx(1.1), "frames": 12} for k in (1, 2, 3)
    ]
    # the left man turns toward the image's right, the right man toward its left (see the photo)
    for frame in result["frames"]:
        left, _, right = frame["faces"]
        assert left["head_pose"]["yaw"] > 10 and right["head_pose"]["yaw"] < -10
    first = result["frames"][0]["faces"][0]
    assert first["smoothed_probabilities"] == first["probabilities"]  # a new track starts at its first frame


def test_track_fps_samples_the_video_and_out_writes_an_annotated_mp4_and_a_timeline(video, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["track", str(video), "--fps", "5", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["index"] for f in result["frames"]] == [0, 2, 4, 6, 8, 10]
    assert [t["frames"] for t in result["tracks"]] == [6, 6, 6]
    assert result["annotated_video"] == str(out / "three_men.tracks.mp4")
    cap = cv2.VideoCapture(result["annotated_video"])
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == 6 and frames[0].shape == (400, 560, 3)
    # the boxes are drawn: the frame differs from the input around the first face's box edge
    x, y, w, h = result["frames"][0]["faces"][0]["box"]
    source = cv2.VideoCapture(str(video)).read()[1]
    edge = (slice(y, y + h), slice(x, x + 2))
    assert np.abs(frames[0][edge].astype(int) - source[edge].astype(int)).mean() > 30
    png = out / "three_men.timeline.png"
    assert result["timeline"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert cv2.imread(str(png)).shape[0] > 300


def test_an_unreadable_video_gets_an_error_entry_and_the_others_go_on(video, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    missing = tmp_path / "missing.avi"
    assert main(["track", str(bad), str(video), str(missing), "--json", "--fps", "2"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r["video"] for r in results] == [str(bad), str(video), str(missing)]
    assert set(results[0]) == {"video", "error"} and "broken.mp4" in results[0]["error"]
    assert set(results[2]) == {"video", "error"} and "missing.avi" in results[2]["error"]
    assert len(results[1]["frames"]) == 3 and len(results[1]["tracks"]) == 3
    assert main(["track", str(bad)]) == 1
    assert "ERROR" in capsys.readouterr().out
