from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    """Emotion sessions: live streams, uploads, stored results, dashboards, reports and the REST API."""

    name = "sessions_app"
    verbose_name = "Emotion sessions"
    default_auto_field = "django.db.models.BigAutoField"
