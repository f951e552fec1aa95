"""Same-origin check of WebSocket handshakes (cross-site WebSocket hijacking protection).

Browsers send cookies with a WebSocket handshake to any site, so a page on another origin could open a camera
stream in a logged-in teacher's name. Channels' ``AllowedHostsOriginValidator`` compares only the Origin's host with
``ALLOWED_HOSTS`` and ignores scheme and port. This validator accepts a handshake only when its ``Origin`` is exactly
the origin the page was served from (scheme, host and port, as Django's CSRF check does for HTTPS POSTs) or is listed
in ``CSRF_TRUSTED_ORIGINS``, and the ``Host`` is one of ``ALLOWED_HOSTS``. Refused handshakes get HTTP 403.
"""

from __future__ import annotations

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def expected_origin(scope: dict) -> str | None:
    """The origin (``scheme://host[:port]``) a same-site page of this handshake has, or ``None`` without a Host.

    The scheme is ``https`` when the connection is TLS (``wss``) or, behind the trusted proxy
    (``settings.SECURE_PROXY_SSL_HEADER``), when the proxy says so in ``X-Forwarded-Proto``.
    """
    host = _header(scope, b"host")
    if not host:
        return None
    secure = scope.get("scheme") in ("wss", "https")
    if settings.SECURE_PROXY_SSL_HEADER:
        name, value = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode()
        secure = secure or (_header(scope, header) or "").split(",")[0].strip() == value
    return f"{'https' if secure else 'http'}://{host.lower()}"


def origin_allowed(scope: dict) -> bool:
    """Whether the handshake in ``scope`` comes from an allowed origin (see the module doc)."""
    origin = (_header(scope, b"origin") or "").lower().rstrip("/")
    host = _header(scope, b"host") or ""
    domain, _ = split_domain_port(host)
    if not origin or not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    trusted = {o.lower().rstrip("/") for o in settings.CSRF_TRUSTED_ORIGINS}
    return origin == expected_origin(scope) or origin in trusted


class SameOriginValidator:
    """ASGI middleware for WebSocket routes: passes handshakes that ``origin_allowed``, denies the others (403)."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
