"""Session reports (issue #4): headline numbers, emotion distribution, timeline, dominant-emotion segments, the
moments of largest change and a plain-language summary.

The pure functions (``dominant_segments``, ``largest_changes``, ``summary_text``, ``choose_bucket_s``) work on the
timeline items of ``selectors.session_timeline``; ``session_report`` gathers everything for one session from the
database. The read-side queries of the admin overview (``overview_sessions``, ``overview_rows``,
``overview_owner_names``) and of the API's per-face listing (``session_faces``) live here too, so the views stay
thin. Every emotion aggregate follows the privacy rule of the selectors: it is ``None`` (and shown as "too few
faces") when it describes fewer than ``settings.FER_MIN_FACES_FOR_AGGREGATES`` faces. Units: seconds of session
time (since ``EmotionSession.created_at``), probabilities in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings
from django.db.models import (
    Avg,
    Case,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Now, NullIf

from inference.labels import LABELS
from sessions_app import selectors
from sessions_app.models import SUM_FIELDS, EmotionSession, Face, Frame

#: Bucket sizes (seconds) the automatic report timeline (and the chart's tick spacing) chooses from; past the last
#: one, whole multiples of a day.
NICE_BUCKETS_S: tuple[int, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
#: Largest timeline bucket accepted from users (seconds); the automatic choice may be larger on very long sessions.
MAX_BUCKET_S = 3600
#: Number of timeline points the automatic bucket size aims at (at most).
TARGET_POINTS = 120
#: Most timeline points a user-chosen bucket may give for a report (page, PDF, API report): bounds the chart size.
MAX_POINTS = 3600


def choose_bucket_s(duration_s: float, *, target_points: int = TARGET_POINTS) -> int:
    """Smallest "nice" bucket (seconds) that splits ``duration_s`` seconds into at most ``target_points`` buckets.

    Chooses from ``NICE_BUCKETS_S``; past one day per bucket, the smallest whole number of days that fits, so the
    number of buckets ``ceil(duration_s / bucket)`` never exceeds ``target_points`` however long the session.
    Also used for the chart's tick spacing (with a small ``target_points``).
    """
    for bucket in NICE_BUCKETS_S:
        if duration_s / bucket <= target_points:
            return bucket
    day = 86400
    return day * math.ceil(duration_s / (target_points * day))


def min_bucket_s(duration_s: float) -> int:
    """Smallest bucket (seconds) a user may choose for a report of a ``duration_s``-second session: the one that
    gives at most ``MAX_POINTS`` timeline points (at least 1)."""
    return max(1, math.ceil(duration_s / MAX_POINTS))


def bucket_error(*, session: EmotionSession, bucket_s: int) -> str | None:
    """Why ``bucket_s`` (seconds, chosen by a user) cannot be used for the report of ``session``, or ``None``.

    Refused: outside 1..``MAX_BUCKET_S``, or so small that the timeline would have more than ``MAX_POINTS``
    points (the chart would not fit a page).
    """
    if not 1 <= bucket_s <= MAX_BUCKET_S:
        return f"The bucket must be between 1 and {MAX_BUCKET_S} seconds."
    smallest = min_bucket_s(selectors.session_duration_s(session=session))
    if bucket_s < smallest:
        return (
            f"This session is too long for {bucket_s}-second buckets: choose at least {smallest} seconds "
            f"(at most {MAX_POINTS} timeline points)."
        )
    return None


def dominant_segments(timeline: list[dict]) -> list[dict]:
    """Merge consecutive timeline buckets with the same dominant emotion into segments.

    Args:
        timeline: items of ``selectors.session_timeline`` (oldest first).
    Returns:
        ``[{"start_s", "end_s", "duration_s", "dominant": label | None, "buckets": int}]``; a segment breaks where
        the dominant label changes or where buckets without frames lie in between. ``dominant`` is ``None`` for
        stretches with too few faces for an aggregate.
    """
    segments: list[dict] = []
    for item in timeline:
        last = segments[-1] if segments else None
        if last is not None and last["dominant"] == item["dominant"] and last["end_s"] == item["start_s"]:
            last["end_s"] = item["end_s"]
            last["buckets"] += 1
        else:
            segments.append(
                {"start_s": item["start_s"], "end_s": item["end_s"], "dominant": item["dominant"], "buckets": 1}
            )
    for segment in segments:
        segment["duration_s"] = segment["end_s"] - segment["start_s"]
    return segments


def largest_changes(timeline: list[dict], *, limit: int = 3) -> list[dict]:
    """The moments where the emotion mix changed most between two consecutive buckets that both have aggregates.

    The size of a change is the total variation distance ``0.5 * sum(|p_after - p_before|)`` of the two mean
    probability vectors, in [0, 1] (1 = a complete swap of expressions).

    Args:
        timeline: items of ``selectors.session_timeline`` (oldest first).
        limit: how many moments to return.
    Returns:
        Up to ``limit`` dicts, largest first (ties: earlier first), zero changes left out: ``{"at_s", "from_s",
        "change", "rose": label, "rose_by": float, "fell": label, "fell_by": float (positive),
        "dominant_before", "dominant_after"}``; ``at_s`` is the start of the later bucket, ``from_s`` of the earlier.
    """
    with_aggregates = [item for item in timeline if item["probabilities"] is not None]
    moments = []
    for before, after in zip(with_aggregates, with_aggregates[1:], strict=False):
        deltas = {label: after["probabilities"][label] - before["probabilities"][label] for label in LABELS}
        change = 0.5 * sum(abs(d) for d in deltas.values())
        if change <= 1e-9:
            continue
        rose = max(LABELS, key=lambda label: deltas[label])
        fell = min(LABELS, key=lambda label: deltas[label])
        moments.append(
            {
                "at_s": after["start_s"],
                "from_s": before["start_s"],
                "change": round(change, 6),
                "rose": rose,
                "rose_by": round(deltas[rose], 6),
                "fell": fell,
                "fell_by": round(-deltas[fell], 6),
                "dominant_before": before["dominant"],
                "dominant_after": after["dominant"],
            }
        )
    moments.sort(key=lambda m: (-m["change"], m["at_s"]))
    return moments[:limit]


def format_duration(seconds: float) -> str:
    """Human-readable duration: ``"45 s"``, ``"12 min 5 s"``, ``"1 h 2 min"``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _percent(p: float) -> str:
    return f"{p * 100:.0f}%"


