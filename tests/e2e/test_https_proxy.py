"""The stack served as a deployment serves it: Caddy (``deploy/Caddyfile``, ``tls internal``) in front of
``manage.py serve --proxy-headers`` under a non-localhost name. Headless Chromium resolves ``fer.test`` to this
machine, logs in over HTTPS, gets a secure context (the camera), streams its fake camera over ``wss://`` and gets
face results from a real Celery worker; the proxy's security headers and body limit are there."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest

from tests.helpers import CHROMIUM, REPO, free_port, start_process, stop_process, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HOST = "fer.test"


@pytest.fixture(scope="module")
def https_site(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne behind Caddy on https://fer.test:<port>; yields ``{"url", "port", "ca"}``."""
    caddy = shutil.which("caddy")
    if caddy is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "caddy"], check=False, timeout=600, capture_output=True)
        caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("Caddy is missing: apt-get install caddy")
    tmp = tmp_path_factory.mktemp("https")
    web_port, https_port = free_port(), free_port()
    site = f"https://{HOST}:{https_port}"
    with django_db_blocker.unblock():
        env = subprocess_env()
    env |= {
        "DJANGO_HTTPS": "true",
        "DJANGO_ALLOWED_HOSTS": f"{HOST},127.0.0.1,localhost",
        "DJANGO_CSRF_TRUSTED_ORIGINS": site,
        "API_NUM_PROXIES": "1",
    }
    web_log = tmp / "daphne.log"
    serve = [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(web_port), "--proxy-headers"]
    web = start_process(serve, env, web_log, port=web_port)
    caddy_env = dict(os.environ) | {
        "SITE_ADDRESS": f"{HOST}:{https_port}",
        "CADDY_TLS": "tls internal",
        "CADDY_HTTPS_PORT": str(https_port),
        "CADDY_HTTP_PORT": str(free_port()),
        "UPSTREAM": f"127.0.0.1:{web_port}",
        "MAX_BODY": "2MB",
        "XDG_DATA_HOME": str(tmp / "data"),  # a CA of this test run only
        "XDG_CONFIG_HOME": str(tmp / "config"),
    }
    caddy_cmd = [caddy, "run", "--config", str(REPO / "deploy" / "Caddyfile"), "--adapter", "caddyfile"]
    proxy = start_process(caddy_cmd, caddy_env, tmp / "caddy.log", port=https_port)
    ca = tmp / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    yield {"url": site, "port": https_port, "ca": ca, "web_log": web_log}
    stop_process(proxy)
    stop_process(web)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to fer.test (SNI and certificate name) at 127.0.0.1, trusting this run's Caddy CA."""

    def __init__(self, site: dict):
        super().__init__(HOST, site["port"], context=ssl.create_default_context(cafile=str(site["ca"])), timeout=30)

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=HOST)


def _request(site: dict, method: str, path: str, body: bytes | None = None) -> http.client.HTTPResponse:
    connection = _PinnedHTTPS(site)
    connection.request(method, path, body=body)
    response = connection.getresponse()
    response.read()
    return response


def test_the_proxy_serves_tls_from_its_own_ca_with_the_security_headers_and_body_limit(https_site):
    response = _request(https_site, "GET", "/accounts/login/")
    assert response.status == 200
    headers = response.headers
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "camera=(self)" in headers["Permissions-Policy"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "Secure" in headers["Set-Cookie"]  # Django knows it is behind TLS (X-Forwarded-Proto)
    too_big = _request(https_site, "POST", "/accounts/login/", body=b"x" * (3 * 1024 * 1024))
    # Refused by the proxy, never handed to Django: 413 from Caddy >= 2.7 (the compose image), 502 from Debian 12's
    # Caddy 2.6, which aborts the upstream request at the limit.
    assert too_big.status in (413, 502)
    time.sleep(1)
    access_log = https_site["web_log"].read_text()
    assert '"GET /accounts/login/"' in access_log and '"POST /accounts/login/"' not in access_log


def test_a_teacher_streams_over_wss_from_a_non_localhost_name(
    https_site, django_user_model, make_session, celery_worker, chromium_args, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    user = django_user_model.objects.create_user(username="lan-teacher", password="lan-password-1")
    session = make_session(user)
    args = [*chromium_args, f"--host-resolver-rules=MAP {HOST} 127.0.0.1", "--ignore-certificate-errors"]
    sockets: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(30_000)
            page.on("websocket", lambda ws: sockets.append(ws.url))
            page.goto(f"{https_site['url']}/accounts/login/")
            page.fill("#id_username", "lan-teacher")
            page.fill("#id_password", "lan-password-1")
            page.click("button[type=submit]")
            page.wait_for_url(f"{https_site['url']}/")
            page.goto(f"{https_site['url']}/sessions/{session.pk}/live/")
            assert page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
            page.click("#start-camera")
            expect(page.locator("#overlay .face-box").first).to_be_visible(timeout=60_000)
        finally:
            browser.close()
    stream = f"wss://{HOST}:{https_site['port']}/ws/sessions/{session.pk}/stream/"
    assert stream in sockets, sockets
    session.refresh_from_db()
    assert session.frames_processed >= 1
