"""Frame analysis, the body of the worker's Celery task (``sessions_app.services.analysis``): the recogniser as
settings say, its real output stored, its failures answered with ``frame.error``; on real PostgreSQL and the real
Redis channel layer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import Face, Frame, TimelineBucket
from sessions_app.services.frames import frame_analysis_record
from tests.helpers import face_result, listen, next_event, record_analysis, store_frame

pytestmark = pytest.mark.django_db


def test_worker_recognizer_is_served_as_settings_say(settings, monkeypatch):
    """The worker's recogniser takes flip TTA and the detector from settings (the one source of FER_* values)."""
    from inference.detector import HaarFaceDetector
    from sessions_app.services import analysis

    monkeypatch.setattr(analysis, "_recognizer", None)
    settings.FER_FLIP_TTA, settings.FER_DETECTOR = False, "haar"
    recognizer = analysis.recognizer_get()
    assert recognizer.classifier.flip_tta is False and isinstance(recognizer.detector, HaarFaceDetector)
    assert analysis.recognizer_get() is recognizer  # loaded once per process
    monkeypatch.setattr(analysis, "_recognizer", None)
    settings.FER_FLIP_TTA, settings.FER_DETECTOR = True, "blazeface"
    assert analysis.recognizer_get().classifier.flip_tta is True


def test_worker_serves_the_small_face_model_under_the_side_settings_give(settings, monkeypatch):
    from inference.classifier import default_model_path, default_small_face_model_path
    from sessions_app.services import analysis

    monkeypatch.setattr(analysis, "_recognizer", None)
    recognizer = analysis.recognizer_get()  # defaults: the shipped small-face model under 40 px, served like the rest
    small = recognizer.small_face_classifier
    assert small.model_path == default_small_face_model_path() and recognizer.small_face_side == 40
    assert small.tta_margin == recognizer.classifier.tta_margin == settings.FER_TTA_MARGIN
    monkeypatch.setattr(analysis, "_recognizer", None)
    settings.FER_SMALL_FACE_SIDE, settings.FER_SMALL_FACE_MODEL_PATH = 32, str(default_model_path())
    recognizer = analysis.recognizer_get()
    assert recognizer.small_face_classifier.model_path == default_model_path() and recognizer.small_face_side == 32
    monkeypatch.setattr(analysis, "_recognizer", None)
    settings.FER_SMALL_FACE_SIDE = 0
    assert analysis.recognizer_get().small_face_classifier is None


def test_real_recognizer_output_is_stored(teacher, make_session, group_photo):
    from sessions_app.services.analysis import recognizer_get

    path, count = group_photo
    image = cv2.imread(str(path))
    results = recognizer_get().analyze(image)
    s = make_session(teacher)
    frame = store_frame(s, 0.0, results, sequence=0)
    assert abs(frame.face_count - count) <= 1
    for f, r in zip(Face.objects.filter(frame=frame).order_by("id"), results, strict=True):
        assert f.box == tuple(r.box) and f.label == r.label
        assert np.allclose(f.probabilities, r.probabilities, atol=1e-6)


