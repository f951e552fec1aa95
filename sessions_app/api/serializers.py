"""Serializers of the REST API (thin: validation and representation only).

Units: times in seconds of session time (since ``created_at``) unless named ``*_at`` (ISO 8601 datetimes);
pixels for boxes and frame sizes; probabilities in [0, 1]; valence in [-1, 1].
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inference.labels import LABELS, arousal_of, valence_of
from sessions_app.models import PROBABILITY_FIELDS, EmotionSession, Face
from sessions_app.reports.computations import MAX_BUCKET_S, MAX_POINTS, bucket_error
from sessions_app.reports.exports import FORMATS
from sessions_app.selectors import session_duration_s


class ErrorDetailSerializer(serializers.Serializer):
    """The ``error`` object of an error body: machine-readable ``code``, human-readable ``message``, ``details``."""

    code = serializers.CharField(help_text="Machine-readable reason, e.g. invalid, not_found, throttled.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.JSONField(
        allow_null=True, help_text="Per-field messages for 'invalid'; {'retry_after_s': n} for 'throttled'."
    )


class ErrorSerializer(serializers.Serializer):
    """Body of every error response."""

    error = ErrorDetailSerializer()


class TokenResponseSerializer(serializers.Serializer):
    """Answer of the token endpoint: the user's API token."""

    token = serializers.CharField(help_text="40 hex characters; send as 'Authorization: Token <token>'.")


class ProbabilitiesSerializer(serializers.Serializer):
    """Mean (or per-face) probability per FER2013 label, each in [0, 1], summing to ~1."""

    angry = serializers.FloatField(min_value=0, max_value=1)
    disgust = serializers.FloatField(min_value=0, max_value=1)
    fear = serializers.FloatField(min_value=0, max_value=1)
    happy = serializers.FloatField(min_value=0, max_value=1)
    sad = serializers.FloatField(min_value=0, max_value=1)
    surprise = serializers.FloatField(min_value=0, max_value=1)
    neutral = serializers.FloatField(min_value=0, max_value=1)


class SessionLinksSerializer(serializers.Serializer):
    """Absolute URLs of a session's report, PDF and data endpoints."""

    report = serializers.URLField(help_text="HTML report page.")
    pdf = serializers.URLField(help_text="PDF report.")
    timeline = serializers.URLField()
    faces = serializers.URLField()
    export = serializers.URLField(help_text="Add ?format=csv or ?format=json.")


class SessionSerializer(serializers.ModelSerializer):
    """A session with its counters. ``duration_s``: seconds from creation to end (or to now while running)."""

    owner = serializers.CharField(source="owner.username", read_only=True, help_text="Owner's username.")
    duration_s = serializers.SerializerMethodField(help_text="Seconds from creation to end (or now if running).")
    links = serializers.SerializerMethodField()

    class Meta:
        model = EmotionSession
        fields = [
            "id",
            "name",
            "kind",
            "target_fps",
            "status",
            "owner",
            "owner_id",
            "created_at",
            "ended_at",
            "duration_s",
            "frames_received",
            "frames_processed",
            "frames_dropped",
            "frames_rejected",
            "links",
        ]
        read_only_fields = fields

    def get_duration_s(self, obj: EmotionSession) -> float:
        """Seconds from ``created_at`` to ``ended_at`` (or to now while running), rounded to milliseconds."""
        return round(session_duration_s(session=obj), 3)

    @extend_schema_field(SessionLinksSerializer)
    def get_links(self, obj: EmotionSession) -> dict:
        """``{"report", "pdf", "timeline", "faces", "export"}``: absolute URLs when the serializer context has
        the request, else paths."""
        request = self.context.get("request")

        def url(name: str) -> str:
            path = reverse(name, kwargs={"session_id": obj.pk})
            return request.build_absolute_uri(path) if request else path

        return {
            "report": url("reports:session-report"),
            "pdf": url("reports:session-report-pdf"),
            "timeline": url("api:session-timeline"),
            "faces": url("api:session-faces"),
            "export": url("api:session-export"),
        }


