"""Django project of the facial-emotion analytics platform."""

from fer_platform.celery import app as celery_app

__all__ = ("celery_app",)
