"""Session selectors (``sessions_app.selectors``): who sees which session, timeline, distribution, summary and
faces, on real PostgreSQL; the timeline and faces also against the hand-computed fixture session."""

from __future__ import annotations

import datetime as dt

import pytest

from inference.labels import LABELS, VALENCE
from sessions_app import selectors
from sessions_app.models import EmotionSession
from tests.helpers import EXPECTED_TIMELINE_5, EXPECTED_TIMELINE_10, assert_timeline_equal, face_result, store_frame

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]


def test_teachers_see_only_their_own_sessions_staff_see_all_and_only_owners_stream(
    teacher, other_teacher, staff_user, make_session
):
    mine, theirs = make_session(teacher), make_session(other_teacher)
    assert list(selectors.session_list_for_user(user=teacher)) == [mine]
    assert set(selectors.session_list_for_user(user=staff_user)) == {mine, theirs}
    assert selectors.session_get_for_user(user=teacher, session_id=mine.pk) == mine
    assert selectors.session_get_for_user(user=staff_user, session_id=mine.pk) == mine
    for bad in (theirs.pk, 999999, "abc", None):
        with pytest.raises(EmotionSession.DoesNotExist):
            selectors.session_get_for_user(user=teacher, session_id=bad)
    from django.contrib.auth.models import AnonymousUser

    assert not selectors.session_list_for_user(user=AnonymousUser()).exists()
    assert selectors.session_can_stream(user=teacher, session=mine)
    assert not selectors.session_can_stream(user=staff_user, session=mine)


def test_classroom_cameras_look_for_faces_from_the_classroom_size_and_crowd_cameras_for_every_face(
    teacher, make_session, settings
):
    classroom, crowd = make_session(teacher), make_session(teacher, kind="crowd")
    assert settings.FER_CLASSROOM_MIN_FACE_PX == 24
    assert selectors.session_min_face_px(session=classroom) == 24
    assert selectors.session_min_face_px(session=crowd) is None
    settings.FER_CLASSROOM_MIN_FACE_PX = 0  # off: classrooms too look for every face
    assert selectors.session_min_face_px(session=classroom) is None