def summary_text(report: SessionReport) -> list[str]:
    """Plain-language summary of a report, one sentence per item, built only from numbers shown in the report."""
    min_faces = report.min_faces
    sentences = [
        f'The {report.session.get_kind_display().lower()} session "{report.session.name}" '
        f"{'lasted' if report.session.ended_at else 'has been running for'} {format_duration(report.duration_s)}."
    ]
    dropped_share = (
        f" ({_percent(report.frames_dropped / (report.frames_processed + report.frames_dropped))} of the frames)"
        if report.frames_dropped
        else ""
    )
    sentences.append(
        f"{report.frames_processed} frames were analysed and {report.frames_dropped} were dropped{dropped_share}."
    )
    if report.frames_stored:
        sentences.append(
            f"On average {report.mean_face_count:.1f} faces were visible per frame, at most {report.max_face_count}."
        )
    distribution = report.distribution
    if distribution["probabilities"] is None:
        sentences.append(
            f"Only {distribution['faces']} face observations were recorded, fewer than {min_faces}, so no emotion "
            "figures are shown."
        )
        return sentences
    ranked = sorted(LABELS, key=lambda label: -distribution["probabilities"][label])
    first, second = ranked[0], ranked[1]
    sentences.append(
        f"Across {distribution['faces']} face observations the most common expression was {first} "
        f"(mean probability {_percent(distribution['probabilities'][first])}), followed by {second} "
        f"({_percent(distribution['probabilities'][second])})."
    )
    shown = [s for s in report.segments if s["dominant"] is not None]
    total = sum(s["duration_s"] for s in report.segments)
    if shown and total:
        per_label: dict[str, int] = {}
        for segment in shown:
            per_label[segment["dominant"]] = per_label.get(segment["dominant"], 0) + segment["duration_s"]
        parts = [
            f"{label} for {_percent(seconds / total)}"
            for label, seconds in sorted(per_label.items(), key=lambda kv: -kv[1])
        ]
        sentences.append(f"Over the analysed time the dominant expression was {', '.join(parts)}.")
    hidden = sum(s["duration_s"] for s in report.segments if s["dominant"] is None)
    if hidden:
        sentences.append(
            f"{format_duration(hidden)} of the timeline had fewer than {min_faces} faces per "
            f"{report.bucket_s}-second bucket and is not described."
        )
    if report.changes:
        top = report.changes[0]
        sentences.append(
            f"The largest change came at {format_duration(top['at_s'])}, when {top['rose']} rose by "
            f"{top['rose_by'] * 100:.0f} percentage points and {top['fell']} fell by {top['fell_by'] * 100:.0f}."
        )
    return sentences