class SessionCreateSerializer(serializers.Serializer):
    """Input of session creation; the owner is the requesting user."""

    name = serializers.CharField(max_length=200, help_text="Display name, e.g. 'Math 7b, Monday'.")
    kind = serializers.ChoiceField(choices=EmotionSession.Kind.choices, default=EmotionSession.Kind.CLASSROOM)
    target_fps = serializers.FloatField(
        min_value=0.1, max_value=30.0, default=2.0, help_text="Frames per second the browser sends (0.1..30)."
    )


class TimelineQuerySerializer(serializers.Serializer):
    """Query of the timeline endpoint: ``bucket`` length in whole seconds (default 5)."""

    bucket = serializers.IntegerField(
        min_value=1, max_value=MAX_BUCKET_S, default=5, help_text=f"Bucket length in seconds (1..{MAX_BUCKET_S})."
    )


class TimelineBucketSerializer(serializers.Serializer):
    """One timeline bucket ``[start_s, end_s)`` of session time with its counts and emotion aggregates."""

    start_s = serializers.IntegerField(help_text="Bucket start, seconds since session start (inclusive).")
    end_s = serializers.IntegerField(help_text="Bucket end, seconds since session start (exclusive).")
    frames = serializers.IntegerField(help_text="Frames analysed in the bucket.")
    faces = serializers.IntegerField(help_text="Face observations whose expression was read in the bucket.")
    faces_too_small = serializers.IntegerField(help_text="Face observations too small to read (not in the shares).")
    people = serializers.IntegerField(
        help_text="Distinct people behind the read faces: anonymous camera tracks plus untracked (uploaded) faces. "
        "The privacy rule (min_faces) applies to this number."
    )
    mean_face_count = serializers.FloatField(help_text="(faces + faces_too_small) / frames.")
    probabilities = ProbabilitiesSerializer(
        allow_null=True,
        help_text="Mean (track-smoothed) probability per emotion; null with fewer than min_faces people.",
    )
    dominant = serializers.ChoiceField(
        choices=LABELS, allow_null=True, help_text="Emotion with the highest mean; null with too few faces."
    )
    valence = serializers.FloatField(allow_null=True, help_text="Mean valence in [-1, 1]; null with too few faces.")
    arousal = serializers.FloatField(
        allow_null=True,
        help_text="Mean arousal in [-1, 1] (-1 calm, +1 excited; Russell's circumplex); null with too few faces.",
    )
    attention = serializers.FloatField(
        allow_null=True,
        help_text="Share of people facing the camera (head |yaw| <= 30, |pitch| <= 25 degrees), 0..1, each person "
        "counted once; a head-orientation proxy, not gaze. Null with fewer than min_faces people with a head pose.",
    )
    people_posed = serializers.IntegerField(help_text="People behind 'attention' (read faces with a head pose).")


class TimelineSerializer(serializers.Serializer):
    """Answer of the timeline endpoint: the bucket length, the privacy threshold and the buckets with frames."""

    session_id = serializers.IntegerField()
    bucket_s = serializers.IntegerField(help_text="Bucket length in seconds.")
    min_faces = serializers.IntegerField(help_text="Aggregates need at least this many faces (privacy rule).")
    buckets = TimelineBucketSerializer(many=True, help_text="Buckets that contain frames, oldest first.")


class FacesQuerySerializer(serializers.Serializer):
    """Query of the faces endpoint: optional session-time range ``[from_s, to_s)`` in seconds."""

    from_s = serializers.FloatField(
        required=False, min_value=0, help_text="Only faces of frames at or after this session time (seconds)."
    )
    to_s = serializers.FloatField(
        required=False, min_value=0, help_text="Only faces of frames before this session time (seconds)."
    )

    def validate(self, attrs: dict) -> dict:
        """Cross-field check: ``from_s`` must not exceed ``to_s``; raises ``ValidationError`` (400) on ``to_s``."""
        if "from_s" in attrs and "to_s" in attrs and attrs["from_s"] > attrs["to_s"]:
            raise serializers.ValidationError({"to_s": ["Must not be smaller than from_s."]})
        return attrs


