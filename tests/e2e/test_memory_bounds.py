"""Bounded memory of the web process for hostile uploads, through the real daphne (``manage.py serve``): a
decompression-bomb PNG is refused from its header, an anonymous 60 MB upload is refused before it is parsed, and
the web process's RSS stays within 100 MB of where it was."""

from __future__ import annotations

import http.cookiejar
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from urllib.parse import urlparse

import pytest

from sessions_app.models import Frame
from tests.helpers import process_listening_on

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MB = 1024 * 1024


def _png_bomb(side: int = 20000) -> bytes:
    """A valid PNG of ``side`` x ``side`` black RGB pixels (1.2 GB decoded, ~1 MB encoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _Browser:
    """A cookie-keeping HTTP client that logs in through the form, as a browser does (stdlib only)."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def get(self, path: str) -> str:
        return self.opener.open(self.base + path, timeout=60).read().decode()

    def login(self, username: str, password: str) -> None:
        self.get("/accounts/login/")
        body = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": self.csrf()})
        self.opener.open(self.base + "/accounts/login/", body.encode(), timeout=60)
        assert any(c.name == "sessionid" for c in self.jar), "login failed"

    def upload(self, path: str, filename: str, data: bytes) -> tuple[int, str]:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{self.csrf()}\r\n',
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n",
        ]
        body = "".join(parts).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            self.base + path,
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Referer": self.base + path},
        )
        try:
            with self.opener.open(request, timeout=120) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def test_a_20000_px_png_upload_is_refused_from_its_header_and_memory_stays_flat(
    daphne_server, django_user_model, make_session
):
    user = django_user_model.objects.create_user(username="bomber", password="bomb-password-1")
    session = make_session(user)
    web = process_listening_on(urlparse(daphne_server).port)
    browser = _Browser(daphne_server)
    browser.login("bomber", "bomb-password-1")
    bomb = _png_bomb()
    assert len(bomb) < 2 * MB
    before = web.memory_info().rss
    status, page = browser.upload(f"/sessions/{session.pk}/upload/", "bomb.png", bomb)
    after = web.memory_info().rss
    assert status in (200, 400) and re.search(r"too large: 20000x20000", page), page[-2000:]
    assert after - before < 100 * MB, (before // MB, after // MB)
    assert not Frame.objects.filter(session=session).exists()


def test_an_anonymous_upload_is_refused_before_it_is_parsed(daphne_server, django_user_model, make_session):
    session = make_session(django_user_model.objects.create_user(username="owner", password="owner-password-1"))
    web = process_listening_on(urlparse(daphne_server).port)
    anonymous = _Browser(daphne_server)
    anonymous.get("/accounts/login/")  # a CSRF cookie, as an attacker's page would have
    before = web.memory_info().rss
    status, page = anonymous.upload(f"/sessions/{session.pk}/upload/", "big.mp4", b"\x00" * (40 * MB))
    assert status == 413 and "log in first" in page
    assert web.memory_info().rss - before < 100 * MB


def test_a_websocket_message_over_the_frame_limit_gets_too_large_and_the_socket_stays(
    daphne_server, teacher, make_session, settings
):
    """daphne's own limit is 1 MiB by default, which would drop the socket; ``manage.py serve`` lets messages up to
    twice ``FER_MAX_FRAME_BYTES`` through, so the consumer answers the documented ``too_large`` error."""
    import asyncio
    import json

    import websockets

    from tests.helpers import cookie

    session = make_session(teacher)
    port = urlparse(daphne_server).port
    session_cookie = f"sessionid={cookie(teacher)}"

    async def talk() -> list[dict]:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/ws/sessions/{session.pk}/stream/",
            additional_headers={"Cookie": session_cookie},
            origin=daphne_server,
            max_size=2**22,
        ) as ws:
            ready = json.loads(await ws.recv())
            oversized = b"\xff\xd8\xff" + b"\x00" * int(1.5 * MB) + b"\xff\xd9"
            assert len(oversized) > settings.FER_MAX_FRAME_BYTES
            await ws.send(oversized)
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(b"not an image")  # still open and answering
            again = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return [ready, error, again]

    ready, error, again = asyncio.run(talk())
    assert ready["type"] == "ready"
    assert (error["type"], error["code"]) == ("error", "too_large")
    assert (again["type"], again["code"]) == ("error", "not_an_image")
