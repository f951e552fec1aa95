"""Shared test fixtures: users of each role, sessions, real photos with hand counts, and real service processes.

The suite runs against real PostgreSQL and Redis (``eval "$(scripts/services.sh)"`` exports ``DATABASE_URL`` and
``REDIS_URL``; ``make test`` does that). Worker and browser tests start real subprocesses on the pytest-django test
database: a Celery worker (``celery_worker``) and daphne (``daphne_server``). Celery tasks of this test run go to
queues of their own (``tests/environment.py``), so leftovers of other runs or a dev server never mix in.

Two sets of users: ``teacher``, ``other_teacher`` and ``staff_user`` with ``make_session`` (empty running sessions),
and the report/API/export roles ``teacher_a``, ``teacher_b``, ``admin_user`` (password ``tests.helpers.PASSWORD``),
``clients`` and ``fixture_session`` (the hand-computed session of ``tests.helpers``). Modules of the latter add
``pytest.mark.usefixtures("isolated_cache_and_fast_passwords")``. Plain helpers are in ``tests/helpers.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import environment
from tests.helpers import (
    CHROMIUM,
    FACES_DIR,
    PASSWORD,
    REPO,
    face_photos,
    free_port,
    session_with_frames,
    start_process,
    stop_process,
    subprocess_env,
    write_y4m,
)

TEST_QUEUE = environment.TEST_QUEUE


def pytest_configure(config):
    from fer_platform.celery import app

    app.conf.task_default_queue = TEST_QUEUE


@pytest.fixture(scope="session")
def photos() -> dict[Path, int]:
    counts = face_photos()
    if not counts:
        pytest.skip(f"face photos not found under {FACES_DIR}")
    return counts


@pytest.fixture(scope="session")
def group_photo(photos) -> tuple[Path, int]:
    """The 7-face frontal group photo (500x334) and its hand count."""
    path = FACES_DIR / "group_photos" / "dlib_2008_007676.jpg"
    return path, photos[path]


@pytest.fixture
def teacher(django_user_model):
    return django_user_model.objects.create_user(username="teacher1", password="pw-teacher-1")


@pytest.fixture
def other_teacher(django_user_model):
    return django_user_model.objects.create_user(username="teacher2", password="pw-teacher-2")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(username="admin1", password="pw-admin-1", is_staff=True)


@pytest.fixture
def make_session():
    from sessions_app.services.sessions import session_create

    def make(owner, name="Class 5B", kind="classroom", target_fps=2.0):
        return session_create(owner=owner, name=name, kind=kind, target_fps=target_fps)

    return make


# ------------------------------------------------------------------------------- report, API and export roles
@pytest.fixture
def isolated_cache_and_fast_passwords(settings, request):
    """Each test gets its own in-memory cache (throttle counters never leak between tests or into Redis) and a
    fast password hasher.

    Not autouse: frame outcome claims must go through the shared Redis cache wherever a worker or a stream takes
    part, so the report, API and export modules ask for it with ``pytest.mark.usefixtures``."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": request.node.nodeid}
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def teacher_a(django_user_model):
    return django_user_model.objects.create_user("teacher_a", password=PASSWORD)


@pytest.fixture
def teacher_b(django_user_model):
    return django_user_model.objects.create_user("teacher_b", password=PASSWORD)


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def fixture_session(teacher_a):
    """The hand-computed session (``tests.helpers``), owned by teacher A."""
    return session_with_frames(teacher_a)


@pytest.fixture
def clients(client, teacher_a, teacher_b, admin_user):
    """Django test clients per role: ``anonymous``, ``teacher_a``, ``teacher_b``, ``admin``."""
    from django.test import Client

    result = {"anonymous": Client()}
    for name, user in (("teacher_a", teacher_a), ("teacher_b", teacher_b), ("admin", admin_user)):
        c = Client()
        c.force_login(user)
        result[name] = c
    return result


# ------------------------------------------------------------------------------------------------ test database
@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, plus: before it is dropped, end the PostgreSQL sessions that threads of live
    servers or subprocesses left open, so the drop never fails with 'database is being accessed by other users'."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def close_async_thread_db_connections(django_db_setup, django_db_blocker):
    """Async tests run ORM code in asgiref's shared sync thread; close its connection so the test DB can be dropped.

    Use with ``pytest.mark.usefixtures`` in modules with async tests that touch the database."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


# ------------------------------------------------------------------------------------------ real processes
def _wait_for_other_db_sessions_to_end(django_db_blocker, timeout: float = 10.0) -> None:
    """After a subprocess exits, PostgreSQL ends its backends asynchronously: wait so the test DB can be dropped."""
    from django.db import connection

    with django_db_blocker.unblock():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with connection.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if cur.fetchone()[0] == 0:
                    return
            time.sleep(0.2)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker subprocess (solo pool) consuming this run's queue on the test database.

    Yields ``{"proc": Popen, "log": Path}``. The queue is purged before and after.
    """
    from fer_platform.celery import app

    with django_db_blocker.unblock():
        env = subprocess_env()
    app.control.purge()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", "fer_platform", "worker", "-P", "solo",
         "-Q", f"{TEST_QUEUE}.1.live,{TEST_QUEUE}.2.uploads,{TEST_QUEUE}",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO", "-n", f"{TEST_QUEUE}@%h"],
        env, log, ready="ready.",
    )  # fmt: skip
    yield {"proc": proc, "log": log}
    stop_process(proc)
    _wait_for_other_db_sessions_to_end(django_db_blocker)
    with app.connection_for_write() as conn:
        for suffix in (".1.live", ".2.uploads", ""):
            conn.default_channel.queue_purge(TEST_QUEUE + suffix)


@pytest.fixture(scope="session")
def daphne_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real daphne subprocess on a free port serving the ASGI app on the test database; yields its base URL."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    port = free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    cmd = [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(port)]
    proc = start_process(cmd, env, log, port=port)
    yield f"http://127.0.0.1:{port}"
    stop_process(proc)
    _wait_for_other_db_sessions_to_end(django_db_blocker)


@pytest.fixture
def chromium_args(tmp_path, group_photo):
    """Headless Chromium flags with a fake camera showing the 7-face group photo (640x480, 10 fps)."""
    if not CHROMIUM.exists():
        subprocess.run([str(REPO / "scripts" / "ensure_chromium.sh")], check=False, timeout=600)
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run scripts/ensure_chromium.sh")
    y4m = write_y4m(group_photo[0], tmp_path / "camera.y4m")
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
    ]