class FaceSerializer(serializers.ModelSerializer):
    """One detected face: box in pixels of its frame, label, score and probabilities (no identity)."""

    frame_id = serializers.IntegerField(read_only=True)
    offset_s = serializers.FloatField(source="frame.offset_s", help_text="Frame time, seconds since session start.")
    captured_at = serializers.DateTimeField(source="frame.captured_at")
    source = serializers.CharField(source="frame.source", help_text="'camera' or 'upload:<n>'.")
    probabilities = serializers.SerializerMethodField()
    smoothed_probabilities = serializers.SerializerMethodField()
    valence = serializers.SerializerMethodField(help_text="Valence of the raw probabilities, -1..1.")
    arousal = serializers.SerializerMethodField(help_text="Arousal of the raw probabilities, -1..1.")
    facing_camera = serializers.SerializerMethodField(
        help_text="Head within 30 degrees of yaw and 25 of pitch of the camera; null without a head pose."
    )

    class Meta:
        model = Face
        fields = [
            "id",
            "frame_id",
            "offset_s",
            "captured_at",
            "source",
            "x",
            "y",
            "w",
            "h",
            "too_small",
            "label",
            "score",
            "probabilities",
            "track",
            "smoothed_label",
            "smoothed_probabilities",
            "valence",
            "arousal",
            "yaw",
            "pitch",
            "roll",
            "facing_camera",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "yaw": {"help_text": "Head yaw, degrees: positive turned toward the image's right; null if not estimated."},
            "pitch": {"help_text": "Head pitch, degrees: positive chin up; null if not estimated."},
            "roll": {"help_text": "Head roll, degrees: positive clockwise in the image; null if not estimated."},
            "x": {"help_text": "Box left edge, pixels."},
            "y": {"help_text": "Box top edge, pixels."},
            "w": {"help_text": "Box width, pixels."},
            "h": {"help_text": "Box height, pixels."},
            "score": {"help_text": "Probability of the label, 0..1."},
        }

    @extend_schema_field(ProbabilitiesSerializer)
    def get_probabilities(self, obj: Face) -> dict:
        """``{label: probability in [0, 1]}`` for the seven FER2013 labels of this face."""
        return {label: getattr(obj, field) for label, field in zip(LABELS, PROBABILITY_FIELDS, strict=True)}

    @extend_schema_field(ProbabilitiesSerializer(allow_null=True))
    def get_smoothed_probabilities(self, obj: Face) -> dict | None:
        """The face's track-smoothed ``{label: probability}`` (causal EMA over its track), null when untracked."""
        values = obj.smoothed_probabilities
        return None if values is None else dict(zip(LABELS, values, strict=True))

    def get_valence(self, obj: Face) -> float:
        """``sum(p * VALENCE)`` of the raw probabilities (``inference.labels``), -1..1."""
        return round(valence_of(obj.probabilities), 6)

    def get_arousal(self, obj: Face) -> float:
        """``sum(p * AROUSAL)`` of the raw probabilities (``inference.labels``), -1..1."""
        return round(arousal_of(obj.probabilities), 6)

    def get_facing_camera(self, obj: Face) -> bool | None:
        """``inference.pose.facing_camera`` of the stored head pose, null without one."""
        return obj.facing_camera


class ExportQuerySerializer(serializers.Serializer):
    """Query of the export endpoint: the file ``format`` (csv or json; default csv)."""

    format = serializers.ChoiceField(choices=FORMATS, default="csv", help_text="csv (one row per face) or json.")


class DistributionSerializer(serializers.Serializer):
    """Whole-session emotion distribution: mean probability per label over all faces (null with too few faces)."""

    faces = serializers.IntegerField(help_text="Face observations in the session.")
    probabilities = ProbabilitiesSerializer(allow_null=True, help_text="Null with fewer than min_faces faces.")
    dominant = serializers.ChoiceField(choices=LABELS, allow_null=True)


class SegmentSerializer(serializers.Serializer):
    """A stretch of consecutive timeline buckets with the same dominant emotion, in seconds of session time."""

    start_s = serializers.IntegerField(help_text="Seconds since session start (inclusive).")
    end_s = serializers.IntegerField(help_text="Seconds since session start (exclusive).")
    duration_s = serializers.IntegerField()
    dominant = serializers.ChoiceField(choices=LABELS, allow_null=True, help_text="Null: too few faces.")
    buckets = serializers.IntegerField()