def test_timeline_distribution_and_summary_follow_the_min_faces_rule(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    store_frame(s, 0.2, [face_result("happy")] * 2, sequence=0)
    store_frame(s, 1.5, [face_result("happy"), face_result("sad")], sequence=1)
    store_frame(s, 4.99, [], sequence=2)
    store_frame(s, 5.0, [face_result("sad")], sequence=3)  # bucket [5,10): 1 face < 3 -> no aggregates
    store_frame(s, 12.0, [face_result("neutral")] * 3, sequence=4)
    tl = selectors.session_timeline(session=s, bucket_s=5)
    assert [(b["start_s"], b["end_s"], b["frames"], b["faces"]) for b in tl] == [
        (0, 5, 3, 4),
        (5, 10, 1, 1),
        (10, 15, 1, 3),
    ]
    first = tl[0]
    assert first["mean_face_count"] == pytest.approx(4 / 3, abs=1e-3)
    assert first["probabilities"]["happy"] == pytest.approx((3 * 0.7 + 0.05) / 4)
    assert first["probabilities"]["sad"] == pytest.approx((0.7 + 3 * 0.05) / 4)
    assert first["dominant"] == "happy"
    means = [first["probabilities"][lb] for lb in LABELS]
    assert first["valence"] == pytest.approx(sum(m * v for m, v in zip(means, VALENCE, strict=True)), abs=1e-5)
    assert tl[1]["probabilities"] is None and tl[1]["dominant"] is None and tl[1]["valence"] is None
    assert tl[2]["dominant"] == "neutral"
    one_s = selectors.session_timeline(session=s, bucket_s=1)
    assert [b["start_s"] for b in one_s] == [0, 1, 4, 5, 12]
    with pytest.raises(ValueError):
        selectors.session_timeline(session=s, bucket_s=0)
    dist = selectors.session_distribution(session=s)
    assert dist["faces"] == 8 and dist["dominant"] == "happy"
    assert sum(dist["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    summary = selectors.session_summary(session=s)
    assert summary["frames"] == 5 and summary["faces"] == 8 and summary["frame_span_s"] == pytest.approx(11.8)


def test_summary_duration_is_the_sessions_wall_clock_duration(teacher, make_session):
    """Duration = session start to end (or to now while running), not the span between the first and last frame:
    a 40 s session with one frame lasted 40 s, not 0 s."""
    s = make_session(teacher)
    store_frame(s, 3.0, [face_result("happy")], sequence=0)
    now = s.created_at + dt.timedelta(seconds=25)
    running = selectors.session_summary(session=s, now=now)
    assert running["duration_s"] == pytest.approx(25.0) and running["frame_span_s"] == 0.0
    EmotionSession.objects.filter(pk=s.pk).update(status="ended", ended_at=s.created_at + dt.timedelta(seconds=40))
    s.refresh_from_db()
    ended = selectors.session_summary(session=s, now=now + dt.timedelta(hours=1))
    assert ended["duration_s"] == pytest.approx(40.0) and ended["frames"] == 1
    assert selectors.session_duration_s(session=s) == pytest.approx(40.0)


def test_distribution_is_hidden_below_min_faces(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    assert selectors.session_distribution(session=s) == {
        "faces": 0,
        "people": 0,
        "probabilities": None,
        "dominant": None,
    }
    store_frame(s, 0.0, [face_result("fear")] * 2, sequence=0)
    assert selectors.session_distribution(session=s)["probabilities"] is None


def test_timeline_matches_hand_computation(fixture_session):
    assert_timeline_equal(selectors.session_timeline(session=fixture_session, bucket_s=5), EXPECTED_TIMELINE_5)
    assert_timeline_equal(selectors.session_timeline(session=fixture_session, bucket_s=10), EXPECTED_TIMELINE_10)


def test_session_faces_are_filtered_by_time_range(fixture_session):
    def offsets(**kwargs):
        return [face.frame.offset_s for face in selectors.session_faces(session=fixture_session, **kwargs)]

    everything = offsets()
    assert len(everything) == 24 and everything == sorted(everything)
    assert offsets(from_s=5, to_s=11) == [5.0] * 3 + [7.5] * 4  # from_s inclusive, to_s exclusive
    assert offsets(from_s=21) == [21.0] * 3
    assert offsets(to_s=0.5) == []
    assert offsets(from_s=0, to_s=0.5000001) == [0.5] * 3


def test_one_person_alone_is_one_person_however_many_frames_and_three_tracks_are_shown(teacher, make_session, settings):
    """The privacy rule counts distinct people (anonymous tracks), not observations: one tracked face over 10 frames
    of a 5 s bucket stays hidden; three tracks in the next bucket are shown. People seen and their dwell come from
    the same tracks."""
    from tests.helpers import face_result, store_frame

    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    for n in range(10):  # 0.0 .. 4.5 s: one person
        store_frame(s, n * 0.5, [face_result("happy") | {"track": 1}], sequence=n)
    for n in range(10, 14):  # 5.0 .. 6.5 s: three people
        faces = [face_result("sad", box=(10 + 50 * t, 20, 30, 40)) | {"track": t} for t in (1, 2, 3)]
        store_frame(s, n * 0.5, faces, sequence=n)
    first, second = selectors.session_timeline(session=s, bucket_s=5)
    assert (first["faces"], first["people"], first["probabilities"], first["dominant"]) == (10, 1, None, None)
    assert (second["faces"], second["people"], second["dominant"]) == (12, 3, "sad")
    people = selectors.session_people(session=s)
    assert (people["people"], people["tracks"]) == (3, 3)
    assert people["dwell_s"] == {"median": 1.5, "mean": pytest.approx((6.5 + 1.5 + 1.5) / 3, abs=1e-3), "max": 6.5}
    assert selectors.session_distribution(session=s)["people"] == 3


def _posed(label, track, yaw, pitch=0.0, box_x=10):
    return face_result(label, box=(box_x, 20, 40, 40)) | {
        "track": track,
        "head_pose": {"yaw": yaw, "pitch": pitch, "roll": 0.0},
    }


def test_attention_is_the_share_of_people_facing_the_camera_each_person_counted_once(teacher, make_session, settings):
    """Bucket 0-5 s: track 1 faces the camera in all 8 frames, track 2 in 2 of 8 (yaw 50 in the others), track 3
    looks down (pitch -40) throughout: (1 + 0.25 + 0) / 3 people. Observations alone would say 10 / 24."""
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    for n in range(8):
        faces = [
            _posed("happy", 1, yaw=-12.0, box_x=10),
            _posed("happy", 2, yaw=5.0 if n < 2 else 50.0, box_x=100),
            _posed("happy", 3, yaw=0.0, pitch=-40.0, box_x=200),
        ]
        store_frame(s, n * 0.5, faces, sequence=n)
    (bucket,) = selectors.session_timeline(session=s, bucket_s=5)
    assert bucket["people_posed"] == 3
    assert bucket["attention"] == pytest.approx((1 + 0.25 + 0) / 3, abs=1e-6)
    assert selectors.session_attention(session=s) == {"attention": pytest.approx(1.25 / 3, abs=1e-6), "people_posed": 3}


def test_attention_stays_hidden_below_min_people_and_ignores_faces_without_pose(teacher, make_session, settings):
    """Two posed people (below the rule of 3) and faces without a head pose (too small, or Haar) give no share."""
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    for n in range(4):
        faces = [
            _posed("sad", 1, yaw=0.0, box_x=10),
            _posed("sad", 2, yaw=0.0, box_x=100),
            face_result("sad", box=(200, 20, 40, 40)) | {"track": 3},  # no head pose
            face_result("sad", box=(300, 20, 16, 16)) | {"track": 4, "too_small": True},
        ]
        store_frame(s, n * 0.5, faces, sequence=n)
    (bucket,) = selectors.session_timeline(session=s, bucket_s=5)
    assert (bucket["people"], bucket["people_posed"], bucket["attention"]) == (3, 2, None)
    assert bucket["dominant"] == "sad"  # the emotion aggregates have their 3 people
    assert selectors.session_attention(session=s) == {"attention": None, "people_posed": 2}


def test_untracked_faces_count_one_person_each_for_attention(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 3
    s = make_session(teacher)
    faces = [
        face_result("neutral", box=(10 + 60 * k, 20, 40, 40)) | {"head_pose": {"yaw": yaw, "pitch": 0.0, "roll": 0.0}}
        for k, yaw in enumerate((0.0, 10.0, -29.0, 45.0))
    ]
    store_frame(s, 1.0, faces, sequence=0, source="upload:1")
    (bucket,) = selectors.session_timeline(session=s, bucket_s=5)
    assert (bucket["people_posed"], bucket["attention"]) == (4, 0.75)


def test_timeline_arousal_weights_the_mean_probabilities_by_russells_coordinates(teacher, make_session, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 1
    s = make_session(teacher)
    p = {label: 0.0 for label in LABELS} | {"angry": 0.5, "sad": 0.5}
    store_frame(s, 0.5, [face_result("angry", p=p)], sequence=0)
    (bucket,) = selectors.session_timeline(session=s, bucket_s=5)
    assert bucket["arousal"] == pytest.approx(0.5 * 0.8 + 0.5 * -0.4)


def test_frames_get_returns_only_the_stored_frames_asked_for_with_their_faces_in_two_queries(
    teacher, make_session, django_assert_num_queries
):
    s = make_session(teacher)
    store_frame(s, 0.5, [face_result("happy"), face_result("sad")], sequence=3)
    store_frame(s, 1.0, [], sequence=4)
    store_frame(s, 1.5, [face_result("angry")], sequence=5)
    store_frame(s, 1.5, [face_result("fear")], sequence=3, source="camera:other")
    with django_assert_num_queries(2):
        got = selectors.frames_get(session_id=s.pk, source="camera:t", sequences=[3, 4, 9])
    assert sorted(got) == [3, 4]  # 9 was never stored, 5 not asked for
    frame, faces = got[3]
    assert (frame.source, frame.sequence, [f.label for f in faces]) == ("camera:t", 3, ["happy", "sad"])
    assert got[4][1] == []
    with django_assert_num_queries(0):
        assert selectors.frames_get(session_id=s.pk, source="camera:t", sequences=[]) == {}
