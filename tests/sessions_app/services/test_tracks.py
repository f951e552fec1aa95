"""Tracks of uploaded videos (``sessions_app.services.tracks``): the tracker runs over the stored faces once the
last frame has its outcome; real PostgreSQL and the real Redis cache."""

from __future__ import annotations

import pytest

from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import Face, TimelineBucket
from sessions_app.services.frames import frame_error_record
from sessions_app.services.tracks import upload_outcome_count, upload_pending_set, upload_tracks_assign
from tests.helpers import face_result, store_frame

pytestmark = pytest.mark.django_db


def _video_frames(session, source="upload:1", frames=6, order=None):
    """Two faces drifting right 4 px per frame, 0.5 s apart; the left one's label flips on frame 3 (a blip)."""
    for n in order or range(frames):
        left = face_result("sad" if n == 3 else "happy", box=(40 + 4 * n, 60, 50, 50))
        right = face_result("neutral", box=(300 + 4 * n, 60, 50, 50))
        store_frame(session, 0.5 * n, [left, right], sequence=n, source=source)


def test_video_faces_get_one_track_per_person_and_smoothed_probabilities(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    _video_frames(s, order=[5, 0, 3, 1, 4, 2])  # workers finish in any order
    before = selectors.session_timeline(session=s, bucket_s=5)[0]
    assert before["people"] == 12 and before["probabilities"] is not None  # untracked: every observation counts
    assert upload_tracks_assign(session_id=s.pk, source="upload:1") == 2
    faces = list(Face.objects.filter(session=s).order_by("frame__sequence", "x"))
    assert [f.track for f in faces] == [1, 2] * 6
    blip = faces[6]  # the left face in frame 3: raw says sad, the track's average still says happy
    assert (blip.label, blip.smoothed_label) == ("sad", "happy")
    assert blip.smoothed_probabilities[LABELS.index("sad")] == pytest.approx(0.3 * 0.7 + 0.7 * 0.05, abs=1e-6)
    # the timeline reads the smoothed values and counts two people, which the privacy rule now hides
    sums = TimelineBucket.objects.filter(session=s).order_by("second")
    assert sum(b.sum_p_sad for b in sums) == pytest.approx(sum(f.smoothed_probabilities[4] for f in faces), abs=1e-6)
    after = selectors.session_timeline(session=s, bucket_s=5)[0]
    assert (after["people"], after["probabilities"], after["dominant"]) == (2, None, None)
    assert upload_tracks_assign(session_id=s.pk, source="upload:1") == 0  # idempotent
    assert [f.track for f in Face.objects.filter(session=s).order_by("frame__sequence", "x")] == [1, 2] * 6


def test_the_last_outcome_of_a_video_assigns_its_tracks_errors_included(teacher, make_session):
    s = make_session(teacher)
    upload_pending_set(session_id=s.pk, source="upload:2", frames=5)
    for n in range(4):
        _video_frames(s, source="upload:2", order=[n])
        upload_outcome_count(session_id=s.pk, source="upload:2")
    assert not Face.objects.filter(session=s, track__isnull=False).exists()  # one frame still to come
    frame_error_record(session_id=s.pk, source="upload:2", sequence=4, code="undecodable", detail="bad bytes")
    assert set(Face.objects.filter(session=s).values_list("track", flat=True)) == {1, 2}


def test_camera_sources_photos_and_lost_counts_are_left_alone(teacher, make_session):
    s = make_session(teacher)
    _video_frames(s, source="upload:3", frames=2)  # no pending count: a photo, or the cache lost it
    upload_outcome_count(session_id=s.pk, source="upload:3")
    store_frame(s, 0.5, [face_result("happy")], sequence=0, source="camera:x")
    upload_outcome_count(session_id=s.pk, source="camera:x")
    assert not Face.objects.filter(session=s, track__isnull=False).exists()
