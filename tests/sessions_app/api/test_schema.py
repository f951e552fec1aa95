"""OpenAPI schema: generated and validated by drf-spectacular with warnings as errors; every endpoint documented;
the schema and the Swagger UI served to everyone, without a CDN."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_cache_and_fast_passwords")]

ENDPOINTS = {
    "/api/v1/auth/token/": {"post"},
    "/api/v1/sessions/": {"get", "post"},
    "/api/v1/sessions/{session_id}/": {"get"},
    "/api/v1/sessions/{session_id}/end/": {"post"},
    "/api/v1/sessions/{session_id}/timeline/": {"get"},
    "/api/v1/sessions/{session_id}/faces/": {"get"},
    "/api/v1/sessions/{session_id}/export/": {"get"},
    "/api/v1/sessions/{session_id}/report/": {"get"},
}


@pytest.fixture(scope="module")
def schema(tmp_path_factory, django_db_blocker):
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))  # raises on any warning
    return yaml.safe_load(path.read_text())


def test_every_endpoint_is_documented_with_errors(schema):
    paths = {p: ops for p, ops in schema["paths"].items() if p.startswith("/api/v1/")}
    assert {p: set(ops) - {"parameters"} for p, ops in paths.items()} == ENDPOINTS
    for path, methods in ENDPOINTS.items():
        for method in methods:
            op = schema["paths"][path][method]
            assert op.get("summary") or op.get("description"), (path, method)
            responses = set(op["responses"])
            if path != "/api/v1/auth/token/":
                assert "401" in responses, (path, method)
            if "{session_id}" in path:
                assert "404" in responses, (path, method)
                params = {p["name"]: p for p in op["parameters"]}
                assert params["session_id"]["schema"]["type"] == "integer"
    assert "429" in schema["paths"]["/api/v1/sessions/{session_id}/export/"]["get"]["responses"]
    # 403 wherever it can happen: writes through the browser session without a CSRF token (GETs never get 403;
    # the token endpoint has no authentication, so no CSRF check)
    for path, methods in ENDPOINTS.items():
        for method in methods:
            responses = schema["paths"][path][method]["responses"]
            can_403 = method == "post" and path != "/api/v1/auth/token/"
            assert ("403" in responses) == can_403, (path, method)
            if can_403:
                assert "CSRF" in responses["403"]["description"]
                assert responses["403"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
    assert "429" in schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]


def test_parameters_and_units_are_documented(schema):
    ops = schema["paths"]
    timeline = {p["name"]: p for p in ops["/api/v1/sessions/{session_id}/timeline/"]["get"]["parameters"]}
    assert timeline["bucket"]["schema"] == {"type": "integer", "maximum": 3600, "minimum": 1, "default": 5}
    assert "seconds" in timeline["bucket"]["description"]
    export = {p["name"]: p for p in ops["/api/v1/sessions/{session_id}/export/"]["get"]["parameters"]}
    assert export["format"]["schema"]["enum"] == ["csv", "json"]
    faces = {p["name"]: p for p in ops["/api/v1/sessions/{session_id}/faces/"]["get"]["parameters"]}
    assert {"from_s", "to_s", "page", "page_size"} <= set(faces)
    assert faces["page_size"]["schema"]["maximum"] == 500
    listing = {p["name"] for p in ops["/api/v1/sessions/"]["get"]["parameters"]}
    assert {"kind", "owner", "date_from", "date_to", "ordering", "page", "page_size"} <= listing
    components = schema["components"]["schemas"]
    assert "pixels" in components["Face"]["properties"]["x"]["description"]
    assert components["Probabilities"]["properties"]["happy"]["maximum"] == 1
    assert set(components["Error"]["properties"]) == {"error"}


@pytest.mark.parametrize("role", ["anonymous", "teacher_a", "teacher_b", "admin"])
def test_docs_and_schema_are_public(clients, role):
    """The schema and Swagger UI describe the API only (no data): public, like the login page."""
    docs = clients[role].get("/api/docs/")
    assert docs.status_code == 200 and "swagger-ui" in docs.content.decode()
    schema = clients[role].get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/sessions/" in schema.json()["paths"]


def test_docs_and_schema_are_served_without_cdn(clients):
    docs = clients["teacher_a"].get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn.jsdelivr" not in html and "unpkg.com" not in html
    schema = clients["anonymous"].get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/sessions/{session_id}/export/" in schema.json()["paths"]
