"""Stored data of emotion sessions: only numbers, never raw frames.

- ``EmotionSession``: one class period or crowd event, owned by a teacher/operator.
- ``Frame``: one analysed frame (live camera frame, uploaded photo, or sampled video frame).
- ``Face``: one detected face in a frame: bounding box ``(x, y, w, h)`` in pixels of the analysed frame and the
  7 probabilities in FER2013 label order (``inference.LABELS``).
- ``TimelineBucket``: running sums per session per 1-second bucket of session time (``offset_s`` floor), kept up
  to date in the same transaction as the frame; coarser charts sum consecutive buckets (see ``selectors``).
- ``ExportRecord``: audit log of data exports (who, when, which session, format).
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from inference.labels import LABELS
from inference.pose import facing_camera

#: Names of the per-label probability columns of ``Face`` and sum columns of ``TimelineBucket``, in LABELS order.
PROBABILITY_FIELDS = tuple(f"p_{label}" for label in LABELS)
#: Smoothed probabilities of a tracked face (causal EMA over its track, ``inference.tracking``), LABELS order.
SMOOTHED_FIELDS = tuple(f"sp_{label}" for label in LABELS)
SUM_FIELDS = tuple(f"sum_p_{label}" for label in LABELS)
#: Alert target meaning the summed share of angry + disgust + fear + sad (``EmotionSession.alert_emotion``).
ALERT_NEGATIVE = "negative"
#: The labels that make up the negative share of alerts and the mood indicator.
NEGATIVE_LABELS = ("angry", "disgust", "fear", "sad")
ALERT_CHOICES = [(ALERT_NEGATIVE, "negative (angry + disgust + fear + sad)"), *((label, label) for label in LABELS)]


class EmotionSession(models.Model):
    """A session: frames from one or more sources analysed into one timeline."""

    class Kind(models.TextChoices):
        CLASSROOM = "classroom", "Classroom"
        CROWD = "crowd", "Crowd"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        ENDED = "ended", "Ended"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="emotion_sessions")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLASSROOM)
    target_fps = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(30.0)],
        help_text="Frames per second the browser sends.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    frames_received = models.PositiveIntegerField(default=0, help_text="Valid frames accepted for analysis.")
    frames_processed = models.PositiveIntegerField(default=0)
    frames_dropped = models.PositiveIntegerField(
        default=0, help_text="Frames discarded by backpressure (latest frame wins) or expired before analysis."
    )
    frames_rejected = models.PositiveIntegerField(default=0, help_text="Invalid messages (not an image, too large).")
    uploads_count = models.PositiveIntegerField(default=0, help_text="Photo/video uploads so far (source upload:<n>).")
    # --- issue 12: participant notice, lawful-use confirmation, alerts ---
    lawful_use_confirmed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the operator confirmed that this use is lawful where they are (EU AI Act Art. 5(1)(f)).",
    )
    operator_name = models.CharField(
        max_length=200, blank=True, default="", help_text="Who runs the session, as told to participants."
    )
    notice_code = models.CharField(
        max_length=16,
        null=True,
        blank=True,
        unique=True,
        help_text="Code of the public participant-notice link /n/<code>/ (set when the session is created).",
    )
    alerts_enabled = models.BooleanField(default=False, help_text="Flag sustained negative (or chosen) expressions.")
    alert_emotion = models.CharField(
        max_length=16,
        default=ALERT_NEGATIVE,
        choices=ALERT_CHOICES,
        help_text="'negative' (angry + disgust + fear + sad) or one of the seven labels.",
    )
    alert_threshold = models.FloatField(
        default=0.5,
        validators=[MinValueValidator(0.05), MaxValueValidator(1.0)],
        help_text="Share (mean probability, 0..1) that must be exceeded.",
    )
    alert_duration_s = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(5), MaxValueValidator(3600)],
        help_text="Seconds the share must stay above the threshold.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}, #{self.pk})"


class Frame(models.Model):
    """One analysed frame. ``offset_s`` is seconds from ``session.created_at`` to the capture time."""

    session = models.ForeignKey(EmotionSession, on_delete=models.CASCADE, related_name="frames")
    source = models.CharField(max_length=64, default="camera", help_text="'camera' or 'upload:<n>'.")
    sequence = models.PositiveIntegerField(help_text="Sequence number within the source.")
    captured_at = models.DateTimeField(help_text="Client capture time (camera) or upload time + video offset.")
    offset_s = models.FloatField(help_text="Seconds since the session was created.")
    processed_at = models.DateTimeField(auto_now_add=True)
    processing_ms = models.FloatField(help_text="Decode + detect + classify time in the worker, ms.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    face_count = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["session", "offset_s", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "source", "sequence"], name="frame_unique_sequence"),
        ]
        indexes = [models.Index(fields=["session", "offset_s"])]

    def __str__(self) -> str:
        return f"frame {self.source}#{self.sequence} of session {self.session_id} ({self.face_count} faces)"


class Face(models.Model):
    """One face: bounding box in pixels of its frame and probabilities in FER2013 label order."""

    frame = models.ForeignKey(Frame, on_delete=models.CASCADE, related_name="faces")
    session = models.ForeignKey(EmotionSession, on_delete=models.CASCADE, related_name="faces")
    x = models.PositiveIntegerField()
    y = models.PositiveIntegerField()
    w = models.PositiveIntegerField()
    h = models.PositiveIntegerField()
    too_small = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Face too small to read its expression (inference.recognizer): counted, left out of emotion shares.",
    )
    label = models.CharField(max_length=16, choices=[(label, label) for label in LABELS])
    score = models.FloatField(help_text="Probability of the label, 0..1.")
    p_angry = models.FloatField()
    p_disgust = models.FloatField()
    p_fear = models.FloatField()
    p_happy = models.FloatField()
    p_sad = models.FloatField()
    p_surprise = models.FloatField()
    p_neutral = models.FloatField()
    track = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Anonymous track number within the frame's source (one camera connection): the same number in "
        "consecutive frames is the same face, by box position only (no identity, no embedding). NULL for uploads.",
    )
    smoothed_label = models.CharField(max_length=16, blank=True, default="", db_default="")
    sp_angry = models.FloatField(null=True, blank=True)
    sp_disgust = models.FloatField(null=True, blank=True)
    sp_fear = models.FloatField(null=True, blank=True)
    sp_happy = models.FloatField(null=True, blank=True)
    sp_sad = models.FloatField(null=True, blank=True)
    sp_surprise = models.FloatField(null=True, blank=True)
    sp_neutral = models.FloatField(null=True, blank=True)
    yaw = models.FloatField(
        null=True,
        blank=True,
        help_text="Head yaw in degrees (inference.pose): positive turned toward the image's right; NULL when not "
        "estimated (too small, no keypoints).",
    )
    pitch = models.FloatField(null=True, blank=True, help_text="Head pitch in degrees: positive chin up.")
    roll = models.FloatField(null=True, blank=True, help_text="Head roll in degrees: positive clockwise in the image.")

    class Meta:
        ordering = ["frame_id", "id"]
        indexes = [models.Index(fields=["session", "frame"])]

    def __str__(self) -> str:
        return f"{self.label} face ({self.score:.2f}) in frame {self.frame_id}"

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The face's bounding box ``(x, y, w, h)`` in pixels of its analysed frame (``frame.width`` x
        ``frame.height``): top-left corner ``(x, y)``, width ``w`` and height ``h``, all >= 0."""
        return (self.x, self.y, self.w, self.h)

    @property
    def probabilities(self) -> list[float]:
        """The 7 class probabilities (each 0..1, summing to ~1) in FER2013 label order, ``inference.LABELS``:
        angry, disgust, fear, happy, sad, surprise, neutral. ``label`` is the argmax, ``score`` its value."""
        return [getattr(self, f) for f in PROBABILITY_FIELDS]

    @property
    def smoothed_probabilities(self) -> list[float] | None:
        """The track's smoothed probabilities after this frame (LABELS order), ``None`` for an untracked face."""
        values = [getattr(self, f) for f in SMOOTHED_FIELDS]
        return None if values[0] is None else values

    @property
    def head_pose(self) -> dict[str, float] | None:
        """``{"yaw", "pitch", "roll"}`` in degrees (``inference.pose`` conventions), ``None`` when not estimated."""
        if self.yaw is None or self.pitch is None or self.roll is None:
            return None
        return {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}

    @property
    def facing_camera(self) -> bool | None:
        """Whether the head faces the camera (``inference.pose.facing_camera``), ``None`` without a head pose."""
        if self.yaw is None or self.pitch is None:
            return None
        return facing_camera(self.yaw, self.pitch)


