"""Pure computations of session reports: bucket choice, dominant-emotion segments, the moments of largest change,
the plain-language summary and the SVG timeline chart's geometry.

They work on the timeline items of ``selectors.session_timeline`` and on ``SessionReport`` values; the database is
read by ``sessions_app.reports.selectors``. Every emotion aggregate follows the privacy rule of the selectors: it
is ``None`` (and shown as "too few faces") when it describes fewer than ``settings.FER_MIN_FACES_FOR_AGGREGATES``
faces. Units: seconds of session time (since ``EmotionSession.created_at``), probabilities in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inference import labels
from inference.labels import LABELS
from sessions_app.models import ALERT_NEGATIVE, NEGATIVE_LABELS, EmotionSession
from sessions_app.palette import LABEL_COLORS
from sessions_app.selectors import session_duration_s

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
    smallest = min_bucket_s(session_duration_s(session=session))
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
    #: ``selectors.session_people``: distinct people (anonymous tracks + untracked faces) and dwell seconds.
    people: dict = field(default_factory=dict)
    #: ``selectors.session_attention``: share of people facing the camera (head pose), and how many had a pose.
    attention: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready form (the session as its id and name)."""
        data = {k: v for k, v in self.__dict__.items() if k != "session"}
        data["session"] = {"id": self.session.pk, "name": self.session.name, "kind": self.session.kind}
        return data


def timeline_chart(timeline: list[dict], *, bucket_s: int, width: int = 720, height: int = 200) -> dict:
    """Geometry of the stacked timeline chart drawn as inline SVG (works in the browser and in the PDF).

    One column per bucket, stacked by mean probability per emotion (100% = column height); buckets with too few
    faces are grey. Returns ``{"width", "height", "columns": [{"x", "w", "title", "rects": [{"y", "h",
    "color"}], "hidden"}], "ticks": [{"x", "label", "anchor"}]}`` (pixels of the SVG viewBox).
    """
    if not timeline:
        return {"width": width, "height": height, "columns": [], "ticks": []}
    end_s = max(item["end_s"] for item in timeline)
    scale = width / end_s
    columns = []
    for item in timeline:
        x = item["start_s"] * scale
        w = max(bucket_s * scale - 0.5, 0.5)
        column = {"x": round(x, 2), "w": round(w, 2), "hidden": item["probabilities"] is None, "rects": []}
        if item["probabilities"] is None:
            column["title"] = f"{item['start_s']}-{item['end_s']} s: fewer than the minimum faces"
        else:
            column["title"] = f"{item['start_s']}-{item['end_s']} s: " + ", ".join(
                f"{label} {item['probabilities'][label] * 100:.0f}%" for label in LABELS
            )
            y = 0.0
            for label in LABELS:
                h = item["probabilities"][label] * height
                column["rects"].append({"y": round(y, 2), "h": round(h, 2), "color": LABEL_COLORS[label]})
                y += h
        columns.append(column)
    # At most 6 intervals (7 labels), however long the session: the step grows past hours into whole days.
    step = choose_bucket_s(end_s, target_points=6)
    ticks = [
        {
            "x": round(t * scale, 2),
            "label": format_duration(t),
            "anchor": "start" if t == 0 else ("end" if t * scale > width - 30 else "middle"),
        }
        for t in range(0, end_s + 1, step)
    ]
    return {"width": width, "height": height, "columns": columns, "ticks": ticks}


# --------------------------------------------------------------------------- issue 12: mood at a glance, alerts
#: Valence (-1..1, ``inference.labels.VALENCE`` weighted by the mean probabilities) at or above which the room reads
#: "positive", and at or below whose negative the room reads "negative"; in between "neutral".
MOOD_POSITIVE_AT = 0.15
#: Change of valence over the last minute (second half minus first half) that counts as rising or falling.
TREND_STEP = 0.1
#: Seconds of session time the mood indicator and its trend look back.
MOOD_WINDOW_S = 60


def valence_of(probabilities: dict) -> float:
    """Valence (-1..1) of a mean-probability mix ``{label: p}`` (``inference.labels.valence_of``), rounded."""
    return round(labels.valence_of([probabilities[label] for label in LABELS]), 6)


def attention_now(timeline: list[dict], *, window_s: int = MOOD_WINDOW_S) -> dict:
    """Share of people facing the camera now: that of the newest timeline bucket with an attention share within
    ``window_s`` seconds of the newest bucket with frames (items of ``selectors.session_timeline``).

    Returns ``{"attention": float | None (0..1), "as_of_s": int | None (start of that bucket, seconds of session
    time), "people": int (people with a head pose behind it)}``.
    """
    if not timeline:
        return {"attention": None, "as_of_s": None, "people": 0}
    end_s = timeline[-1]["end_s"]
    recent = [b for b in timeline if b["end_s"] > end_s - window_s and b.get("attention") is not None]
    if not recent:
        return {"attention": None, "as_of_s": None, "people": 0}
    latest = recent[-1]
    return {"attention": latest["attention"], "as_of_s": latest["start_s"], "people": latest["people_posed"]}


def mood_word(valence: float | None) -> str | None:
    """``"positive"`` (valence >= ``MOOD_POSITIVE_AT``), ``"negative"`` (<= -``MOOD_POSITIVE_AT``), ``"neutral"``
    in between, ``None`` without a valence (too few faces)."""
    if valence is None:
        return None
    if valence >= MOOD_POSITIVE_AT:
        return "positive"
    if valence <= -MOOD_POSITIVE_AT:
        return "negative"
    return "neutral"


