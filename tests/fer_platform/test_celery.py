"""The Celery app's database lifecycle (``fer_platform/celery.py``), with a real prefork worker on real PostgreSQL."""

from __future__ import annotations

import sys
import time
import uuid

import pytest

from tests.conftest import _wait_for_other_db_sessions_to_end
from tests.helpers import jpeg, start_process, stop_process, subprocess_env

pytestmark = pytest.mark.slow

APP_NAME = "fer-worker-conn-test"


def worker_backends(django_db_blocker) -> list[tuple[int, object]]:
    """``(pid, backend_start)`` of the PostgreSQL backends the test worker holds now."""
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
        return list(cur.fetchall())


def send_frames(queue: str, count: int, log) -> None:
    """Queue ``count`` frames of a session that does not exist (each task decodes, analyses and looks the session up
    in the database) and wait until the worker's log shows them all done."""
    import base64

    from fer_platform.celery import app
    from sessions_app.services.frames import ANALYZE_FRAME_TASK

    done_before = log.read_text().count("succeeded")
    data = base64.b64encode(jpeg(64, 48)).decode("ascii")
    for sequence in range(count):
        kwargs = {"session_id": 987654321, "source": "camera:conn", "sequence": sequence, "captured_at_ms": 0.0,
                  "data_b64": data}  # fmt: skip
        app.send_task(ANALYZE_FRAME_TASK, kwargs=kwargs, queue=queue, serializer="json")
    deadline = time.monotonic() + 60
    while log.read_text().count("succeeded") < done_before + count:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)


def test_a_worker_allowed_to_keep_its_database_connection_uses_one_for_many_tasks(
    transactional_db, django_db_blocker, tmp_path
):
    """Celery's Django fixup closed the connection around every task whatever ``CONN_MAX_AGE`` said (a new
    PostgreSQL backend per camera frame); with ``DATABASE_CONN_MAX_AGE`` set the worker keeps one backend."""
    with django_db_blocker.unblock():
        env = subprocess_env()
    env["DATABASE_URL"] += f"?application_name={APP_NAME}"
    env["DATABASE_CONN_MAX_AGE"] = "60"
    queue = f"conn-test-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    proc = start_process(
        [sys.executable, "-m", "celery", "-A", "fer_platform", "worker", "-P", "prefork", "-c", "1", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO", "-n", f"{queue}@%h"],
        env, log, ready="ready.",
    )  # fmt: skip
    try:
        send_frames(queue, 5, log)
        first = worker_backends(django_db_blocker)
        assert len(first) == 1, first  # kept after the tasks (0 when closed after each one)
        send_frames(queue, 5, log)
        assert worker_backends(django_db_blocker) == first  # the same backend, started before the second batch
    finally:
        stop_process(proc)
        _wait_for_other_db_sessions_to_end(django_db_blocker)