class ChangeSerializer(serializers.Serializer):
    """A moment of large change of the emotion mix between two consecutive buckets with aggregates."""

    at_s = serializers.IntegerField(help_text="Start of the later bucket, seconds since session start.")
    from_s = serializers.IntegerField(help_text="Start of the earlier bucket, seconds since session start.")
    change = serializers.FloatField(help_text="Total variation distance of the two emotion mixes, 0..1.")
    rose = serializers.ChoiceField(choices=LABELS)
    rose_by = serializers.FloatField(help_text="Increase of the mean probability, 0..1.")
    fell = serializers.ChoiceField(choices=LABELS)
    fell_by = serializers.FloatField(help_text="Decrease of the mean probability, 0..1.")
    dominant_before = serializers.ChoiceField(choices=LABELS)
    dominant_after = serializers.ChoiceField(choices=LABELS)


class DwellSerializer(serializers.Serializer):
    """How long tracks stayed in view, seconds."""

    median = serializers.FloatField()
    mean = serializers.FloatField()
    max = serializers.FloatField()


class PeopleSerializer(serializers.Serializer):
    """People seen: distinct anonymous tracks plus untracked face observations (an upper bound)."""

    people = serializers.IntegerField()
    tracks = serializers.IntegerField()
    dwell_s = DwellSerializer(allow_null=True)


class AttentionSerializer(serializers.Serializer):
    """Share of people facing the camera over the whole session (head-orientation proxy, not gaze)."""

    attention = serializers.FloatField(allow_null=True, help_text="0..1; null with fewer than min_faces people.")
    people_posed = serializers.IntegerField(help_text="People with a head pose behind the share.")


class ReportSessionSerializer(serializers.Serializer):
    """The session a report is about: id, name and kind."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()


class ReportSerializer(serializers.Serializer):
    """The session report (same numbers as the HTML/PDF report)."""

    session = ReportSessionSerializer()
    bucket_s = serializers.IntegerField(help_text="Timeline bucket, seconds.")
    min_faces = serializers.IntegerField(help_text="Aggregates need at least this many faces.")
    duration_s = serializers.FloatField(help_text="Seconds from creation to end (or now).")
    frames_received = serializers.IntegerField()
    frames_processed = serializers.IntegerField()
    frames_dropped = serializers.IntegerField()
    frames_rejected = serializers.IntegerField()
    frames_stored = serializers.IntegerField()
    faces = serializers.IntegerField()
    mean_face_count = serializers.FloatField(allow_null=True, help_text="Mean faces per stored frame.")
    max_face_count = serializers.IntegerField(allow_null=True)
    distribution = DistributionSerializer()
    timeline = TimelineBucketSerializer(many=True)
    segments = SegmentSerializer(many=True)
    changes = ChangeSerializer(many=True, help_text="Moments of largest change, largest first.")
    summary = serializers.ListField(child=serializers.CharField(), help_text="Plain-language summary sentences.")
    people = PeopleSerializer()
    attention = AttentionSerializer()


class ReportQuerySerializer(serializers.Serializer):
    """Query of the report endpoint: optional timeline ``bucket`` in seconds.

    Context: ``session`` (the report's session), used to refuse buckets that would give more than ``MAX_POINTS``
    timeline points for that session.
    """

    bucket = serializers.IntegerField(
        min_value=1,
        max_value=MAX_BUCKET_S,
        required=False,
        help_text=f"Timeline bucket in seconds (1..{MAX_BUCKET_S}, at most {MAX_POINTS} points for the session); "
        "default: chosen for at most 120 points.",
    )

    def validate_bucket(self, value: int) -> int:
        """The bucket in seconds; raises ``ValidationError`` (400) when it is too small for the session."""
        session = self.context.get("session")
        error = bucket_error(session=session, bucket_s=value) if session is not None else None
        if error:
            raise serializers.ValidationError(error)
        return value