@pytest.mark.django_db(transaction=True)
def test_recognizer_exception_publishes_error_and_stores_nothing(teacher, make_session, group_photo, monkeypatch):
    """An exception inside ``analyze()`` answers the frame with ``frame.error`` (``analysis_failed``) at once, so the
    client's in-flight slot is freed; nothing is stored and the task returns normally (the worker lives on)."""
    import base64

    from sessions_app.services import analysis

    class Broken:
        """A recogniser whose every stage raises: full detection (``analyze``) and the streaming path (detector)."""

        def analyze(self, image, min_face_px=None):
            raise RuntimeError("onnxruntime exploded")

        @property
        def detector(self):
            raise RuntimeError("onnxruntime exploded")

        def classify(self, image, boxes):
            raise RuntimeError("onnxruntime exploded")

    s = make_session(teacher)
    layer, channel = listen(s.pk)
    monkeypatch.setattr(analysis, "recognizer_get", lambda: Broken())
    data = base64.b64encode(group_photo[0].read_bytes()).decode()
    analysis.frame_analyze(session_id=s.pk, source="camera:e", sequence=4, captured_at_ms=0.0, data_b64=data)
    ev = next_event(layer, channel)
    assert (ev["type"], ev["source"], ev["sequence"], ev["code"]) == ("frame.error", "camera:e", 4, "analysis_failed")
    assert "onnxruntime exploded" in ev["detail"]
    assert not Frame.objects.filter(session=s).exists() and not TimelineBucket.objects.filter(session=s).exists()
    assert selectors.session_counters(session_id=s.pk) == {"received": 0, "processed": 0, "dropped": 0, "rejected": 1}
    # malformed recogniser output: the transaction rolls back, a storage_failed error answers the frame
    assert record_analysis(s, 5, faces=[face_result("happy") | {"label": "bored"}]) is None
    ev = next_event(layer, channel)
    assert (ev["type"], ev["sequence"], ev["code"]) == ("frame.error", 5, "storage_failed")
    assert not Frame.objects.filter(session=s).exists()
    assert selectors.session_counters(session_id=s.pk)["rejected"] == 2
    # a frame of a deleted session is dropped quietly
    sid = s.pk
    s.delete()
    assert (
        frame_analysis_record(
            session_id=sid,
            source="camera:e",
            sequence=6,
            captured_at_ms=0.0,
            width=1,
            height=1,
            processing_ms=1.0,
            faces=[],
        )
        is None
    )


def test_two_frames_of_a_camera_at_once_run_its_periodic_keyframe_only_once(
    teacher, make_session, group_photo, settings, monkeypatch
):
    """When a camera's keyframe period is due and another worker holds the camera's keyframe claim (it is running
    that keyframe on the frame before), this frame follows instead and starts the next period; with no claim held
    a due frame runs the keyframe itself and releases its claim."""
    import base64

    from django.core.cache import cache

    from inference.imageio import decode_image
    from sessions_app.services import analysis

    settings.FER_STREAM_KEYFRAME_EVERY = 3
    monkeypatch.setattr(analysis, "_stream_analyzer", None)  # built again with this period
    photo = cv2.imread(str(group_photo[0]))
    jpeg = cv2.imencode(".jpg", cv2.resize(photo, (640, 427)))[1].tobytes()
    data, image = base64.b64encode(jpeg).decode(), decode_image(jpeg)
    s = make_session(teacher)
    key, claim = analysis.stream_state_key(s.pk, "camera:kc"), analysis.keyframe_claim_key(s.pk, "camera:kc")
    cache.delete_many([key, claim])
    sequence = 0

    def analyse() -> dict:
        nonlocal sequence
        analysis.frame_analyze(
            session_id=s.pk, source="camera:kc", sequence=sequence, captured_at_ms=0.0, data_b64=data
        )
        sequence += 1
        return cache.get(key)["stream"]

    def follow_until_due() -> None:
        for _ in range(3):
            if analysis.stream_analyzer_get().periodic_keyframe_due(image, cache.get(key)):
                return
            assert analyse()["keyframe"] is False
        raise AssertionError("the period never came due")

    assert analyse()["keyframe"] is True  # the first frame
    follow_until_due()
    assert cache.add(claim, 1, timeout=30)  # another worker is running this keyframe
    deferred = analyse()
    assert deferred["keyframe"] is False and deferred["since_keyframe"] == 0 and deferred["period"] == 3
    cache.delete(claim)
    assert [analyse()["keyframe"] for _ in range(3)] == [False, False, True]  # a full period, then the keyframe
    assert cache.get(claim) is None  # released by the worker that ran it
    assert Frame.objects.filter(session=s).count() == sequence


