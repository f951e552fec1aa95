"""Video sampling (``inference.video.sample_frames``) on real encoded videos made from a real photo."""

import cv2
import numpy as np
import pytest

from inference.video import VideoReadError, sample_frames


@pytest.fixture
def video_10fps(tmp_path, faces_dir):
    """A 3 s, 10 fps MJPG AVI of a real group photo whose frame i carries i in its top-left pixel block."""
    photo = cv2.resize(cv2.imread(str(faces_dir / "group_photos" / "dlib_2008_007676.jpg")), (160, 112))
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 112))
    assert writer.isOpened()
    for i in range(30):
        frame = photo.copy()
        frame[:16, :16] = i * 8
        writer.write(frame)
    writer.release()
    return path


def _index(image: np.ndarray) -> int:
    return round(float(image[2:14, 2:14].mean()) / 8)


def test_frames_are_sampled_on_the_videos_own_timeline(video_10fps):
    frames = list(sample_frames(video_10fps, step_s=0.5, max_frames=100))
    assert [round(t, 3) for t, _ in frames] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [_index(image) for _, image in frames] == [0, 5, 10, 15, 20, 25]
    assert all(image.shape == (112, 160, 3) and image.dtype == np.uint8 for _, image in frames)


def test_sampling_stops_at_max_frames_and_slow_videos_give_every_frame(video_10fps):
    assert len(list(sample_frames(video_10fps, step_s=0.5, max_frames=2))) == 2
    assert len(list(sample_frames(video_10fps, step_s=0.01, max_frames=1000))) == 30


def test_unreadable_files_and_bad_arguments_raise_clear_errors(tmp_path, video_10fps):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoReadError, match="junk.mp4"):
        list(sample_frames(junk, step_s=0.5, max_frames=10))
    with pytest.raises(ValueError, match="step_s"):
        list(sample_frames(video_10fps, step_s=0, max_frames=10))
    with pytest.raises(ValueError, match="max_frames"):
        list(sample_frames(video_10fps, step_s=1, max_frames=0))
