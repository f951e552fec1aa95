"""Head pose (yaw, pitch, roll in degrees) from BlazeFace's six keypoints, and the facing-the-camera rule.

The six keypoints (``BlazeFaceDetector.detect_with_keypoints``: the subject's right eye, left eye, nose tip, mouth
centre, right ear tragion, left ear tragion) are matched to a generic 3-D head (``MODEL_POINTS_MM``) with OpenCV's
``solvePnP`` (Levenberg-Marquardt on the reprojection error, started from the eye line's angle and the distance
that the interpupillary distance gives, which keeps it off the mirrored solution behind the camera). The camera
is assumed to have a focal length of the image's longer side in pixels (a ~53 degree horizontal field of view,
typical of laptop webcams) and its principal point at the image centre; the angles depend little on that guess
for faces that fill a small part of the frame.

Angles, degrees, from the rotation ``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` of the head in camera coordinates
(x to the image's right, y down, z away from the camera), so that turning the image in its plane changes roll
only:

- ``yaw``: positive when the face turns toward the image's right (the subject's left), 0 facing the camera;
- ``pitch``: positive when the face tilts up (chin up), negative looking down;
- ``roll``: positive when the head tilts clockwise as seen in the image.

This is head orientation, not gaze: eyes can look elsewhere than the head points.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Generic adult head in millimetres, camera coordinates of a face looking straight into the camera (x to the
#: image's right, y down, z away from the camera), origin midway between the pupils, in BlazeFace keypoint order.
#: Interpupillary distance 63 mm (adult mean, Dodgson 2004, "Variation and extrema of human interpupillary
#: distance", Proc. SPIE 5291); bitragion breadth 142 mm (ANSUR II, Gordon et al. 2014, mean of men and women,
#: rounded); nose tip 38 mm below and 22 mm in front of the eyes, mouth centre 68 mm below and 10 mm in front,
#: tragion 85 mm behind: approximate proportions of an average face. The tragion height (3 mm below the eyes) was
#: set so that the mean pitch of the 21 faces of ``shared/data/faces`` portraits and group photos, all looking at
#: the camera, is ~0 (measured: mean yaw 2.4 degrees, pitch -0.1, roll -2.2; README "Head pose").
MODEL_POINTS_MM = np.array(
    [
        [-31.5, 0.0, 0.0],  # right eye
        [31.5, 0.0, 0.0],  # left eye
        [0.0, 38.0, -22.0],  # nose tip
        [0.0, 68.0, -10.0],  # mouth centre
        [-71.0, 3.0, 85.0],  # right ear tragion
        [71.0, 3.0, 85.0],  # left ear tragion
    ],
    np.float64,
)
INTERPUPILLARY_MM = 63.0

#: Facing the camera: |yaw| and |pitch| at most these many degrees. A head-orientation proxy for attention as used
#: in classroom studies (Raca & Dillenbourg 2013, "System for assessing classroom attention", LAK '13; Goldberg et
#: al. 2021, "Attentive or Not? Toward a Machine Learning Approach to Assessing Students' Visible Engagement in
#: Classroom Instruction", Educ. Psychol. Rev. 33), with thresholds chosen here: 30 degrees of yaw keeps the faces
#: of people who look at a board or teacher next to the camera and all faces of the group photos in
#: ``shared/data/faces`` (|yaw| <= 28 measured); 25 degrees of pitch tolerates a camera above or below eye level
#: and excludes looking down at a desk or phone (typically 30-60 degrees down).
FACING_MAX_YAW_DEG = 30.0
FACING_MAX_PITCH_DEG = 25.0


def head_pose(keypoints: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float] | None:
    """Yaw, pitch and roll of one face, degrees (conventions in the module docstring).

    Args:
        keypoints: ``float (6, 2)`` BlazeFace keypoints ``(x, y)`` in pixels of the image (order as
            ``MODEL_POINTS_MM``).
        image_size: ``(width, height)`` of that image in pixels.

    Returns:
        ``(yaw, pitch, roll)`` rounded to 0.1 degree, or ``None`` when the keypoints are missing (``NaN``), the eyes
        coincide, or the solver finds no pose in front of the camera.

    Raises:
        ValueError: ``keypoints`` is not ``(6, 2)`` or ``image_size`` is not positive.
    """
    points = np.asarray(keypoints, np.float64)
    if points.shape != (6, 2):
        raise ValueError(f"keypoints must be (6, 2), got {points.shape}")
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    if not np.isfinite(points).all():
        return None
    eyes = points[1] - points[0]
    eye_distance = math.hypot(eyes[0], eyes[1])
    if eye_distance < 1e-3:
        return None
    focal = float(max(width, height))
    camera = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    depth = focal * INTERPUPILLARY_MM / eye_distance
    centre = points[:2].mean(axis=0)
    rvec = np.array([[0.0], [0.0], [math.atan2(eyes[1], eyes[0])]])
    tvec = np.array([[(centre[0] - width / 2) * depth / focal], [(centre[1] - height / 2) * depth / focal], [depth]])
    try:
        ok, rvec, tvec = cv2.solvePnP(
            MODEL_POINTS_MM, points, camera, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE
        )
    except cv2.error:
        return None
    if not ok or not np.isfinite(rvec).all() or float(tvec[2, 0]) <= 0:
        return None
    rotation, _ = cv2.Rodrigues(rvec)
    # R = Rz(roll) Ry(b) Rx(a): b = asin(-R20), a = atan2(R21, R22), roll = atan2(R10, R00)
    b = math.degrees(math.asin(max(-1.0, min(1.0, -rotation[2, 0]))))
    a = math.degrees(math.atan2(rotation[2, 1], rotation[2, 2]))
    roll = math.degrees(math.atan2(rotation[1, 0], rotation[0, 0]))
    return round(-b, 1), round(-a, 1), round(roll, 1)


def facing_camera(yaw: float, pitch: float) -> bool:
    """Whether a head pose counts as facing the camera (``FACING_MAX_YAW_DEG``, ``FACING_MAX_PITCH_DEG``;
    degrees)."""
    return abs(yaw) <= FACING_MAX_YAW_DEG and abs(pitch) <= FACING_MAX_PITCH_DEG