def test_camera_frames_follow_faces_between_keyframes_with_the_state_in_the_cache(
    teacher, make_session, group_photo, settings
):
    """Consecutive frames of one camera: the first is a keyframe (full detection), the next ones only follow the
    faces found, carrying a small numbers-only state in the shared cache; the faces stay the same."""
    import base64

    from django.core.cache import cache

    from sessions_app.services import analysis

    settings.FER_STREAM_KEYFRAME_EVERY = 8
    path, count = group_photo
    photo = cv2.imread(str(path))  # 500x334, letterboxed into a 640x480 webcam frame as live.js would send it
    frame = np.full((480, 640, 3), 128, np.uint8)
    scaled = cv2.resize(photo, (640, 427))
    frame[26 : 26 + 427] = scaled
    data = base64.b64encode(cv2.imencode(".jpg", frame)[1].tobytes()).decode()
    s = make_session(teacher)
    key = analysis.stream_state_key(s.pk, "camera:st")
    cache.delete(key)
    states = []
    for seq in range(3):
        analysis.frame_analyze(session_id=s.pk, source="camera:st", sequence=seq, captured_at_ms=0.0, data_b64=data)
        states.append(cache.get(key))
    streams = [st["stream"] for st in states]
    assert [st["keyframe"] for st in streams] == [True, False, False] and streams[-1]["frame"] == 3
    assert set(streams[-1]) == {"v", "frame", "since_keyframe", "size", "boxes", "signature", "keyframe", "period"}
    counts = list(Frame.objects.filter(session=s).order_by("sequence").values_list("face_count", flat=True))
    assert len(counts) == 3 and all(abs(c - count) <= 1 for c in counts) and len(set(counts)) == 1
    # every face keeps its anonymous track over the three frames, with smoothed probabilities stored beside the raw
    tracks = [
        sorted(Face.objects.filter(frame__session=s, frame__sequence=seq).values_list("track", flat=True))
        for seq in range(3)
    ]
    assert tracks[0] == tracks[1] == tracks[2] == list(range(1, counts[0] + 1))
    face = Face.objects.filter(frame__session=s, frame__sequence=2).first()
    assert face.smoothed_label in LABELS and abs(sum(face.smoothed_probabilities) - 1) < 1e-3
    # an upload frame is always analysed whole and keeps no state
    analysis.frame_analyze(session_id=s.pk, source="upload:1", sequence=0, captured_at_ms=0.0, data_b64=data)
    assert cache.get(analysis.stream_state_key(s.pk, "upload:1")) is None


def test_a_camera_frame_with_a_smallest_face_stores_only_faces_from_about_that_size(teacher, make_session):
    """The company photo (77 faces of 23-45 px in a 1280x720 frame) from two cameras: without a smallest face every
    face is stored; with 32 px (``min_face_px``, as a classroom session's cameras send it) only the larger ones,
    every one at least 0.8x that size."""
    import base64

    from inference.imageio import letterbox, read_image
    from sessions_app.services import analysis
    from tests.helpers import FACES_DIR

    frame = letterbox(read_image(FACES_DIR / "crowds" / "ultralight_imgs_26.jpg"), (1280, 720))
    data = base64.b64encode(cv2.imencode(".jpg", frame)[1].tobytes()).decode()
    s = make_session(teacher)
    analysis.frame_analyze(session_id=s.pk, source="camera:all", sequence=0, captured_at_ms=0.0, data_b64=data)
    analysis.frame_analyze(
        session_id=s.pk, source="camera:big", sequence=0, captured_at_ms=0.0, data_b64=data, min_face_px=32
    )
    every = Frame.objects.get(session=s, source="camera:all").face_count
    large = Face.objects.filter(frame__session=s, frame__source="camera:big")
    assert every >= 60 and 0 < large.count() < every / 2
    assert min(max(face.w, face.h) for face in large) >= 0.8 * 32
