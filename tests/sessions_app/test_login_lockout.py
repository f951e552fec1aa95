"""Login throttling of the HTML form and the API token endpoint (django-axes), per username and client IP."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "right-password-1"


@pytest.fixture
def victim(django_user_model):
    return django_user_model.objects.create_user(username="victim", password=PASSWORD)


def _form_login(client: Client, username: str, password: str, ip: str = "10.0.0.1", **headers):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip, **headers)


def test_the_form_locks_a_username_and_ip_after_five_wrong_passwords(victim, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _form_login(client, "victim", "wrong").status_code == 200  # the form again, with an error
    locked = _form_login(client, "victim", "wrong")
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    assert int(locked["Retry-After"]) == 900
    # even the right password is refused from there now, and no session is opened
    right = _form_login(client, "victim", PASSWORD)
    assert right.status_code == 429 and "_auth_user_id" not in client.session


def test_the_lock_is_per_username_and_ip(victim, django_user_model, settings):
    django_user_model.objects.create_user(username="colleague", password=PASSWORD)
    attacker = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _form_login(attacker, "victim", "wrong")
    assert _form_login(Client(), "victim", PASSWORD, ip="10.0.0.2").status_code == 302  # the teacher elsewhere
    assert _form_login(Client(), "colleague", PASSWORD).status_code == 302  # a colleague behind the same NAT


def test_a_forged_x_forwarded_for_does_not_reset_the_count(victim, settings):
    client = Client()
    for i in range(settings.AXES_FAILURE_LIMIT):
        _form_login(client, "victim", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert _form_login(client, "victim", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429


def test_the_api_token_endpoint_shares_the_lock_and_answers_json(victim, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _form_login(client, "victim", "wrong")
    response = client.post("/api/v1/auth/token/", {"username": "victim", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429 and response.json()["error"]["code"] == "locked_out"


def test_a_successful_login_resets_the_count(victim, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _form_login(client, "victim", "wrong")
    assert _form_login(client, "victim", PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _form_login(client, "victim", "wrong")
    assert _form_login(client, "victim", PASSWORD).status_code == 302
