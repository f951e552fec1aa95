"""The layering rules of the README's code map, checked on the source tree itself (imports parsed with ``ast``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

CODE_DIRS = ("inference", "sessions_app", "fer_platform", "scripts")
EDGES = (
    "sessions_app.live",
    "sessions_app.web",
    "sessions_app.api",
    "sessions_app.tasks",
    "sessions_app.reports.views",
)


def _modules() -> dict[str, Path]:
    found = {}
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (also inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


MODULES = _modules()


def test_nothing_but_celery_imports_a_tasks_module():
    offenders = {
        module: sorted(n for n in _imports(path) if n.endswith(".tasks") or ".tasks." in n)
        for module, path in MODULES.items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_inference_never_imports_django():
    offenders = {
        module: sorted(n for n in _imports(path) if _within(n, "django") or _within(n, "sessions_app"))
        for module, path in MODULES.items()
        if _within(module, "inference")
    }
    assert {m: names for m, names in offenders.items() if names} == {}


@pytest.mark.parametrize("layer", ["sessions_app.services", "sessions_app.selectors", "sessions_app.reports.selectors"])
def test_services_and_selectors_never_import_edges(layer):
    offenders = {
        module: sorted(n for n in _imports(path) if any(_within(n, edge) for edge in EDGES))
        for module, path in MODULES.items()
        if _within(module, layer)
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_every_fer_setting_is_read_in_settings_and_documented():
    settings_src = (REPO / "fer_platform/settings.py").read_text()
    names = set(re.findall(r'env\.\w+\(\s*"(FER_\w+)"', settings_src))
    assert {"FER_FLIP_TTA", "FER_DETECTOR", "FER_MODEL_PATH"} <= names
    env_example = (REPO / ".env.example").read_text()
    readme = (REPO / "README.md").read_text()
    assert sorted(n for n in names if f"{n}=" not in env_example) == []
    assert sorted(n for n in names if n not in readme) == []
    for module, path in MODULES.items():
        if module != "fer_platform.settings" and not _within(module, "scripts"):
            read = set(re.findall(r'environ(?:\.get)?[\[(]\s*"(FER_\w+)"', path.read_text()))
            # FER_CACHE_DIR: where the training CLI caches parsed datasets on a developer's machine (like
            # XDG_CACHE_HOME); no platform process reads it.
            assert read <= {"FER_CACHE_DIR"}, f"{module} reads {read} itself"
