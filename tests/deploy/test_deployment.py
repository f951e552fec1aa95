"""Deployment files: docker-compose.yml against the Compose specification, Dockerfile and .env.example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, compose_binary

CHECK = Path(sys.executable).parent / "check-jsonschema"


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True, timeout=60
    )


def test_compose_file_matches_the_compose_spec():
    result = validate(REPO / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_real_compose_v2_accepts_the_deployment_with_the_example_environment(tmp_path):
    """``docker compose config -q`` of the real Compose v2 (interpolation, merge keys, depends_on, env files), with
    the operator's ``.env`` made from ``.env.example``; and it does refuse a file that the spec check would miss."""
    import shutil

    shutil.copy(REPO / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    run = [str(compose_binary()), "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"]
    ok = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["proxy"]["depends_on"] = {"nosuchservice": {"condition": "service_healthy"}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    bad = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "nosuchservice" in bad.stderr


def test_the_validator_catches_a_broken_compose_file(tmp_path):
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["worker"]["healthcheck"]["intervall"] = "10s"  # typo: not in the spec
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    assert validate(bad).returncode != 0


def test_compose_services_have_healthchecks_a_volume_and_scale():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"proxy", "web", "worker", "beat", "redis", "postgres"}
    for name, svc in services.items():
        assert "test" in svc["healthcheck"], name
    assert "manage.py serve" in " ".join(services["web"]["command"]) and "celery" in " ".join(
        services["worker"]["command"]
    )
    # only the TLS proxy is reachable from outside; daphne trusts its X-Forwarded-* headers
    assert "ports" not in services["web"] and "--proxy-headers" in " ".join(services["web"]["command"])
    assert [p.split(":")[-1] for p in services["proxy"]["ports"]] == ["80", "443"]
    assert services["proxy"]["depends_on"]["web"]["condition"] == "service_healthy"
    # workers scale with --scale worker=N: no fixed name or host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert services["postgres"]["volumes"][0].startswith("pgdata:") and "pgdata" in compose["volumes"]
    for name in ("web", "worker"):
        assert services[name]["env_file"][0]["path"] == ".env"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_bakes_the_model_and_env_example_matches_settings():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY . /app" in dockerfile and "EmotionRecognizer.default()" in dockerfile
    assert "inference/models/*.onnx" not in (REPO / ".dockerignore").read_text()
    assert list((REPO / "inference" / "models").glob("*.onnx")), "the shipped model must exist to be baked in"
    settings_src = (REPO / "fer_platform" / "settings.py").read_text()
    read_by_settings = set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', settings_src))
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    compose_only = {
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "WORKER_CONCURRENCY",
        "SITE_ADDRESS",
        "CADDY_TLS",
    }
    unknown = set(example) - read_by_settings - compose_only
    assert not unknown, f".env.example keys nobody reads: {unknown}"
    fer_settings = {k for k in read_by_settings if k.startswith("FER_")}
    assert fer_settings <= set(example), f"undocumented FER settings: {fer_settings - set(example)}"


def test_dockerfile_installs_what_weasyprint_needs_for_pdf_reports():
    """WeasyPrint dlopens Pango (and HarfBuzz, fontconfig) at import: without them every PDF export fails in the
    container. The runtime image installs them with a font, and the build renders a PDF to prove it."""
    dockerfile = (REPO / "Dockerfile").read_text()
    install = re.search(r"apt-get install -y --no-install-recommends((?:[^\n]*\\\n)*[^\n]*)", dockerfile)
    assert install, "no apt-get install in the Dockerfile"
    packages = set(install.group(1).replace("\\", " ").split()) - {"&&", "rm", "-rf", "/var/lib/apt/lists/*"}
    assert {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0", "fonts-dejavu-core"} <= packages
    assert dockerfile.index("apt-get install") < dockerfile.index("USER fer")  # root installs, before the switch
    assert "weasyprint.HTML(" in dockerfile and "write_pdf()" in dockerfile


@pytest.mark.parametrize("path", ["static/vendor/chart.umd.min.js"])
def test_chart_js_is_vendored_not_fetched_from_a_cdn(path):
    assert (REPO / path).read_text()[:200].find("Chart.js v4") >= 0
    for template in (REPO / "templates").rglob("*.html"):
        assert "cdn." not in template.read_text() and "unpkg" not in template.read_text(), template


def test_workers_keep_their_database_connection_and_the_web_process_does_not():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    remote = yaml.safe_load((REPO / "compose.worker.yml").read_text())["services"]
    for worker in (compose["worker"], remote["worker"]):
        assert worker["environment"]["DATABASE_CONN_MAX_AGE"] == "${WORKER_DB_CONN_MAX_AGE:-60}"
        assert "DATABASE_URL" in worker["environment"] and "REDIS_URL" in worker["environment"]
    assert "DATABASE_CONN_MAX_AGE" not in compose["web"]["environment"]

    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart_run", REPO / "scripts/run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.worker_env({}) == {"DATABASE_CONN_MAX_AGE": "60"}
    assert run.worker_env({"DATABASE_CONN_MAX_AGE": "0"}) == {"DATABASE_CONN_MAX_AGE": "0"}  # the operator's choice


def test_a_kept_database_connection_is_health_checked_before_reuse():
    from django.conf import settings

    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True
