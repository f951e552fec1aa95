import math

import cv2
import numpy as np
import pytest

from inference.detector import BlazeFaceDetector, HaarFaceDetector
from inference.imageio import read_image
from inference.pose import MODEL_POINTS_MM, facing_camera, head_pose
from inference.recognizer import EmotionRecognizer
from inference.stream import StreamAnalyzer


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(-yaw) Rx(-pitch), the convention documented in inference.pose (degrees)."""
    a, b, c = math.radians(-pitch), math.radians(-yaw), math.radians(roll)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _project(yaw, pitch, roll, size=(640, 480), distance_mm=900.0, offset_mm=(60.0, -40.0)):
    width, height = size
    focal = max(size)
    points = MODEL_POINTS_MM @ _rotation(yaw, pitch, roll).T + (offset_mm[0], offset_mm[1], distance_mm)
    return np.stack(
        [focal * points[:, 0] / points[:, 2] + width / 2, focal * points[:, 1] / points[:, 2] + height / 2], 1
    )


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (-25, 10, 0), (0, -20, 12), (15, 10, -20)])
def test_head_pose_recovers_a_known_pose_of_the_model_head(yaw, pitch, roll):
    found = head_pose(_project(yaw, pitch, roll), (640, 480))
    assert found is not None
    assert found == pytest.approx((yaw, pitch, roll), abs=1.0)


def test_yaw_is_positive_when_the_nose_points_to_the_image_right():
    keypoints = _project(20, 0, 0)
    assert keypoints[2, 0] > keypoints[:2, 0].mean()  # nose tip right of the eyes' midpoint
    assert head_pose(keypoints, (640, 480))[0] > 0


@pytest.mark.parametrize("angle", [-15, 15])
def test_roll_follows_a_known_rotation_of_real_portraits_within_5_degrees(faces_dir, angle):
    detector = BlazeFaceDetector()
    for path in sorted((faces_dir / "portraits").glob("*.jpg")):
        image = read_image(path)
        height, width = image.shape[:2]
        _, _, keypoints = detector.detect_with_keypoints(image)
        upright = head_pose(keypoints[0], (width, height))
        # cv2 turns the image counter-clockwise for a positive angle: the head's clockwise tilt drops by angle
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        rotated = cv2.warpAffine(image, turn, (width, height), borderMode=cv2.BORDER_REPLICATE)
        boxes, _, keypoints = detector.detect_with_keypoints(rotated)
        assert len(boxes) == 1, path.name
        turned = head_pose(keypoints[0], (width, height))
        assert turned[2] - upright[2] == pytest.approx(-angle, abs=5.0), path.name


def test_yaw_changes_sign_on_a_mirrored_real_photo(faces_dir):
    detector = BlazeFaceDetector()
    image = read_image(faces_dir / "group_photos/dlib_2008_002506.jpg")  # three men, the outer two turned
    size = (image.shape[1], image.shape[0])
    _, _, keypoints = detector.detect_with_keypoints(image)
    _, _, mirrored_keypoints = detector.detect_with_keypoints(np.ascontiguousarray(image[:, ::-1]))
    poses = [head_pose(k, size) for k in keypoints]
    mirrored = [head_pose(k, size) for k in mirrored_keypoints][::-1]  # left to right becomes right to left
    assert poses[0][0] > 10 and poses[2][0] < -10  # the left man turns to the image's right, the right man left
    for pose, flipped in zip(poses, mirrored, strict=True):
        assert flipped[0] == pytest.approx(-pose[0], abs=5.0)


def test_head_pose_without_usable_keypoints_is_none_and_bad_shapes_raise():
    assert head_pose(np.full((6, 2), np.nan), (640, 480)) is None
    assert head_pose(np.full((6, 2), 100.0), (640, 480)) is None  # both eyes in one place
    with pytest.raises(ValueError):
        head_pose(np.zeros((5, 2)), (640, 480))
    with pytest.raises(ValueError):
        head_pose(_project(0, 0, 0), (0, 480))


def test_facing_camera_is_within_30_degrees_of_yaw_and_25_of_pitch():
    assert facing_camera(0, 0) and facing_camera(-30, 25)
    assert not facing_camera(31, 0) and not facing_camera(0, -26)


def test_recognized_faces_carry_head_pose_except_too_small_ones_and_haar_faces(faces_dir):
    image = read_image(faces_dir / "group_photos/dlib_2008_007676.jpg")
    faces = EmotionRecognizer().analyze(image)
    assert len(faces) == 7 and all(face.head_pose is not None for face in faces)
    assert all(facing_camera(face.head_pose[0], face.head_pose[1]) for face in faces)  # all seven look at the camera
    small = cv2.resize(image, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    small_faces = EmotionRecognizer().analyze(small)
    assert any(face.too_small for face in small_faces)
    assert all((face.head_pose is None) == face.too_small for face in small_faces)
    haar_faces = EmotionRecognizer(detector=HaarFaceDetector()).analyze(image)
    assert haar_faces and all(face.head_pose is None for face in haar_faces)


def test_followed_frames_of_a_stream_keep_head_pose(faces_dir):
    image = read_image(faces_dir / "group_photos/dlib_2008_002506.jpg")
    analyzer = StreamAnalyzer(EmotionRecognizer(), keyframe_every=10)
    state = None
    for shift in range(4):
        frame = np.ascontiguousarray(np.roll(image, 2 * shift, axis=1))
        faces, state = analyzer.analyze(frame, state)
        assert state.keyframe == (shift == 0)
        assert len(faces) == 3 and faces[0].head_pose[0] > 10 and faces[2].head_pose[0] < -10
