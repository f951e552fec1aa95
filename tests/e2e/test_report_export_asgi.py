"""The export through the real ASGI server (daphne): a 100k-face CSV streams completely while the server's
resident memory stays flat (Django would gather a synchronous streaming body into one list under ASGI)."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import pytest
from rest_framework.authtoken.models import Token

from tests.helpers import big_session_create, process_listening_on, session_with_frames

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("isolated_cache_and_fast_passwords"),
]


def _download(base: str, path: str, token: str, on_piece=None) -> tuple[int, int, int]:
    """GET ``path`` with token auth; returns (status, bytes, line count), reading 64 KiB at a time."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    conn.request("GET", path, headers={"Authorization": f"Token {token}"})
    response = conn.getresponse()
    total = lines = 0
    while piece := response.read(65536):
        total += len(piece)
        lines += piece.count(b"\n")
        if on_piece:
            on_piece()
    conn.close()
    return response.status, total, lines


def test_large_csv_export_streams_flat_under_daphne(daphne_server, teacher_a, teacher_b):
    token = Token.objects.create(user=teacher_a).key
    small = session_with_frames(teacher_a, name="Warm-up")
    big = big_session_create(teacher_a, frames=10_000, faces_per_frame=10)
    foreign = session_with_frames(teacher_b, name="Foreign")
    daphne = process_listening_on(urlsplit(daphne_server).port)

    # warm up: imports, connections, first request
    status, _, lines = _download(daphne_server, f"/api/v1/sessions/{small.pk}/export/?format=csv", token)
    assert (status, lines) == (200, 26)
    status, _, _ = _download(daphne_server, f"/api/v1/sessions/{foreign.pk}/export/?format=csv", token)
    assert status == 404

    baseline = peak = daphne.memory_info().rss

    def sample():
        nonlocal peak
        peak = max(peak, daphne.memory_info().rss)

    started = time.monotonic()
    status, total, lines = _download(daphne_server, f"/api/v1/sessions/{big.pk}/export/?format=csv", token, sample)
    elapsed = time.monotonic() - started
    assert status == 200
    assert lines == 100_001 and total > 20_000_000
    growth = peak - baseline
    assert growth < 12_000_000, f"daphne grew by {growth / 1e6:.1f} MB for a {total / 1e6:.1f} MB export"
    print(f"ASGI CSV export: {total / 1e6:.1f} MB in {elapsed:.1f} s, daphne RSS +{growth / 1e6:.1f} MB")
