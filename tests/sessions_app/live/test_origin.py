"""The WebSocket same-origin check in front of every consumer (``sessions_app.live.origin``): scheme, host and port
of the page must match the handshake's, or be a trusted origin; else the handshake is denied before any consumer."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator

from fer_platform.asgi import application

# A handshake that passes the check reaches a consumer, and Channels closes stale database connections around each
# consumer event in asgiref's shared thread, whose connection earlier async tests leave open: without database
# access these tests failed whenever they ran after the consumer tests.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("close_async_thread_db_connections")]


async def _handshake(origin: str | None, host: str, extra: list[tuple[bytes, bytes]] = ()) -> bool:
    headers = [(b"host", host.encode()), *extra]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    comm = WebsocketCommunicator(application, "/ws/sessions/1/watch/", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    await comm.disconnect()
    return connected


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://testserver", "testserver", True),
        ("http://localhost:8000", "localhost:8000", True),
        ("https://localhost:8000", "localhost:8000", False),  # scheme differs (no TLS here, no trusted proxy)
        ("http://localhost:9999", "localhost:8000", False),  # port differs
        ("http://evil.example", "localhost:8000", False),  # another site
        ("http://evil.example", "evil.example", False),  # DNS rebinding: Host not in ALLOWED_HOSTS
        (None, "localhost:8000", False),  # no Origin: not a browser page of ours
    ],
)
async def test_only_same_origin_pages_may_open_a_websocket(origin, host, allowed):
    assert await _handshake(origin, host) is allowed


async def test_behind_the_tls_proxy_the_https_origin_is_the_same_origin(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [(b"x-forwarded-proto", b"https")]
    assert await _handshake("https://localhost:8443", "localhost:8443", proxied) is True
    assert await _handshake("http://localhost:8443", "localhost:8443", proxied) is False
    settings.SECURE_PROXY_SSL_HEADER = None  # without a trusted proxy the header means nothing
    assert await _handshake("https://localhost:8443", "localhost:8443", proxied) is False


async def test_a_trusted_origin_from_settings_is_accepted(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example:8443"]
    settings.ALLOWED_HOSTS = ["school-server.lan"]
    assert await _handshake("https://app.example:8443", "school-server.lan") is True
