"""Rate limits (``sessions_app.throttling``): token requests per client IP (trusting only the configured proxies),
exports per user."""

from __future__ import annotations

import secrets

import pytest
from django.test import Client

from sessions_app.models import ExportRecord
from tests.helpers import PASSWORD, error_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]

BASE = "/api/v1/sessions/"


def test_auth_throttle_ignores_client_supplied_x_forwarded_for(teacher_a):
    """Without trusted proxies (API_NUM_PROXIES=0, the default) the client IP is the socket address: a new
    X-Forwarded-For on every request does not buy a new budget. (Every guess is for another username, so the
    per-username login lockout does not answer first.)"""
    anonymous = Client()
    statuses = [
        anonymous.post(
            "/api/v1/auth/token/",
            {"username": f"guess-{secrets.token_hex(4)}", "password": "wrong"},
            HTTP_X_FORWARDED_FOR=f"203.0.113.{i}",
        ).status_code
        for i in range(11)
    ]
    assert statuses == [400] * 10 + [429]
    refused = anonymous.post(
        "/api/v1/auth/token/", {"username": "teacher_a", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="198.51.100.7"
    )
    assert refused.status_code == 429 and error_of(refused)["code"] == "throttled"


def test_auth_throttle_counts_the_client_behind_one_trusted_proxy(teacher_a, settings):
    """API_NUM_PROXIES=1: the address the proxy appended (last X-Forwarded-For entry) is the client; what the
    client itself put in front does not matter."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = Client(REMOTE_ADDR="10.0.0.2")

    def post(xff: str) -> int:
        return proxy.post(
            "/api/v1/auth/token/",
            {"username": f"guess-{secrets.token_hex(4)}", "password": "wrong"},
            HTTP_X_FORWARDED_FOR=xff,
        ).status_code

    assert [post(f"{i}.{i}.{i}.{i}, 198.51.100.7") for i in range(11)] == [400] * 10 + [429]
    assert post("198.51.100.8") == 400  # another client behind the same proxy has its own budget


def test_auth_is_throttled(teacher_a):
    """Default rate 10/min per client IP: the 11th request is refused, with a Retry-After header."""
    anonymous = Client()
    statuses = [
        anonymous.post(
            "/api/v1/auth/token/", {"username": f"guess-{secrets.token_hex(4)}", "password": "wrong"}
        ).status_code
        for _ in range(10)
    ]
    assert statuses == [400] * 10
    response = anonymous.post("/api/v1/auth/token/", {"username": "teacher_a", "password": PASSWORD})
    assert response.status_code == 429
    error = error_of(response)
    assert error["code"] == "throttled"
    assert 1 <= error["details"]["retry_after_s"] <= 60
    assert int(response["Retry-After"]) >= 1


def test_export_is_throttled_per_user(clients, fixture_session, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "export": "2/hour"},
    }
    url = f"{BASE}{fixture_session.pk}/export/"
    assert [clients["teacher_a"].get(url).status_code for _ in range(2)] == [200, 200]
    refused = clients["teacher_a"].get(url)
    assert refused.status_code == 429 and error_of(refused)["code"] == "throttled"
    assert clients["admin"].get(url).status_code == 200  # another user has their own budget
    assert ExportRecord.objects.filter(user__username="teacher_a").count() == 2  # refused exports are not logged


def test_throttles_let_requests_through_while_the_cache_is_down(teacher_a, settings):
    """A Redis restart must not turn every token request and export into a 500: the limits fail open."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    response = Client().post("/api/v1/auth/token/", {"username": "teacher_a", "password": PASSWORD})
    assert response.status_code == 200 and response.json()["token"]
