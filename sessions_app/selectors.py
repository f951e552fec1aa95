"""Read-side queries of emotion sessions (HackSoftware styleguide "selectors").

Time buckets: ``TimelineBucket`` stores running sums per session per 1-second bucket of session time
(``second = floor(frame.offset_s)``). A chart bucket of ``bucket_s`` seconds with index ``k`` covers session time
``[k * bucket_s, (k + 1) * bucket_s)`` and is the sum of the 1-second rows ``k * bucket_s .. (k + 1) * bucket_s - 1``.
Per-label shares are mean probabilities over all faces of the bucket: ``sum_p_<label> / faces``. Shares, dominant
label and valence are reported only when the bucket holds at least ``settings.FER_MIN_FACES_FOR_AGGREGATES`` faces
(privacy: no aggregate may describe a single identifiable person; too few faces are also statistically meaningless).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.db.models import Avg, Case, CharField, Count, F, FloatField, Max, Min, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, Floor
from django.utils import timezone

from inference.labels import LABELS, arousal_of, valence_of
from inference.pose import FACING_MAX_PITCH_DEG, FACING_MAX_YAW_DEG
from sessions_app.models import NEGATIVE_LABELS, SUM_FIELDS, EmotionSession, Face, Frame, TimelineBucket


def session_list_for_user(*, user) -> QuerySet[EmotionSession]:
    """Sessions visible to ``user``: their own; staff (admins) see every session. Newest first.

    Anonymous or inactive users see nothing.
    """
    qs = EmotionSession.objects.select_related("owner")
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return qs.none()
    if user.is_staff:
        return qs.all()
    return qs.filter(owner=user)


def session_get_for_user(*, user, session_id) -> EmotionSession:
    """The session ``session_id`` if ``user`` may see it.

    Raises ``EmotionSession.DoesNotExist`` when it does not exist *or* belongs to someone else (never reveals that
    a foreign session exists). A non-numeric ``session_id`` also raises ``DoesNotExist``.
    """
    try:
        pk = int(session_id)
    except (TypeError, ValueError):
        raise EmotionSession.DoesNotExist(f"session {session_id!r} not found") from None
    return session_list_for_user(user=user).get(pk=pk)


def session_get_by_id(*, session_id: int) -> EmotionSession | None:
    """The session ``session_id`` without any visibility check (workers, internal use); ``None`` when it is gone."""
    return EmotionSession.objects.filter(pk=int(session_id)).first()


def session_for_frames_get(*, session_id: int) -> EmotionSession | None:
    """The session ``session_id`` with only ``id`` and ``created_at`` loaded: what a worker needs to store a frame (the
    frame's offset and the key of its outcome claim), in a cheaper query than the whole row; other fields load on
    first access (one more query each). ``None`` when it is gone."""
    return EmotionSession.objects.only("id", "created_at").filter(pk=int(session_id)).first()


def session_can_stream(*, user, session: EmotionSession) -> bool:
    """Whether ``user`` may send camera frames or uploads into ``session``: only its owner."""
    return bool(getattr(user, "is_authenticated", False)) and session.owner_id == user.pk


def session_min_face_px(*, session: EmotionSession) -> int | None:
    """Smallest face side (px) the keyframes of ``session``'s cameras look for: ``settings.FER_CLASSROOM_MIN_FACE_PX``
    for a classroom session, ``None`` (every face the detector finds) for a crowd session or when the setting is 0.
    Uploads are always searched for every face (a photo's scale is unknown)."""
    if session.kind == EmotionSession.Kind.CLASSROOM and settings.FER_CLASSROOM_MIN_FACE_PX > 0:
        return int(settings.FER_CLASSROOM_MIN_FACE_PX)
    return None


def _shares(
    sums: list[float], faces: int, people: int | None = None
) -> tuple[dict[str, float] | None, str | None, float | None]:
    """Mean probabilities, dominant label and mean valence from per-label sums over ``faces`` faces; ``None``s when
    fewer than ``FER_MIN_FACES_FOR_AGGREGATES`` *people* (``people``, default ``faces``) are behind them."""
    people = faces if people is None else people
    if faces <= 0 or people < settings.FER_MIN_FACES_FOR_AGGREGATES:
        return None, None, None
    means = [s / faces for s in sums]
    probabilities = {label: round(m, 6) for label, m in zip(LABELS, means, strict=True)}
    dominant = LABELS[max(range(len(LABELS)), key=lambda i: means[i])]
    valence = round(valence_of(means), 6)
    return probabilities, dominant, valence


def session_timeline(*, session: EmotionSession, bucket_s: int = 5) -> list[dict]:
    """Emotion timeline of ``session`` in buckets of ``bucket_s`` seconds of session time, oldest first.

    Returns only buckets that contain frames; each item is::

        {"start_s": int, "end_s": int,            # bucket covers [start_s, end_s) seconds since session start
         "frames": int, "faces": int,               # faces: whose expression was read
         "faces_too_small": int,                    # seen, too small to read (not in the shares)
         "people": int,                             # distinct people behind the read faces (session_people_per_bucket)
         "mean_face_count": float,                # (faces + faces_too_small) / frames
         "probabilities": {label: mean p} | None, # None when people < FER_MIN_FACES_FOR_AGGREGATES
         "dominant": label | None, "valence": float | None,   # same rule; valence in -1..1
         "arousal": float | None,                 # same rule; -1 calm .. 1 excited (inference.labels.AROUSAL)
         "attention": float | None,               # people facing the camera, 0..1 (session_attention_per_bucket)
         "people_posed": int}                     # people behind "attention" (those with a head pose)

    Raises ``ValueError`` when ``bucket_s < 1``.
    """
    bucket_s = int(bucket_s)
    if bucket_s < 1:
        raise ValueError("bucket_s must be >= 1")
    acc: dict[int, list] = {}
    rows = session.buckets.order_by("second").values_list("second", "frames", "faces", "faces_too_small", *SUM_FIELDS)
    for second, frames, faces, small, *sums in rows:
        k = second // bucket_s
        cur = acc.get(k)
        if cur is None:
            acc[k] = [frames, faces, list(sums), small]
        else:
            cur[0] += frames
            cur[1] += faces
            cur[2] = [a + b for a, b in zip(cur[2], sums, strict=True)]
            cur[3] += small
    people_by_bucket = session_people_per_bucket(session=session, bucket_s=bucket_s)
    attention_by_bucket = session_attention_per_bucket(session=session, bucket_s=bucket_s)
    timeline = []
    for k in sorted(acc):
        frames, faces, sums, small = acc[k]
        if frames <= 0:
            continue
        people = people_by_bucket.get(k, 0)
        probabilities, dominant, valence = _shares(sums, faces, people)
        attention, posed = attention_by_bucket.get(k, (None, 0))
        timeline.append(
            {
                "start_s": k * bucket_s,
                "end_s": (k + 1) * bucket_s,
                "frames": frames,
                "faces": faces,
                "faces_too_small": small,
                "people": people,
                "mean_face_count": round((faces + small) / frames, 4),
                "probabilities": probabilities,
                "dominant": dominant,
                "valence": valence,
                "arousal": arousal_of_shares(probabilities),
                "attention": attention,
                "people_posed": posed,
            }
        )
    return timeline


def arousal_of_shares(probabilities: dict[str, float] | None) -> float | None:
    """Arousal (-1..1) of mean probabilities ``{label: p}``: ``sum(p * AROUSAL)`` (``inference.labels.AROUSAL``,
    Russell's circumplex), rounded to 6 places; ``None`` without aggregates."""
    if probabilities is None:
        return None
    return round(arousal_of([probabilities[label] for label in LABELS]), 6)


def _facing() -> Case:
    """1.0 for a face whose head pose faces the camera (``inference.pose.facing_camera``), else 0.0 (SQL)."""
    within = Q(yaw__gte=-FACING_MAX_YAW_DEG, yaw__lte=FACING_MAX_YAW_DEG) & Q(
        pitch__gte=-FACING_MAX_PITCH_DEG, pitch__lte=FACING_MAX_PITCH_DEG
    )
    return Case(When(within, then=Value(1.0)), default=Value(0.0), output_field=FloatField())


def _attention_groups(faces: QuerySet[Face], by: tuple[str, ...]) -> dict[tuple, list[float]]:
    """Per group ``by`` (e.g. the chart bucket ``k``): the facing share of each person, a tracked person's being the
    share of their observations facing the camera, an untracked face's 1.0 or 0.0. Two grouped SQL queries."""
    people: dict[tuple, list[float]] = {}
    tracked = faces.filter(track__isnull=False).values(*by, "frame__source", "track").annotate(share=Avg(_facing()))
    for row in tracked:
        people.setdefault(tuple(row[b] for b in by), []).append(float(row["share"]))
    untracked = faces.filter(track__isnull=True)
    if by:
        rows = list(untracked.values(*by).annotate(n=Count("id"), facing=Sum(_facing())))
    else:  # values() without fields would group by every column
        total = untracked.aggregate(n=Count("id"), facing=Sum(_facing()))
        rows = [total] if total["n"] else []
    for row in rows:
        n, facing = int(row["n"]), int(round(row["facing"] or 0))
        people.setdefault(tuple(row[b] for b in by), []).extend([1.0] * facing + [0.0] * (n - facing))
    return people


def _attention_share(shares: list[float]) -> float | None:
    """Mean of the people's facing shares, or ``None`` below ``FER_MIN_FACES_FOR_AGGREGATES`` people."""
    if not shares or len(shares) < settings.FER_MIN_FACES_FOR_AGGREGATES:
        return None
    return round(sum(shares) / len(shares), 6)


def session_attention_per_bucket(*, session: EmotionSession, bucket_s: int) -> dict[int, tuple[float | None, int]]:
    """Attention share of each chart bucket ``k``: the share of people facing the camera.

    A head-orientation proxy (``inference.pose``: |yaw| <= 30 and |pitch| <= 25 degrees), not gaze and not
    comprehension. Each person weighs the same: a tracked person (``(source, track)``) counts with the share of
    their observations in the bucket that face the camera, an untracked face (uploads) counts as one person, facing
    or not. Only read faces with a head pose count (too-small faces have none). The share is ``None`` below
    ``FER_MIN_FACES_FOR_AGGREGATES`` such people (the privacy rule of the other aggregates).

    Returns ``{k: (share 0..1 | None, people with a head pose)}`` for buckets with such faces.
    """
    bucket_s = int(bucket_s)
    faces = Face.objects.filter(session=session, too_small=False, yaw__isnull=False, pitch__isnull=False).annotate(
        k=Floor(F("frame__offset_s") / bucket_s)
    )
    groups = _attention_groups(faces, ("k",))
    return {int(key[0]): (_attention_share(shares), len(shares)) for key, shares in groups.items()}


def session_attention(*, session: EmotionSession) -> dict:
    """Attention over the whole session: ``{"attention": share 0..1 | None, "people_posed": int}``, each person
    (track, or untracked face) weighing the same (see ``session_attention_per_bucket``)."""
    faces = Face.objects.filter(session=session, too_small=False, yaw__isnull=False, pitch__isnull=False)
    shares = _attention_groups(faces, ()).get((), [])
    return {"attention": _attention_share(shares), "people_posed": len(shares)}


def session_people_per_bucket(*, session: EmotionSession, bucket_s: int) -> dict[int, int]:
    """Distinct people behind the read faces of each chart bucket ``k`` (``[k * bucket_s, (k + 1) * bucket_s)``):
    the distinct anonymous tracks ``(source, track)`` of camera faces, plus every untracked face (uploaded photos and
    videos, data stored before tracks: nothing tells their people apart, so each observation counts, as before).
    Too-small faces are not counted (they are not read). The privacy rule ``FER_MIN_FACES_FOR_AGGREGATES`` applies to
    this number: one person alone in front of a camera for a minute is one person, not 120 observations. Two grouped
    SQL queries. Returns ``{k: people}`` for buckets with read faces.
    """
    bucket_s = int(bucket_s)
    faces = Face.objects.filter(session=session, too_small=False)
    tracked = (
        faces.filter(track__isnull=False)
        .annotate(k=Floor(F("frame__offset_s") / bucket_s))
        .values("k")
        .annotate(n=Count(Concat("frame__source", Value(":"), Cast("track", CharField())), distinct=True))
    )
    people = {int(row["k"]): row["n"] for row in tracked}
    untracked = (
        faces.filter(track__isnull=True)
        .annotate(k=Floor(F("frame__offset_s") / bucket_s))
        .values("k")
        .annotate(n=Count("id"))
    )
    for row in untracked:
        people[int(row["k"])] = people.get(int(row["k"]), 0) + row["n"]
    return people


def session_people(*, session: EmotionSession) -> dict:
    """People seen in ``session`` and how long they stayed (dwell), from the anonymous tracks.

    Returns ``{"people": int (distinct tracks, plus every untracked face observation), "tracks": int,
    "dwell_s": {"median": float, "mean": float, "max": float} | None}``: a track's dwell is its last minus its first
    frame time, seconds (None without tracks). Tracks are box positions within one camera connection, so a person
    who leaves for longer than the tracker's memory (``inference.tracking``: 30 frames, 15 s at 2 fps) or
    reconnects counts again: "people" is an upper bound.
    """
    faces = Face.objects.filter(session=session, too_small=False)
    spans = list(
        faces.filter(track__isnull=False)
        .values("frame__source", "track")
        .annotate(first=Min("frame__offset_s"), last=Max("frame__offset_s"))
        .values_list("first", "last")
    )
    untracked = faces.filter(track__isnull=True).count()
    dwell = None
    if spans:
        stays = sorted(last - first for first, last in spans)
        mid = len(stays) // 2
        median = stays[mid] if len(stays) % 2 else (stays[mid - 1] + stays[mid]) / 2
        dwell = {"median": round(median, 3), "mean": round(sum(stays) / len(stays), 3), "max": round(stays[-1], 3)}
    return {"people": len(spans) + untracked, "tracks": len(spans), "dwell_s": dwell}


def session_distribution(*, session: EmotionSession) -> dict:
    """Overall emotion distribution of ``session``: mean probability per label over all its faces.

    Returns ``{"faces": int, "probabilities": {label: mean p} | None, "dominant": label | None}``; ``None`` when
    fewer than ``FER_MIN_FACES_FOR_AGGREGATES`` faces were seen.
    """
    agg = session.buckets.aggregate(faces=Sum("faces"), **{f: Sum(f) for f in SUM_FIELDS})
    faces = agg["faces"] or 0
    people = session_people(session=session)["people"] if faces else 0
    probabilities, dominant, _ = _shares([agg[f] or 0.0 for f in SUM_FIELDS], faces, people)
    return {"faces": faces, "people": people, "probabilities": probabilities, "dominant": dominant}


def session_duration_s(*, session: EmotionSession, now: dt.datetime | None = None) -> float:
    """Wall-clock duration of ``session`` in seconds: ``ended_at - created_at``, or up to ``now`` (default: the
    current time) while it is running. Never negative."""
    end = session.ended_at or now or timezone.now()
    return max(0.0, (end - session.created_at).total_seconds())


def session_summary(*, session: EmotionSession, now: dt.datetime | None = None) -> dict:
    """Headline numbers of ``session`` for dashboards.

    Returns ``{"frames": int (stored frames), "faces": int, "duration_s": float (session start to end, or to
    ``now`` while running; see ``session_duration_s``), "frame_span_s": float (first to last stored frame's offset,
    0 with fewer than two frames), "frames_received": int, "frames_processed": int, "frames_dropped": int,
    "frames_rejected": int, "status": str, "ended_at": datetime | None, "mean_processing_ms": float | None}``.
    Durations in seconds, rounded to ms.
    """
    agg = Frame.objects.filter(session=session).aggregate(
        n=Count("id"), faces=Sum("face_count"), first=Min("offset_s"), last=Max("offset_s"), ms=Avg("processing_ms")
    )
    first, last = agg["first"], agg["last"]
    return {
        "frames": agg["n"] or 0,
        "faces": agg["faces"] or 0,
        "duration_s": round(session_duration_s(session=session, now=now), 3),
        "frame_span_s": round((last - first), 3) if first is not None and last is not None else 0.0,
        "frames_received": session.frames_received,
        "frames_processed": session.frames_processed,
        "frames_dropped": session.frames_dropped,
        "frames_rejected": session.frames_rejected,
        "status": session.status,
        "ended_at": session.ended_at,
        "mean_processing_ms": round(agg["ms"], 2) if agg["ms"] is not None else None,
    }


def session_counters(*, session_id: int) -> dict[str, int]:
    """Current frame counters of a session: ``{"received", "processed", "dropped", "rejected"}``; zeros if gone."""
    row = (
        EmotionSession.objects.filter(pk=session_id)
        .values_list("frames_received", "frames_processed", "frames_dropped", "frames_rejected")
        .first()
    )
    return dict(zip(("received", "processed", "dropped", "rejected"), row or (0, 0, 0, 0), strict=True))


def frames_get(*, session_id: int, source: str, sequences: Iterable[int]) -> dict[int, tuple[Frame, list[Face]]]:
    """The stored frames of ``source`` in session ``session_id`` among ``sequences``, with their faces (by id).

    Returns ``{sequence: (frame, faces)}`` for the sequences that were stored (the others are missing); two queries
    whatever the number of sequences (none for an empty ``sequences``).
    """
    wanted = sorted({int(s) for s in sequences})
    if not wanted:
        return {}
    frames = {f.pk: f for f in Frame.objects.filter(session_id=session_id, source=source, sequence__in=wanted)}
    faces: dict[int, list[Face]] = {pk: [] for pk in frames}
    for face in Face.objects.filter(frame_id__in=list(frames)).order_by("id"):
        faces[face.frame_id].append(face)
    return {f.sequence: (f, faces[pk]) for pk, f in frames.items()}


def session_list_expired(*, days: int, now: dt.datetime | None = None) -> QuerySet[EmotionSession]:
    """Sessions whose end (or start, while not ended) lies more than ``days`` days before ``now``.

    Raises ``ValueError`` for ``days < 1``.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    return EmotionSession.objects.alias(last=Coalesce("ended_at", "created_at")).filter(last__lt=cutoff)


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


# --------------------------------------------------------------------------- issue 12
def session_list_idle(*, idle_s: float, now: dt.datetime | None = None) -> list[tuple[int, dt.datetime]]:
    """Running sessions whose last activity lies more than ``idle_s`` seconds before ``now`` (default: now).

    Last activity = ``processed_at`` of the session's newest stored frame, or ``created_at`` when it has none.
    Returns ``[(session id, last activity)]`` ordered by id.
    """
    cutoff = (now or timezone.now()) - dt.timedelta(seconds=float(idle_s))
    rows = (
        EmotionSession.objects.filter(status=EmotionSession.Status.RUNNING)
        .annotate(last=Coalesce(Max("frames__processed_at"), "created_at"))
        .filter(last__lt=cutoff)
        .order_by("pk")
        .values_list("pk", "last")
    )
    return list(rows)


def session_by_notice_code(*, code: str) -> EmotionSession | None:
    """The session whose participant-notice code is ``code`` (public link, no login), or ``None``."""
    if not code or len(code) > 16:
        return None
    return EmotionSession.objects.select_related("owner").filter(notice_code=code).first()


def session_people_now(*, session: EmotionSession, window_s: float = 5.0) -> dict:
    """How many people are in view now: the largest face count of the frames of the last ``window_s`` seconds of
    session time before the newest stored frame.

    Returns ``{"people": int | None, "as_of_s": float | None}``: ``people`` is ``None`` without frames;
    ``as_of_s`` is the newest frame's session time, seconds. (A face count, not identities: the same person seen in
    two frames counts once per frame; the maximum over a short window smooths missed detections.)
    """
    last = Frame.objects.filter(session=session).aggregate(last=Max("offset_s"))["last"]
    if last is None:
        return {"people": None, "as_of_s": None}
    people = Frame.objects.filter(session=session, offset_s__gte=last - window_s).aggregate(m=Max("face_count"))["m"]
    return {"people": int(people or 0), "as_of_s": round(last, 3)}


def session_upload_progress(*, session: EmotionSession, source: str) -> int:
    """Frames of upload ``source`` (``"upload:<n>"``) of ``session`` analysed and stored so far."""
    return Frame.objects.filter(session=session, source=source).count()


def sessions_compare(*, sessions: list[EmotionSession]) -> list[dict]:
    """Side-by-side figures of ``sessions`` (in the given order) for the compare page and the per-teacher trend.

    Returns one dict per session: ``{"session", "duration_s": float, "faces": int (face observations),
    "frames": int, "mean_people": float | None (mean faces per frame), "max_people": int | None,
    "probabilities": {label: mean p} | None, "dominant": label | None, "valence": float | None (-1..1),
    "negative": float | None (share of angry + disgust + fear + sad)}``; emotion figures are ``None`` below
    ``FER_MIN_FACES_FOR_AGGREGATES`` face observations. One aggregate query over all sessions' buckets and one
    over their frames.
    """
    ids = [s.pk for s in sessions]
    sums = {
        row["session_id"]: row
        for row in TimelineBucket.objects.filter(session_id__in=ids)
        .values("session_id")
        .annotate(n_faces=Sum("faces"), **{f"t_{f}": Sum(f) for f in SUM_FIELDS})
    }
    frames = {
        row["session_id"]: row
        for row in Frame.objects.filter(session_id__in=ids)
        .values("session_id")
        .annotate(n=Count("id"), mean=Avg("face_count"), max=Max("face_count"))
    }
    out = []
    for s in sessions:
        row = sums.get(s.pk) or {}
        faces = row.get("n_faces") or 0
        probabilities, dominant, valence = _shares([row.get(f"t_{f}") or 0.0 for f in SUM_FIELDS], faces)
        fr = frames.get(s.pk) or {}
        out.append(
            {
                "session": s,
                "duration_s": round(session_duration_s(session=s), 3),
                "faces": faces,
                "frames": fr.get("n") or 0,
                "mean_people": round(fr["mean"], 2) if fr.get("mean") is not None else None,
                "max_people": fr.get("max"),
                "probabilities": probabilities,
                "dominant": dominant,
                "valence": valence,
                "negative": (
                    round(sum(probabilities[label] for label in NEGATIVE_LABELS), 6) if probabilities else None
                ),
            }
        )
    return out
