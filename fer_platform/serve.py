"""The web process: daphne with limits taken from settings.

``python manage.py serve`` (or ``python -m fer_platform.serve``) runs daphne on ``fer_platform.asgi:application``
with:

- ``--websocket-max-message-size`` = ``settings.FER_WS_MAX_MESSAGE_BYTES`` (daphne's default is 1 MiB, below which
  an oversized frame would drop the socket instead of getting the documented ``too_large`` error);
- request bodies above ``settings.FER_MAX_REQUEST_BYTES`` refused with ``413`` as soon as their ``Content-Length``
  (or, for chunked bodies, the running total) is known, before the body is read. Daphne would otherwise buffer the
  whole body and hand it to Django in one go, so one anonymous 200 MB POST costs hundreds of MB of memory. The TLS
  proxy in front (Caddy) enforces the same limit; this one protects the process itself.
"""

from __future__ import annotations

import json
import logging
import sys

from daphne import http_protocol
from daphne.cli import CommandLineInterface

logger = logging.getLogger(__name__)


class _Discard:
    """A write-only sink standing in for the request body of a refused request."""

    closed = False

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args) -> int:
        return 0

    def read(self, *args) -> bytes:
        return b""

    def close(self) -> None:
        self.closed = True


class BoundedWebRequest(http_protocol.WebRequest):
    """daphne's HTTP request with a body-size limit (``max_body_bytes``, class attribute set by ``serve``)."""

    max_body_bytes: int = 0
    _refused = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        """Headers are in: refuse a declared body above the limit before any of it is read."""
        if self.max_body_bytes and length is not None and length > self.max_body_bytes:
            self._refuse(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """A piece of the body: count it (chunked bodies declare no length) and refuse past the limit."""
        if self._refused:
            return
        self._received += len(data)
        if self.max_body_bytes and self._received > self.max_body_bytes:
            self._refuse(None)
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        """Hand a complete request to the application unless it was refused."""
        if self._refused:
            return
        super().process()

    def _refuse(self, length: int | None) -> None:
        self._refused = True
        self.content = _Discard()
        body = json.dumps(
            {
                "error": {
                    "code": "too_large",
                    "message": f"request body over the limit of {self.max_body_bytes} bytes",
                    "details": {"content_length": length},
                }
            }
        ).encode()
        head = (
            "HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        logger.warning("refused a request body of %s bytes (limit %s)", length or "over", self.max_body_bytes)
        self.channel.transport.write(head + body)
        self.channel.transport.loseConnection()


def daphne_args(argv: list[str]) -> list[str]:
    """daphne command-line arguments: ``argv`` (e.g. ``["-b", "0.0.0.0", "-p", "8000", "--proxy-headers"]``) plus
    the message-size limit from settings and the application path."""
    from django.conf import settings

    return [
        *argv,
        "--websocket-max-message-size",
        str(settings.FER_WS_MAX_MESSAGE_BYTES),
        "--websocket-max-frame-size",
        str(settings.FER_WS_MAX_MESSAGE_BYTES),
        "fer_platform.asgi:application",
    ]


def serve(argv: list[str]) -> None:
    """Run daphne (blocks until it stops) with the limits of the module doc. ``argv``: extra daphne arguments."""
    import django
    from django.conf import settings

    django.setup()
    BoundedWebRequest.max_body_bytes = int(settings.FER_MAX_REQUEST_BYTES)
    # daphne's HTTPFactory builds its requests from this module attribute.
    http_protocol.WebRequest = BoundedWebRequest
    CommandLineInterface().run(daphne_args(argv))


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fer_platform.settings")
    serve(sys.argv[1:])
