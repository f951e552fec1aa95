"""Read-side queries of reports: a session's full report, and the overview of sessions (filters, sorting, one
aggregate query for the whole table).

Emotion aggregates are ``None`` when they describe fewer than ``settings.FER_MIN_FACES_FOR_AGGREGATES`` faces.
Units: seconds of session time, probabilities in [0, 1].
"""

from __future__ import annotations

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
from sessions_app.models import SUM_FIELDS, EmotionSession, Frame
from sessions_app.reports.computations import (
    SessionReport,
    bucket_error,
    choose_bucket_s,
    dominant_segments,
    largest_changes,
    summary_text,
)


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
        people=selectors.session_people(session=session),
        attention=selectors.session_attention(session=session),
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

    Annotations: ``n_frames`` / ``n_faces`` / ``n_small`` (stored frames, faces read and faces too small to read,
    from the 1-second timeline buckets; NULL without frames), ``mean_faces`` (all faces per stored frame, NULL
    without frames), ``dominant`` (label or NULL,
    see ``_dominant_expression``) and ``duration`` (``ended_at`` or now, minus ``created_at``; a timedelta).
    """
    sums = {f"psum_{label}": Sum(f"buckets__{field}") for label, field in zip(LABELS, SUM_FIELDS, strict=True)}
    return (
        selectors.session_list_for_user(user=user)
        .annotate(
            n_frames=Sum("buckets__frames"),
            n_faces=Sum("buckets__faces"),
            n_small=Sum("buckets__faces_too_small"),
            **sums,
        )
        .annotate(
            mean_faces=Cast(F("n_faces") + F("n_small"), FloatField()) / NullIf(Cast("n_frames", FloatField()), 0.0),
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


def min_faces() -> int:
    """The privacy threshold: aggregates are shown only when they describe at least this many faces."""
    return settings.FER_MIN_FACES_FOR_AGGREGATES
