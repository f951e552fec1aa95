"""Forms of the sessions web pages."""

from django import forms
from django.conf import settings

from sessions_app.models import EmotionSession

LAWFUL_USE_TEXT = (
    "I confirm that this use is lawful where I am. In the EU, the AI Act (Art. 5(1)(f)) prohibits inferring "
    "emotions in workplaces and education institutions, except for medical or safety reasons."
)


class AlertFieldsMixin(forms.ModelForm):
    """The alert settings of a session, with the threshold entered as a percentage (5..100)."""

    alert_threshold_pct = forms.IntegerField(
        required=False,
        label="Alert threshold (%)",
        min_value=5,
        max_value=100,
        initial=50,
        help_text="Share of the faces' expression mix (mean probability) that must be exceeded.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("alert_emotion", "alert_duration_s"):  # optional: the model's defaults apply
            self.fields[name].required = False

    def clean(self) -> dict:
        """Copy ``alert_threshold_pct`` (percent) into the model's ``alert_threshold`` (0..1)."""
        data = super().clean()
        if data.get("alert_threshold_pct") is not None:
            data["alert_threshold"] = data["alert_threshold_pct"] / 100.0
        return data

    def alert_settings(self) -> dict:
        """The cleaned alert settings as keyword arguments of ``services.sessions.session_settings_update``."""
        data = self.cleaned_data
        return {
            "alerts_enabled": bool(data.get("alerts_enabled")),
            "alert_emotion": data.get("alert_emotion") or "negative",
            "alert_threshold": data.get("alert_threshold") or 0.5,
            "alert_duration_s": data.get("alert_duration_s") or 30,
        }


class SessionCreateForm(AlertFieldsMixin):
    """Name, kind, target frame rate, who runs it, the lawful-use confirmation and the (optional) alert."""

    lawful_use_confirmed = forms.BooleanField(required=True, label=LAWFUL_USE_TEXT)

    class Meta:
        model = EmotionSession
        fields = ["name", "kind", "target_fps", "operator_name", "alerts_enabled", "alert_emotion", "alert_duration_s"]
        labels = {
            "target_fps": "Target frame rate (fps)",
            "operator_name": "Who runs it (shown on the participant notice)",
            "alerts_enabled": "Flag sustained expressions (alert, off by default)",
            "alert_emotion": "Alert on",
            "alert_duration_s": "For at least (seconds)",
        }
        help_texts = {"operator_name": "For example “Ms Rivera, Lincoln High School”. Empty: your user name."}
        widgets = {"target_fps": forms.NumberInput(attrs={"step": "any", "min": "0.1", "max": "30"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        smallest = settings.FER_CLASSROOM_MIN_FACE_PX
        classroom = f"faces from about {smallest} px, faster" if smallest > 0 else "every face"
        crowd = "a camera over a crowd, small faces too"
        self.fields["kind"].help_text = f"Classroom: a camera in front of a class ({classroom}). Crowd: {crowd}."

    def session_fields(self) -> dict:
        """Keyword arguments of ``services.sessions.session_create``."""
        return {k: self.cleaned_data[k] for k in ("name", "kind", "target_fps")}


class SessionSettingsForm(AlertFieldsMixin):
    """Rename a session, change who runs it and its alert; confirm lawful use when that was never recorded (sessions
    created through the API or before the confirmation existed)."""

    lawful_use_confirmed = forms.BooleanField(required=False, label=LAWFUL_USE_TEXT)

    class Meta:
        model = EmotionSession
        fields = ["name", "operator_name", "alerts_enabled", "alert_emotion", "alert_duration_s"]
        labels = SessionCreateForm.Meta.labels

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.pk and not self.is_bound:
            self.initial["alert_threshold_pct"] = round(self.instance.alert_threshold * 100)
        if self.instance and self.instance.lawful_use_confirmed_at:
            del self.fields["lawful_use_confirmed"]  # recorded once, at its first confirmation


class CompareForm(forms.Form):
    """Sessions to compare: ``?ids=1&ids=2...`` (2 to 6 of the user's visible sessions)."""

    ids = forms.TypedMultipleChoiceField(coerce=int, choices=[])

    def __init__(self, *args, sessions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["ids"].choices = [(s.pk, s.name) for s in sessions]

    def clean_ids(self) -> list[int]:
        """2..6 session ids."""
        ids = self.cleaned_data["ids"]
        if not 2 <= len(ids) <= 6:
            raise forms.ValidationError("Choose between 2 and 6 sessions to compare.")
        return ids


class UploadForm(forms.Form):
    """A photo (JPEG/PNG) or a video file to analyse into a session."""

    file = forms.FileField(help_text="JPEG/PNG photo or a video (MP4, AVI, WebM...).")

    def clean_file(self):
        f = self.cleaned_data["file"]
        if f.size > settings.FER_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"File larger than {settings.FER_MAX_UPLOAD_BYTES // 1_000_000} MB.")
        return f
