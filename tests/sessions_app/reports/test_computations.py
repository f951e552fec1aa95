"""Pure report computations (``sessions_app.reports.computations``): bucket choice, dominant segments, largest
changes, durations. No database."""

from __future__ import annotations

import math

import pytest

from inference.labels import LABELS
from sessions_app.reports.computations import choose_bucket_s, dominant_segments, format_duration, largest_changes


@pytest.mark.parametrize(
    ("duration", "bucket"),
    [
        (0, 1),
        (120, 1),
        (121, 2),
        (600, 5),
        (3600, 30),
        (8 * 3600, 300),
        (30 * 3600, 900),
        (200 * 3600, 7200),  # past 120 hours the bucket grows beyond an hour ...
        (10**7, 86400),
        (10**9, 97 * 86400),  # ... and past 120 days by whole days
    ],
)
def test_choose_bucket_grows_with_the_duration(duration, bucket):
    assert choose_bucket_s(duration) == bucket


@pytest.mark.parametrize("duration", [1, 119, 121, 3601, 30 * 3600, 121 * 3600, 10**6, 10**7, 10**8, 10**9 + 7])
@pytest.mark.parametrize("target", [6, 120])
def test_choose_bucket_bounds_the_number_of_points(duration, target):
    assert math.ceil(duration / choose_bucket_s(duration, target_points=target)) <= target


def test_dominant_segments_break_at_gaps():
    timeline = [
        {"start_s": 0, "end_s": 5, "dominant": "happy", "probabilities": {}},
        {"start_s": 5, "end_s": 10, "dominant": "happy", "probabilities": {}},
        {"start_s": 20, "end_s": 25, "dominant": "happy", "probabilities": {}},
    ]
    assert [(s["start_s"], s["end_s"], s["buckets"]) for s in dominant_segments(timeline)] == [(0, 10, 2), (20, 25, 1)]


def test_largest_changes_ignores_buckets_without_change():
    same = {"start_s": 0, "end_s": 5, "dominant": "happy", "probabilities": {label: 1 / 7 for label in LABELS}}
    assert largest_changes([same, {**same, "start_s": 5, "end_s": 10}]) == []


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59.6, "1 min"), (125, "2 min 5 s"), (3720, "1 h 2 min")])
def test_format_duration_uses_readable_units(seconds, text):
    assert format_duration(seconds) == text
