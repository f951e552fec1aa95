"""Forms of the sessions web pages."""

from django import forms
from django.conf import settings

from sessions_app.models import EmotionSession


class SessionCreateForm(forms.ModelForm):
    """Name, kind and target frame rate of a new session."""

    class Meta:
        model = EmotionSession
        fields = ["name", "kind", "target_fps"]
        labels = {"target_fps": "Target frame rate (fps)"}
        widgets = {"target_fps": forms.NumberInput(attrs={"step": "any", "min": "0.1", "max": "30"})}


class UploadForm(forms.Form):
    """A photo (JPEG/PNG) or a short video file to analyse into a session."""

    file = forms.FileField(help_text="JPEG/PNG photo or a short video (MP4, AVI, WebM...).")

    def clean_file(self):
        f = self.cleaned_data["file"]
        if f.size > settings.FER_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"File larger than {settings.FER_MAX_UPLOAD_BYTES // 1_000_000} MB.")
        return f
