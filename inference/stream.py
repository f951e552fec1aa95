"""Streaming analysis: run the full detector on keyframes, follow the faces already found in between.

A web worker is stateless between frames (consecutive frames of one camera may reach different processes), so the
per-stream state is a small ``StreamState`` of plain JSON numbers (frame counters, the tracked boxes and a
16-number scene signature; no pixels, no embeddings) that the worker keeps, e.g. in Redis, between calls::

    analyzer = StreamAnalyzer(EmotionRecognizer.default())          # once per worker process
    state = StreamState.from_dict(json.loads(redis.get(key))) if redis.exists(key) else None
    faces, state = analyzer.analyze(frame, state)
    redis.set(key, json.dumps(state.to_dict()))

A frame is a keyframe (full detection, ``EmotionRecognizer.analyze``) when there is no state yet, every
``keyframe_every`` frames, when the frame size changed, when the scene signature moved by more than
``scene_change``, or when the follow stage lost more than ``lost_tolerance`` of the faces (any face with fewer
than 20; a few flickering faces of a crowd are left out until the next keyframe). Otherwise only the detector's
follow stage runs (``BlazeFaceDetector.follow``: one small window per known face). After a keyframe that the
period did not call for (a stream's first frame, a cut, a new frame size, a lost face), the next periodic keyframe
comes after a random number of frames between half the
period and the period: cameras that start or cut together (a whole school at nine, a load test) would otherwise run
their full detections in the same instant forever after, a burst of work that queues every frame behind it.
Trade-off: a face that enters between keyframes is found at the next keyframe, at
most ``keyframe_every - 1`` frames late (1 s at 30 frames per second with the default 30); a smaller
``keyframe_every`` finds newcomers sooner for more full detections. Pairing boxes across frames is
``inference.boxes.associate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from inference.boxes import FollowingDetector, KeypointDetector, associate, suppress_contained
from inference.classifier import to_grey
from inference.recognizer import EmotionRecognizer, FaceResult

STATE_VERSION = 1
SIGNATURE_GRID = 4  #: the scene signature is the mean grey level of each cell of a 4x4 grid


def scene_signature(grey: np.ndarray) -> list[float]:
    """Tiny description of a frame: mean grey level (0..255) of each cell of a ``SIGNATURE_GRID`` square grid,
    row-major, rounded to 0.1 (16 numbers)."""
    cells = cv2.resize(grey, (SIGNATURE_GRID, SIGNATURE_GRID), interpolation=cv2.INTER_AREA).astype(np.float64)
    return [round(float(v), 1) for v in cells.ravel()]


@dataclass
class StreamState:
    """What a stream carries from one frame to the next (small, JSON-serialisable).

    Attributes:
        frame: frames analysed so far in this stream.
        since_keyframe: frames analysed since the last keyframe (0 on a keyframe).
        size: ``(width, height)`` of the last frame, pixels.
        boxes: the faces of the last frame, ``[x, y, w, h]`` pixel lists (inside that frame).
        signature: the last keyframe's ``scene_signature``.
        keyframe: whether the last frame was a keyframe.
        period: frames from the last keyframe to the next periodic one (0: the analyzer's ``keyframe_every``).
    """

    frame: int = 0
    since_keyframe: int = 0
    size: tuple[int, int] = (0, 0)
    boxes: list[list[int]] = field(default_factory=list)
    signature: list[float] = field(default_factory=list)
    keyframe: bool = False
    period: int = 0

    def to_dict(self) -> dict:
        """``{"v": 1, "frame", "since_keyframe", "size": [w, h], "boxes": [[x, y, w, h], ...], "signature": [16
        floats], "keyframe", "period"}``: plain JSON numbers (about 20 bytes per face plus ~160)."""
        return {
            "v": STATE_VERSION,
            "frame": int(self.frame),
            "since_keyframe": int(self.since_keyframe),
            "size": [int(v) for v in self.size],
            "boxes": [[int(v) for v in box] for box in self.boxes],
            "signature": [float(v) for v in self.signature],
            "keyframe": bool(self.keyframe),
            "period": int(self.period),
        }

    @classmethod
    def from_dict(cls, data: dict) -> StreamState:
        """The state of ``to_dict()``.

        Raises:
            ValueError: not a state of this version (wrong keys, types or shapes).
        """
        try:
            if data.get("v") != STATE_VERSION:
                raise ValueError(f"stream state version {data.get('v')!r}, expected {STATE_VERSION}")
            boxes = [[int(v) for v in box] for box in data["boxes"]]
            if any(len(box) != 4 for box in boxes):
                raise ValueError("stream state boxes must be [x, y, w, h]")
            width, height = (int(v) for v in data["size"])
            signature = [float(v) for v in data["signature"]]
            if signature and len(signature) != SIGNATURE_GRID**2:
                raise ValueError(f"stream state signature must have {SIGNATURE_GRID**2} numbers")
            return cls(
                frame=int(data["frame"]),
                since_keyframe=int(data["since_keyframe"]),
                size=(width, height),
                boxes=boxes,
                signature=signature,
                keyframe=bool(data.get("keyframe", False)),
                period=int(data.get("period", 0)),  # absent in states written before staggering
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed stream state: {exc}") from exc


class StreamAnalyzer:
    """Emotion analysis of a stream of frames: full detection on keyframes, the follow stage in between.

    Args:
        recognizer: an ``EmotionRecognizer``; its detector needs a ``follow(image, boxes)`` method
            (``BlazeFaceDetector``) for the follow stage, otherwise every frame is a keyframe.
        keyframe_every: run the full detector at least every this many frames (1 = every frame).
        scene_change: a frame whose ``scene_signature`` differs from the last keyframe's by more than this mean
            absolute grey level (0..255) is a keyframe (a cut, a camera moved, lights switched).
        follow_threshold: face probability below which the follow stage counts a face as lost (which makes the
            frame a keyframe, see ``lost_tolerance``).
        lost_tolerance: the share of the followed faces that may be lost (or merged into another) without a
            keyframe: such faces are left out until the next keyframe finds them again. On the frame right after a
            keyframe, lost faces never make another one: a face the follow stage cannot find one frame after the
            detector found it is a detection at the edge of the detector's threshold (a printed face on a shirt, a
            poster: seen at one scale, lost at the next) more often than a face that left, and a keyframe for it
            would find it again and lose it again, a full detection on every other frame (measured on
            ``group_photos/ultralight_imgs_9.jpg`` at 640x480 with a 24-px smallest face: 38 % of the frames were
            keyframes instead of 21 %); it is left out until the next keyframe. With the default 0.05 any
            lost face of a frame of up to 19 makes a keyframe, as a classroom needs; in a crowd of 160 faces up to
            8 may flicker (small faces near the detectors' limit do, from frame to frame) without a full detection
            of the frame each time (measured on crowds/ultralight_imgs_25.jpg at 1280x720 with sensor noise: 0-2 of
            161 faces lost per followed frame; a keyframe costs 1.2-1.6 s of CPU there, a followed frame 0.6-0.7).
        stagger: after a keyframe the period did not call for, draw the next periodic one uniformly from
            ``ceil(keyframe_every / 2)`` to ``keyframe_every`` frames later (module docstring); ``False`` keeps
            every stream on the fixed period.
        seed: seed of the stagger's random generator (default 0: the same stream gives the same keyframes in every
            run, e.g. of ``inference track``; streams sharing an analyzer, as a worker's do, still draw different
            periods in turn; ``None``: fresh entropy).

    Raises:
        ValueError: ``keyframe_every`` below 1.
    """

    def __init__(
        self,
        recognizer: EmotionRecognizer,
        keyframe_every: int = 30,
        scene_change: float = 12.0,
        follow_threshold: float = 0.5,
        lost_tolerance: float = 0.05,
        stagger: bool = True,
        seed: int | None = 0,
    ):
        if keyframe_every < 1:
            raise ValueError(f"keyframe_every must be at least 1, got {keyframe_every}")
        self.recognizer = recognizer
        self.keyframe_every = int(keyframe_every)
        self.scene_change = float(scene_change)
        self.follow_threshold = float(follow_threshold)
        self.lost_tolerance = float(lost_tolerance)
        self.stagger = bool(stagger)
        self._rng = np.random.default_rng(seed)

    def periodic_keyframe_due(self, image: np.ndarray, state: StreamState | dict | None) -> bool:
        """Whether ``analyze(image, state)`` would run a full detection only because the keyframe period is over
        (not for a first frame, a new frame size or a scene cut; a lost face shows only while following). A caller
        that analyses one stream in several processes at once uses it to let one of them run that keyframe and
        the others ``analyze(..., defer_periodic=True)``. Costs a grey conversion only when the period is due.

        Raises:
            ValueError: a malformed ``state`` dict, or an unsupported image.
        """
        if isinstance(state, dict):
            state = StreamState.from_dict(state)
        if state is None or not self._period_due(state):
            return False
        grey = to_grey(image)
        height, width = grey.shape[:2]
        return self._may_follow(state, width, height, scene_signature(grey), defer_periodic=True)

    def analyze(
        self,
        image: np.ndarray,
        state: StreamState | dict | None = None,
        defer_periodic: bool = False,
        min_face_px: int | None = None,
    ) -> tuple[list[FaceResult], StreamState]:
        """Analyse the next frame of a stream.

        Args:
            image: the frame, BGR ``uint8 (H, W, 3)``, BGRA or grey (as ``EmotionRecognizer.analyze``).
            state: the state returned for the previous frame of this stream (a ``StreamState`` or its
                ``to_dict()``), or ``None`` for the first frame.
            defer_periodic: another process is running this stream's due periodic keyframe on a frame next to this
                one (``periodic_keyframe_due``): follow instead, and start the next period from this frame, so
                whichever of the two states is kept last does not ask for the keyframe again. Any other reason for
                a keyframe (a cut, a new size, lost faces) still runs one.
            min_face_px: smallest face side a keyframe looks for, px (``EmotionRecognizer.analyze``; ``None``: the
                detector's own); a classroom camera's faces are larger than a crowd's, and finding no faces under
                ~20 px makes its keyframes several times cheaper. Followed faces are followed whatever their size.

        Returns:
            ``(faces, new_state)``: one ``FaceResult`` per face, left to right (boxes always inside the frame),
            and the state to pass with the next frame.

        Raises:
            ValueError: unsupported image shape or dtype, or a malformed ``state`` dict.
        """
        if isinstance(state, dict):
            state = StreamState.from_dict(state)
        grey = to_grey(image)
        height, width = grey.shape[:2]
        signature = scene_signature(grey)
        followed = None
        if state is not None and self._may_follow(state, width, height, signature, defer_periodic):
            followed = self._follow(image, state.boxes, after_keyframe=state.keyframe)
        if followed is None:  # a keyframe: full detection
            faces = self.recognizer.analyze(image, min_face_px)
            since_keyframe, keyframe_signature = 0, signature
            period = self._next_period(state, width, height)
        else:  # followed faces: there is a state, which keeps its keyframe's signature and period
            assert state is not None
            faces = self.recognizer.classify(image, *followed)
            since_keyframe, keyframe_signature, period = state.since_keyframe + 1, state.signature, state.period
            if defer_periodic and self._period_due(state):  # the other process's keyframe starts the period
                since_keyframe, period = 0, self.keyframe_every
        new_state = StreamState(
            frame=(state.frame if state else 0) + 1,
            since_keyframe=since_keyframe,
            size=(width, height),
            boxes=[list(face.box) for face in faces],
            signature=keyframe_signature,
            keyframe=followed is None,
            period=period,
        )
        return faces, new_state

    def _period_due(self, state: StreamState) -> bool:
        """Whether the next frame of ``state``'s stream ends its keyframe interval (``state.period`` frames, or
        ``keyframe_every`` when the state has none)."""
        period = state.period if 1 <= state.period <= self.keyframe_every else self.keyframe_every
        return state.since_keyframe + 1 >= period

    def _next_period(self, state: StreamState | None, width: int, height: int) -> int:
        """The interval after a keyframe: the full period when the period called for it, else a staggered one."""
        periodic = state is not None and tuple(state.size) == (width, height) and self._period_due(state)
        if periodic or not self.stagger or self.keyframe_every == 1:
            return self.keyframe_every
        return int(self._rng.integers(-(-self.keyframe_every // 2), self.keyframe_every + 1))

    def _may_follow(
        self, state: StreamState, width: int, height: int, signature: list[float], defer_periodic: bool = False
    ) -> bool:
        """Whether this frame may skip full detection (see the class docstring; ``defer_periodic``: a due period
        does not call for one)."""
        if not isinstance(self.recognizer.detector, FollowingDetector) or tuple(state.size) != (width, height):
            return False
        if (self._period_due(state) and not defer_periodic) or len(state.signature) != len(signature):
            return False
        change = float(np.mean(np.abs(np.asarray(signature) - np.asarray(state.signature))))
        return change <= self.scene_change

    def _follow(
        self, image: np.ndarray, previous: list[list[int]], after_keyframe: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The tracked faces in ``image``, left to right, as ``(int32 (K, 4) boxes, float32 (K, 6, 2) keypoints or
        None)``, or ``None`` when more than ``lost_tolerance`` of them were lost (then run a keyframe); the lost
        faces of a frame within the tolerance, or of the frame right after a keyframe (``after_keyframe``), are
        left out."""
        if not previous:
            return np.zeros((0, 4), np.int32), None
        detector = self.recognizer.detector
        assert isinstance(detector, FollowingDetector)  # _may_follow lets only such detectors through
        prior = np.asarray(previous, np.float64)
        keypoints = None
        if isinstance(detector, KeypointDetector):
            boxes, scores, keypoints = detector.follow_with_keypoints(image, prior, self.follow_threshold)
        else:
            boxes, scores = detector.follow(image, prior, self.follow_threshold)
        kept = np.flatnonzero(scores >= self.follow_threshold)
        # two tracks that converged on one face: keep one, and count the other as lost
        kept = np.sort(kept[suppress_contained(boxes[kept].astype(np.float64), scores[kept], 0.5)])
        if not after_keyframe and len(boxes) - len(kept) > self.lost_tolerance * len(boxes):
            return None
        boxes = boxes[kept]
        if len(associate(prior[kept], boxes, min_iou=0.05)) < len(boxes):
            return None
        order = np.argsort(boxes[:, 0], kind="stable")
        return boxes[order], None if keypoints is None else keypoints[kept][order]
