"""Report queries (``sessions_app.reports.selectors``): the session report and the overview rows against the
hand-computed fixture session."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_app import selectors
from sessions_app.reports import computations
from sessions_app.reports import selectors as reports
from sessions_app.services.frames import frame_result_store
from tests.helpers import EXPECTED_DISTRIBUTION, EXPECTED_TIMELINE_5, assert_timeline_equal, session_with_frames

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]


def test_report_numbers_match_the_hand_computation(fixture_session):
    report = reports.session_report(session=fixture_session, bucket_s=5)
    assert report.duration_s == 25.0
    assert (report.frames_processed, report.frames_dropped, report.frames_rejected) == (9, 2, 1)
    assert report.frames_stored == 9
    assert report.faces == 24
    assert report.mean_face_count == pytest.approx(24 / 9, abs=1e-4)
    assert report.max_face_count == 4
    assert report.distribution["dominant"] == "neutral"
    assert report.distribution["probabilities"] == pytest.approx(EXPECTED_DISTRIBUTION["probabilities"], abs=1e-6)
    assert_timeline_equal(report.timeline, EXPECTED_TIMELINE_5)


def test_segments_match_the_hand_computation(fixture_session):
    report = reports.session_report(session=fixture_session, bucket_s=5)
    assert [(s["start_s"], s["end_s"], s["dominant"]) for s in report.segments] == [
        (0, 5, "neutral"),
        (5, 10, "happy"),
        (10, 15, None),
        (15, 20, "sad"),
        (20, 25, "surprise"),
    ]
    # 10-second buckets: neutral, sad, surprise
    report = reports.session_report(session=fixture_session, bucket_s=10)
    assert [(s["start_s"], s["end_s"], s["dominant"]) for s in report.segments] == [
        (0, 10, "neutral"),
        (10, 20, "sad"),
        (20, 30, "surprise"),
    ]


def test_largest_changes_match_the_hand_computation(fixture_session):
    changes = reports.session_report(session=fixture_session, bucket_s=5).changes
    # [15,20) -> [20,25): TV = 0.5 * (0.5/6 + 3.5/6 + (0.2 - 0.1/6) + 1.9/6 + 0.2 + 0.6) = 59/60
    # [5,10) -> [15,20) (the hidden bucket in between is skipped): TV = 0.5 * (0.5/6 + 3.5/6 + 3.5/6 + 0.5/6) = 2/3
    # [0,5) -> [5,10): TV = 0.6 - 1.3/6 = 0.38333
    assert [(c["at_s"], c["from_s"]) for c in changes] == [(20, 15), (15, 5), (5, 0)]
    assert [c["change"] for c in changes] == pytest.approx([59 / 60, 2 / 3, 0.6 - 1.3 / 6], abs=1e-5)
    top = changes[0]
    assert (top["rose"], top["fell"]) == ("surprise", "sad")
    assert top["rose_by"] == pytest.approx(0.6, abs=1e-6)
    assert top["fell_by"] == pytest.approx(3.5 / 6, abs=1e-6)
    assert (top["dominant_before"], top["dominant_after"]) == ("sad", "surprise")
    assert (changes[2]["rose"], changes[2]["fell"]) == ("happy", "neutral")


def test_summary_describes_the_session_in_sentences(fixture_session):
    summary = reports.session_report(session=fixture_session, bucket_s=5).summary
    assert summary == [
        'The classroom session "Fixture class" lasted 25 s.',
        "9 frames were analysed and 2 were dropped (18% of the frames).",
        "On average 2.7 faces were visible per frame, at most 4.",
        "Across 24 face observations the most common expression was neutral (mean probability 41%), "
        "followed by happy (29%).",
        "Over the analysed time the dominant expression was neutral for 20%, happy for 20%, sad for 20%, "
        "surprise for 20%.",
        "5 s of the timeline had fewer than 3 faces per 5-second bucket and is not described.",
        "The largest change came at 20 s, when surprise rose by 60 percentage points and sad fell by 58.",
    ]


def test_too_few_faces_hides_every_emotion_aggregate(teacher_a):
    session = session_with_frames(teacher_a, name="Two faces", frames=[(1.0, "HS")])
    report = reports.session_report(session=session)
    assert report.distribution == {"faces": 2, "people": 2, "probabilities": None, "dominant": None}
    assert all(item["probabilities"] is None and item["dominant"] is None for item in report.timeline)
    assert report.changes == []
    assert [s["dominant"] for s in report.segments] == [None]
    assert "fewer than 3, so no emotion figures are shown" in " ".join(report.summary)
    assert "happy" not in " ".join(report.summary)


def test_min_faces_is_a_setting(teacher_a, settings):
    settings.FER_MIN_FACES_FOR_AGGREGATES = 2
    session = session_with_frames(teacher_a, name="Two faces", frames=[(1.0, "HH")])
    report = reports.session_report(session=session)
    assert report.distribution["dominant"] == "happy"
    assert report.min_faces == 2


def test_an_empty_session_has_an_empty_report(teacher_a):
    session = session_with_frames(teacher_a, name="Empty", frames=[], ended_after_s=3)
    report = reports.session_report(session=session)
    assert (report.frames_stored, report.faces, report.mean_face_count, report.max_face_count) == (0, 0, None, None)
    assert report.timeline == [] and report.segments == [] and report.changes == []
    assert report.summary[0] == 'The classroom session "Empty" lasted 3 s.'


def test_report_refuses_a_bucket_out_of_range(fixture_session):
    with pytest.raises(ValueError):
        reports.session_report(session=fixture_session, bucket_s=0)
    with pytest.raises(ValueError):
        reports.session_report(session=fixture_session, bucket_s=computations.MAX_BUCKET_S + 1)


def test_report_of_a_very_long_session_stays_bounded(teacher_a):
    """A session left running for 200 hours: the automatic timeline has at most 120 points."""
    frames = [(h * 3600.0 + 1, "HHH") for h in range(0, 200, 7)]
    session = session_with_frames(teacher_a, name="Forgotten", frames=frames, ended_after_s=200 * 3600)
    report = reports.session_report(session=session)
    assert report.bucket_s == 7200
    assert len(report.timeline) <= computations.TARGET_POINTS
    with pytest.raises(ValueError, match="at least 200 seconds"):
        reports.session_report(session=session, bucket_s=60)  # 12000 points


def test_overview_dominant_is_computed_in_the_database_like_the_report(teacher_a, teacher_b, fixture_session):
    others = [
        session_with_frames(teacher_a, name="happy", frames=[(1.0, "HHH"), (2.0, "N")]),
        session_with_frames(teacher_b, name="sad", frames=[(1.0, "SSS")]),
        session_with_frames(teacher_a, name="two faces", frames=[(1.0, "HH")]),
        session_with_frames(teacher_a, name="no frames", frames=[]),
        session_with_frames(teacher_a, name="tie", frames=[]),
    ]
    tie = others[-1]  # three faces, each half sad and half happy: the first label in FER2013 order wins
    frame_result_store(
        session=tie,
        source="camera",
        sequence=0,
        captured_at=tie.created_at + dt.timedelta(seconds=1),
        width=640,
        height=480,
        processing_ms=10.0,
        faces=[
            {"box": (i * 60, 0, 50, 50), "label": "happy", "score": 0.5, "probabilities": (0, 0, 0, 0.5, 0.5, 0, 0)}
            for i in range(3)
        ],
        publish=False,
    )
    for session in [fixture_session, *others]:
        annotated = reports.overview_queryset(user=session.owner).get(pk=session.pk)
        assert annotated.dominant == selectors.session_distribution(session=session)["dominant"], session.name
    rows = {
        row["session"].name: row for row in reports.overview_rows(sessions=reports.overview_sessions(user=teacher_a))
    }
    assert rows["Fixture class"]["dominant"] == "neutral"
    assert rows["Fixture class"]["mean_faces"] == pytest.approx(24 / 9)
    assert rows["tie"]["dominant"] == "happy"  # first label in FER2013 order, as in the report
    assert rows["two faces"]["dominant"] is None and rows["no frames"]["dominant"] is None
    assert rows["no frames"]["mean_faces"] is None


def test_overview_rows_run_no_query_per_session(teacher_a):
    def queries_for_overview() -> int:
        with CaptureQueriesContext(connection) as captured:
            reports.overview_rows(sessions=list(reports.overview_sessions(user=teacher_a, sort="dominant")))
        return len(captured)

    session_with_frames(teacher_a, name="one", frames=[(1.0, "HHH")])
    few = queries_for_overview()
    for i in range(5):
        session_with_frames(teacher_a, name=f"more {i}", frames=[(1.0, "SSS"), (3.0, "NNN")])
    assert queries_for_overview() == few == 1


def test_overview_sessions_rejects_unknown_sort(teacher_a):
    with pytest.raises(ValueError):
        reports.overview_sessions(user=teacher_a, sort="password")
