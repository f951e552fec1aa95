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
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class _SettingsRateMixin:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        """DRF's rate check; ``True`` (with a warning) when the cache holding the counters cannot be reached."""
        try:
            return super().allow_request(request, view)
        except Exception:  # noqa: BLE001 - redis-py, hiredis and Django raise different connection errors
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
