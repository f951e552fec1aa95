"""Rate limits of the REST API: scopes ``auth`` (token requests, per client IP) and ``export`` (per user).

Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (env ``API_THROTTLE_AUTH``, ``API_THROTTLE_EXPORT``)
and are read on every request, so changed settings apply without a restart of the class. Counters live in the
default cache (Redis). Exceeding a rate is a 429 ``throttled`` error with a ``Retry-After`` header.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class _SettingsRateMixin:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AuthRateThrottle(_SettingsRateMixin, AnonRateThrottle):
    """Token requests: limited per client IP address (the requester is not authenticated yet)."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ExportRateThrottle(_SettingsRateMixin, UserRateThrottle):
    """Exports (CSV/JSON/PDF): limited per user."""

    scope = "export"
