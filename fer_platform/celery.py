"""Celery application: broker and settings come from Django settings (``CELERY_*``).

Database connections of the workers follow Django's request rule around every task (``close_old_connections`` on
``task_prerun`` and ``task_postrun``): kept for ``DATABASE_CONN_MAX_AGE`` seconds and health-checked before reuse
(``CONN_HEALTH_CHECKS``), closed after each task when it is 0. Celery's own Django fixup would close them around every
task (``CELERY_DB_REUSE_MAX`` in settings turns that off), which cost a new connection for every camera frame.
"""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fer_platform.settings")

app = Celery("fer_platform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender=None, **_kwargs) -> None:
    """Drop database connections that are too old or unusable, as Django does at each request's start and end.

    ``sender``: the task. Eager tasks (run inside the caller, e.g. a test's transaction) are left alone, as the
    fixup does."""
    from django.db import close_old_connections

    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()