class TimelineBucket(models.Model):
    """Running sums for the frames whose ``offset_s`` lies in ``[second, second + 1)``."""

    session = models.ForeignKey(EmotionSession, on_delete=models.CASCADE, related_name="buckets")
    second = models.PositiveIntegerField()
    frames = models.PositiveIntegerField(default=0)
    faces = models.PositiveIntegerField(default=0, help_text="Faces whose expression was read (emotion sums).")
    faces_too_small = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Faces seen but too small to read."
    )
    sum_p_angry = models.FloatField(default=0.0)
    sum_p_disgust = models.FloatField(default=0.0)
    sum_p_fear = models.FloatField(default=0.0)
    sum_p_happy = models.FloatField(default=0.0)
    sum_p_sad = models.FloatField(default=0.0)
    sum_p_surprise = models.FloatField(default=0.0)
    sum_p_neutral = models.FloatField(default=0.0)

    class Meta:
        ordering = ["session", "second"]
        constraints = [models.UniqueConstraint(fields=["session", "second"], name="bucket_unique_second")]

    def __str__(self) -> str:
        return f"session {self.session_id} second {self.second}: {self.frames} frames, {self.faces} faces"


class ExportRecord(models.Model):
    """Audit log entry: ``user`` exported ``session`` in ``format`` at ``created_at``.

    ``username`` and ``session_label`` are copies, so the entry still says who exported what after the user is
    deleted (``user`` becomes NULL) or the session is purged (``session`` becomes NULL).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    username = models.CharField(
        max_length=150, blank=True, default="", help_text="Username at export time, kept after the user is deleted."
    )
    session = models.ForeignKey(EmotionSession, on_delete=models.SET_NULL, null=True, related_name="exports")
    session_label = models.CharField(max_length=250, help_text="Session name and id, kept after a purge.")
    format = models.CharField(max_length=8)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        when = f"{self.created_at:%Y-%m-%d %H:%M}" if self.created_at else "(unsaved)"
        return f"{self.format} export of {self.session_label} at {when}"