@dataclass
class SessionReport:
    """Everything a session report shows. Seconds, counts, probabilities in [0, 1]; emotion fields ``None`` when
    they would describe fewer than ``min_faces`` faces."""

    session: EmotionSession
    bucket_s: int
    min_faces: int
    duration_s: float
    frames_received: int
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    frames_stored: int
    faces: int
    mean_face_count: float | None
    max_face_count: int | None
    distribution: dict
    timeline: list[dict]
    segments: list[dict]
    changes: list[dict]
    summary: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready form (the session as its id and name)."""
        data = {k: v for k, v in self.__dict__.items() if k != "session"}
        data["session"] = {"id": self.session.pk, "name": self.session.name, "kind": self.session.kind}
        return data


def session_report(*, session: EmotionSession, bucket_s: int | None = None) -> SessionReport:
    """Compute the report of ``session``.

    Args:
        session: a session the caller may see (check visibility first with ``selectors.session_get_for_user``).
        bucket_s: timeline bucket in seconds (1..``MAX_BUCKET_S``, and at most ``MAX_POINTS`` points, see
            ``bucket_error``); ``None`` chooses one giving at most ``TARGET_POINTS`` points (may exceed
            ``MAX_BUCKET_S`` on sessions longer than 120 hours).
    Raises:
        ValueError: ``bucket_s`` refused by ``bucket_error`` (the message says why).
    """
    duration_s = selectors.session_duration_s(session=session)
    if bucket_s is None:
        bucket_s = choose_bucket_s(duration_s)
    else:
        error = bucket_error(session=session, bucket_s=bucket_s)
        if error:
            raise ValueError(error)
    frames = Frame.objects.filter(session=session).aggregate(
        n=Count("id"), mean=Avg("face_count"), max=Max("face_count")
    )
    timeline = selectors.session_timeline(session=session, bucket_s=bucket_s)
    distribution = selectors.session_distribution(session=session)
    report = SessionReport(
        session=session,
        bucket_s=bucket_s,
        min_faces=settings.FER_MIN_FACES_FOR_AGGREGATES,
        duration_s=round(duration_s, 3),
        frames_received=session.frames_received,
        frames_processed=session.frames_processed,
        frames_dropped=session.frames_dropped,
        frames_rejected=session.frames_rejected,
        frames_stored=frames["n"] or 0,
        faces=distribution["faces"],
        mean_face_count=round(frames["mean"], 4) if frames["mean"] is not None else None,
        max_face_count=frames["max"],
        distribution=distribution,
        timeline=timeline,
        segments=dominant_segments(timeline),
        changes=largest_changes(timeline),
    )
    report.summary = summary_text(report)
    return report


#: Overview sort keys -> annotated or model fields of ``overview_sessions``.
OVERVIEW_SORTS: dict[str, str] = {
    "date": "created_at",
    "owner": "owner__username",
    "kind": "kind",
    "duration": "duration",
    "mean_faces": "mean_faces",
    "dominant": "dominant",
    "name": "name",
}
#: Sort keys whose value may be NULL (no frames, too few faces): NULLs go last in both directions.
_NULLABLE_SORTS = {"mean_faces", "dominant"}


def _dominant_expression() -> Case:
    """SQL for the session's dominant emotion from the summed bucket probabilities (``psum_<label>``).

    Same rule as ``selectors.session_distribution``: the label with the largest mean probability (the first in
    ``LABELS`` order on ties), NULL with fewer than ``FER_MIN_FACES_FOR_AGGREGATES`` faces.
    """
    whens = [When(Q(n_faces__isnull=True) | Q(n_faces__lt=max(1, min_faces())), then=Value(None))]
    for label in LABELS:
        others = [other for other in LABELS if other != label]
        whens.append(When(Q(*(Q(**{f"psum_{label}__gte": F(f"psum_{other}")}) for other in others)), then=Value(label)))
    return Case(*whens, default=Value(None), output_field=CharField())


def overview_queryset(*, user) -> QuerySet[EmotionSession]:
    """Sessions visible to ``user`` annotated for the overview table, all in one query (no query per row).

    Annotations: ``n_frames`` / ``n_faces`` (stored frames and faces, from the 1-second timeline buckets; NULL
    without frames), ``mean_faces`` (faces per stored frame, NULL without frames), ``dominant`` (label or NULL,
    see ``_dominant_expression``) and ``duration`` (``ended_at`` or now, minus ``created_at``; a timedelta).
    """
    sums = {f"psum_{label}": Sum(f"buckets__{field}") for label, field in zip(LABELS, SUM_FIELDS, strict=True)}
    return (
        selectors.session_list_for_user(user=user)
        .annotate(n_frames=Sum("buckets__frames"), n_faces=Sum("buckets__faces"), **sums)
        .annotate(
            mean_faces=Cast("n_faces", FloatField()) / NullIf(Cast("n_frames", FloatField()), 0.0),
            dominant=_dominant_expression(),
            duration=ExpressionWrapper(Coalesce("ended_at", Now()) - F("created_at"), output_field=DurationField()),
        )
    )


def overview_sessions(
    *,
    user,
    q: str = "",
    kind: str = "",
    owner: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    sort: str = "-date",
) -> QuerySet[EmotionSession]:
    """The overview's sessions: visible to ``user``, filtered, annotated (``overview_queryset``) and sorted.

    Args:
        q: part of the session name or of the owner's username (case-insensitive); empty = no filter.
        kind: an ``EmotionSession.Kind`` value; empty = any.
        owner: exact owner username (only narrows what ``user`` may see anyway); empty = anyone.
        date_from, date_to: inclusive range of creation dates (server time zone); ``None`` = open.
        sort: a key of ``OVERVIEW_SORTS``, ``-`` prefixed for descending; ``mean_faces`` and ``dominant`` (label,
            alphabetical) put sessions without a value last in both directions; ties by newest id.
    Raises:
        ValueError: unknown ``sort`` key.
    """
    key = (sort or "-date").lstrip("-")
    if key not in OVERVIEW_SORTS:
        raise ValueError(f"unknown sort key {sort!r}")
    sessions = overview_queryset(user=user)
    if q:
        sessions = sessions.filter(Q(name__icontains=q) | Q(owner__username__icontains=q))
    if kind:
        sessions = sessions.filter(kind=kind)
    if owner:
        sessions = sessions.filter(owner__username=owner)
    if date_from:
        sessions = sessions.filter(created_at__date__gte=date_from)
    if date_to:
        sessions = sessions.filter(created_at__date__lte=date_to)
    descending = (sort or "-date").startswith("-")
    field = F(OVERVIEW_SORTS[key])
    if key in _NULLABLE_SORTS:
        order = field.desc(nulls_last=True) if descending else field.asc(nulls_last=True)
    else:
        order = field.desc() if descending else field.asc()
    return sessions.order_by(order, "-id")


def overview_rows(*, sessions) -> list[dict]:
    """Summary rows for the overview table, one per session of ``sessions`` (from ``overview_sessions``).

    Each row: ``{"session", "duration_s" (seconds), "mean_faces" (float | None), "dominant" (label | None)}``;
    ``dominant`` is ``None`` when the session has fewer than ``FER_MIN_FACES_FOR_AGGREGATES`` faces. Uses only the
    annotations, so it runs no query beyond fetching ``sessions`` (pass one page, not an unbounded queryset).
    """
    return [
        {
            "session": session,
            "duration_s": selectors.session_duration_s(session=session),
            "mean_faces": session.mean_faces,
            "dominant": session.dominant,
        }
        for session in sessions
    ]


def overview_owner_names(*, user) -> list[str]:
    """Usernames for the overview's owner filter: every user with a session for staff, nothing for teachers."""
    if not getattr(user, "is_staff", False):
        return []
    return list(EmotionSession.objects.order_by("owner__username").values_list("owner__username", flat=True).distinct())


def session_faces(*, session: EmotionSession, from_s: float | None = None, to_s: float | None = None):
    """Per-face results of ``session`` in session-time order (frame ``offset_s``, frame id, face id).

    Args:
        from_s: only faces of frames at or after this session time (seconds, inclusive); ``None`` = from the start.
        to_s: only faces of frames before this session time (seconds, exclusive); ``None`` = to the end.
    Returns:
        A ``Face`` queryset with ``frame`` selected (one query per page).
    """
    faces = Face.objects.filter(session=session).select_related("frame")
    if from_s is not None:
        faces = faces.filter(frame__offset_s__gte=from_s)
    if to_s is not None:
        faces = faces.filter(frame__offset_s__lt=to_s)
    return faces.order_by("frame__offset_s", "frame_id", "id")


def min_faces() -> int:
    """The privacy threshold: aggregates are shown only when they describe at least this many faces."""
    return settings.FER_MIN_FACES_FOR_AGGREGATES
