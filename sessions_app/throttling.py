"""Rate limits of the REST API: scopes ``auth`` (token requests, per client IP) and ``export`` (per user).

Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (env ``API_THROTTLE_AUTH``, ``API_THROTTLE_EXPORT``)
and are read on every request, so changed settings apply without a restart of the class. Counters live in the
default cache (Redis). Exceeding a rate is a 429 ``throttled`` error with a ``Retry-After`` header.

While the cache is unreachable (a Redis restart) the limits fail open: requests pass and a warning is logged,
instead of every token request and export answering 500.
"""

from __future__ import annotations

import logging

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, BaseThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The client's IP address as the API throttles see it (DRF's ``get_ident``): ``X-Forwarded-For`` is trusted
    only through ``API_NUM_PROXIES`` proxies, else the socket address. Used by django-axes for login throttling, so
    a client cannot dodge either limit by sending its own ``X-Forwarded-For``."""
    return BaseThrottle().get_ident(request)


def login_lockout_response(request, original_response=None, credentials=None):
    """django-axes' answer to a locked-out login (HTTP 429): the API's JSON error body under ``/api/``, else the
    ``registration/locked_out.html`` page. ``Retry-After`` gives the cool-off in seconds."""
    from django.conf import settings
    from django.http import JsonResponse
    from django.shortcuts import render

    cooloff_s = int(float(settings.AXES_COOLOFF_TIME or 0) * 3600)
    message = "too many failed logins for this username from this address; try again later"
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": {"code": "locked_out", "message": message, "details": None}}, status=429)
    else:
        context = {"failure_limit": settings.AXES_FAILURE_LIMIT, "cooloff_minutes": max(1, round(cooloff_s / 60))}
        response = render(request, "registration/locked_out.html", context, status=429)
    if cooloff_s:
        response["Retry-After"] = str(cooloff_s)
    return response


class _SettingsRateMixin:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        """DRF's rate check; ``True`` (with a warning) when the cache holding the counters cannot be reached."""
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("%s throttle skipped: cache unavailable", self.scope, exc_info=True)
            return True


class AuthRateThrottle(_SettingsRateMixin, AnonRateThrottle):
    """Token requests: limited per client IP address (the requester is not authenticated yet)."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ExportRateThrottle(_SettingsRateMixin, UserRateThrottle):
    """Exports (CSV/JSON/PDF): limited per user."""

    scope = "export"
