"""Celery application: broker and settings come from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fer_platform.settings")

app = Celery("fer_platform", include=["sessions_app.maintenance"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
