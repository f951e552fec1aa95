"""Production settings: the secret key rule, HTTPS switches and ``check --deploy`` under the compose environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO

GOOD_KEY = "k" * 20 + "-random-enough-for-this-test-0123456789"


def _django(env_overrides: dict[str, str], code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with Django set up under ``env_overrides`` (no inherited DJANGO_*/FER_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FER_", "API_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "fer_platform.settings", **env_overrides}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "key", ["", "change-me-to-a-long-random-string", "insecure-quick-start-key-0123456789abc", "short"]
)
def test_production_refuses_to_start_without_a_real_secret_key(key):
    result = _django({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": key}, "print('started')")
    assert result.returncode != 0 and "started" not in result.stdout
    assert "DJANGO_SECRET_KEY must be set to a long random value" in result.stderr


def test_debug_runs_without_a_key_and_production_runs_with_one():
    assert _django({"DJANGO_DEBUG": "true"}, "print('started')").stdout.strip() == "started"
    assert _django({"DJANGO_SECRET_KEY": GOOD_KEY}, "print('started')").stdout.strip() == "started"


def test_https_switch_turns_on_secure_cookies_hsts_redirect_and_the_proxy_header():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_PROXY_SSL_HEADER)"
    )
    on = _django({"DJANGO_SECRET_KEY": GOOD_KEY, "DJANGO_HTTPS": "true"}, code).stdout.split(maxsplit=4)
    assert on == ["True", "True", "True", "31536000", "('HTTP_X_FORWARDED_PROTO', 'https')\n"]
    off = _django({"DJANGO_SECRET_KEY": GOOD_KEY}, code).stdout.split()
    assert off == ["False", "False", "False", "0", "None"]


def test_check_deploy_is_clean_under_the_compose_environment():
    """``manage.py check --deploy --fail-level WARNING`` with the web service's environment from docker-compose.yml
    and the operator's values from .env.example (secrets filled in, as the README tells)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            env[name] = value
    env |= {k: str(v) for k, v in compose["services"]["web"]["environment"].items() if "${" not in str(v)}
    env["DJANGO_SECRET_KEY"] = GOOD_KEY
    env.pop("DATABASE_URL", None)  # the check needs no database
    result = _django(
        env, "from django.core.management import call_command; call_command('check', deploy=True, fail_level='WARNING')"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "System check identified no issues" in result.stdout + result.stderr
