"""The web process (``manage.py serve``): request bodies over the limit are refused before daphne reads them, and
WebSocket messages up to twice the frame limit reach the consumer (which answers ``too_large``)."""

from __future__ import annotations

import json
import os
import socket
import sys

import psutil
import pytest

from tests.helpers import free_port, start_process, stop_process


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``manage.py serve`` on a free port (SQLite in a temp folder: no request here reaches the database)."""
    port = free_port()
    env = dict(os.environ)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path_factory.mktemp('serve')}/db.sqlite3"
    env["FER_MAX_REQUEST_BYTES"] = "5000000"
    log = tmp_path_factory.mktemp("serve-log") / "daphne.log"
    proc = start_process(
        [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(port)], env, log, port=port
    )
    yield {"port": port, "proc": proc, "log": log}
    stop_process(proc)


def _post(port: int, length: int, send: int, chunked: bool = False) -> bytes:
    """POST to the login form declaring ``length`` bytes (or chunked), send ``send`` bytes, return the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}".encode()
        s.sendall(b"POST /accounts/login/ HTTP/1.1\r\nHost: localhost\r\n" + framing + b"\r\n\r\n")
        block = b"x" * 65536
        sent = 0
        try:
            while sent < send:
                piece = block[: min(len(block), send - sent)]
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
        except OSError:
            pass  # the server closed the connection: what we are testing
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
        return data


def test_a_200_mb_anonymous_post_is_refused_before_it_is_read_and_memory_stays_flat(served):
    rss = psutil.Process(served["proc"].pid)
    before = rss.memory_info().rss
    reply = _post(served["port"], length=200_000_000, send=8_000_000)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "too_large"
    assert rss.memory_info().rss - before < 100 * 1024 * 1024


def test_a_chunked_body_is_cut_off_at_the_limit(served):
    reply = _post(served["port"], length=0, send=6_000_000, chunked=True)
    assert reply.startswith(b"HTTP/1.1 413")


def test_bodies_under_the_limit_still_reach_django(served):
    reply = _post(served["port"], length=10, send=10)
    assert reply.startswith(b"HTTP/1.1 403")  # Django's CSRF answer: the request got through to the app