def negative_share(probabilities: dict | None) -> float | None:
    """Summed mean probability of angry + disgust + fear + sad (0..1), ``None`` without aggregates."""
    if probabilities is None:
        return None
    return sum(probabilities[label] for label in NEGATIVE_LABELS)


def mood_now(timeline: list[dict], *, window_s: int = MOOD_WINDOW_S) -> dict:
    """The room's mood now, from the newest timeline buckets (items of ``selectors.session_timeline``).

    "Now" is the newest bucket with frames; the mood is that of the newest bucket with aggregates within
    ``window_s`` seconds before it. The trend compares the mean valence of the buckets with aggregates in the second
    half of the last ``window_s`` seconds with those in the first half.

    Returns ``{"valence": float | None (-1..1), "word": "positive" | "neutral" | "negative" | None,
    "negative": float | None (share 0..1 of angry + disgust + fear + sad), "as_of_s": int | None (start of the bucket
    the mood is from, seconds of session time), "trend": "rising" | "steady" | "falling" | None (None: fewer than
    one bucket with aggregates in each half), "trend_delta": float | None (valence change)}``.
    """
    empty = {"valence": None, "word": None, "negative": None, "as_of_s": None, "trend": None, "trend_delta": None}
    if not timeline:
        return empty
    end_s = timeline[-1]["end_s"]
    recent = [b for b in timeline if b["end_s"] > end_s - window_s and b["valence"] is not None]
    if not recent:
        return empty
    latest = recent[-1]
    half = end_s - window_s / 2
    first = [b["valence"] for b in recent if b["end_s"] <= half]
    second = [b["valence"] for b in recent if b["end_s"] > half]
    trend = delta = None
    if first and second:
        delta = round(sum(second) / len(second) - sum(first) / len(first), 6)
        trend = "rising" if delta >= TREND_STEP else "falling" if delta <= -TREND_STEP else "steady"
    return {
        "valence": latest["valence"],
        "word": mood_word(latest["valence"]),
        "negative": round(negative_share(latest["probabilities"]), 6),
        "as_of_s": latest["start_s"],
        "trend": trend,
        "trend_delta": delta,
    }


def alert_share(probabilities: dict | None, target: str) -> float | None:
    """Share (0..1) that an alert on ``target`` watches: the negative share for ``"negative"``, else the mean
    probability of the label ``target``; ``None`` without aggregates."""
    if probabilities is None:
        return None
    return negative_share(probabilities) if target == ALERT_NEGATIVE else probabilities[target]


def alert_label(target: str) -> str:
    """How an alert target is named to people: ``"negative expressions (angry, disgust, fear, sad)"`` or the label."""
    return "negative expressions (angry, disgust, fear, sad)" if target == ALERT_NEGATIVE else f"{target} expressions"


def alert_episodes(timeline: list[dict], *, target: str, threshold: float, duration_s: float) -> list[dict]:
    """Stretches where the share of ``target`` stayed above ``threshold`` for at least ``duration_s`` seconds.

    Args:
        timeline: items of ``selectors.session_timeline`` (oldest first). Buckets with too few faces
            (``probabilities`` None, fewer than ``FER_MIN_FACES_FOR_AGGREGATES`` faces) and gaps without frames
            break a stretch: an alert needs the minimum number of faces in every bucket.
        target: ``"negative"`` or a label (see ``alert_share``).
        threshold: share in 0..1 that must be exceeded (strictly).
        duration_s: seconds (of session time) the share must stay above ``threshold``.
    Returns:
        ``[{"start_s", "end_s", "duration_s", "fired_at_s" (start_s + duration_s: when the alert went off),
        "peak" (largest share), "target", "threshold"}]``, oldest first; seconds of session time.
    """
    episodes: list[dict] = []
    run: list[tuple[dict, float]] = []

    def close() -> None:
        if run and run[-1][0]["end_s"] - run[0][0]["start_s"] >= duration_s:
            start, end = run[0][0]["start_s"], run[-1][0]["end_s"]
            episodes.append(
                {
                    "start_s": start,
                    "end_s": end,
                    "duration_s": end - start,
                    "fired_at_s": start + duration_s,
                    "peak": round(max(share for _, share in run), 6),
                    "target": target,
                    "threshold": threshold,
                }
            )

    for bucket in timeline:
        share = alert_share(bucket["probabilities"], target)
        contiguous = bool(run) and run[-1][0]["end_s"] == bucket["start_s"]
        if share is not None and share > threshold:
            if run and not contiguous:
                close()
                run = []
            run.append((bucket, share))
        else:
            close()
            run = []
    close()
    return episodes


def session_alerts(session: EmotionSession, timeline: list[dict]) -> dict:
    """The alert state of ``session`` from its fine ``timeline`` (``FER_CHART_BUCKET_S`` buckets).

    Returns ``{"enabled": bool, "target", "label" (``alert_label``), "threshold", "duration_s", "episodes":
    ``alert_episodes`` (empty when disabled), "active": bool (the newest bucket with frames ends an episode)}``.
    """
    state = {
        "enabled": session.alerts_enabled,
        "target": session.alert_emotion,
        "label": alert_label(session.alert_emotion),
        "threshold": session.alert_threshold,
        "duration_s": session.alert_duration_s,
        "episodes": [],
        "active": False,
    }
    if session.alerts_enabled and timeline:
        state["episodes"] = alert_episodes(
            timeline,
            target=session.alert_emotion,
            threshold=session.alert_threshold,
            duration_s=session.alert_duration_s,
        )
        state["active"] = bool(state["episodes"]) and state["episodes"][-1]["end_s"] == timeline[-1]["end_s"]
    return state
