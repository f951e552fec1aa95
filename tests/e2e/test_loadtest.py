"""``manage.py loadtest`` against the real stack: daphne and a Celery worker subprocess (``tests/conftest.py``) on the
test database, real Redis, a real group photo as the camera frames.

The main mode needs no database: the command runs as a subprocess whose ``DATABASE_URL`` points nowhere, logs in
over HTTP, creates and ends its sessions through the REST API. Over HTTPS it goes through Caddy (``deploy/Caddyfile``,
``tls internal``) with ``--ca``."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from sessions_app.models import EmotionSession
from tests.environment import TEST_QUEUE
from tests.helpers import REPO, free_port, start_process, stop_process, subprocess_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KEYS = {
    "clients", "fps", "seconds", "frames_sent", "frames_processed", "frames_dropped", "faces_detected", "errors",
    "frame_errors", "unanswered", "latency_ms", "memory_mb", "wall_s", "session_ids",
}  # fmt: skip
NEW_KEYS = {
    "per_client_processed_fps", "analysed_fps_over_time", "clients_connected", "size", "dropped_by_reason",
    "scene_seconds", "scene_cuts",
}  # fmt: skip
#: Nothing listens there: a command that touched the database would fail.
NO_DATABASE = "postgres://nobody@127.0.0.1:9/no_such_database"


def _loadtest_subprocess(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``manage.py loadtest ARGS`` as its own process, with a ``DATABASE_URL`` that cannot be reached."""
    env = (env or subprocess_env()) | {"DATABASE_URL": NO_DATABASE}
    return subprocess.run(
        [sys.executable, "manage.py", "loadtest", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _assert_accounted(result: dict) -> None:
    sent, processed = result["frames_sent"], result["frames_processed"]
    assert sent == processed + result["frames_dropped"] + result["frame_errors"] + result["unanswered"]
    assert result["errors"] == 0 and result["unanswered"] == 0, result.get("error_messages")
    assert sum(point["fps"] for point in result["analysed_fps_over_time"]) == processed
    assert sum(result["dropped_by_reason"].values()) == result["frames_dropped"]


def _stored_sessions(result: dict, sent: int) -> list[EmotionSession]:
    """The run's sessions once the streams stored their last counts (they do when they close)."""
    deadline = time.monotonic() + 10
    while True:
        sessions = list(EmotionSession.objects.filter(pk__in=result["session_ids"]))
        if sum(s.frames_received for s in sessions) == sent or time.monotonic() > deadline:
            return sessions
        time.sleep(0.2)


def test_loadtest_in_its_own_user_mode_streams_a_group_photo_and_reports_todays_keys(
    daphne_server, celery_worker, group_photo
):
    path, hand_count = group_photo
    out = io.StringIO()
    call_command(
        "loadtest",
        "--url", daphne_server, "--clients", "2", "--fps", "2", "--seconds", "4", "--images", str(path), "--json",
        stdout=out,
    )  # fmt: skip
    result = json.loads(out.getvalue())
    assert KEYS | NEW_KEYS <= set(result), (KEYS | NEW_KEYS) - set(result)
    assert set(result["latency_ms"]) == {"p50", "p95", "max"}
    assert set(result["memory_mb"]) == {"web_peak", "workers_peak"}
    assert result["clients"] == 2 and result["clients_connected"] == 2 and result["size"] is None
    assert result["scene_seconds"] == 10.0  # the default: a still camera filming one scene
    assert result["scene_cuts"] == "independent"
    sent, processed = result["frames_sent"], result["frames_processed"]
    assert 14 <= sent <= 18  # 2 clients x 2 fps x 4 s
    _assert_accounted(result)
    assert result["frame_errors"] == 0
    assert processed >= sent // 2  # 4 frames/s of a 500x334 photo: a single worker keeps up (mostly)
    assert result["faces_detected"] > 0
    assert abs(result["faces_detected"] / processed - hand_count) <= 1
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"]
    assert result["memory_mb"]["web_peak"] and result["memory_mb"]["workers_peak"]  # the local processes were found
    sessions = _stored_sessions(result, sent)
    assert len(sessions) == 2 and all(s.status == "ended" and s.kind == "crowd" for s in sessions)
    assert sum(s.frames_received for s in sessions) == sent
    assert sum(s.frames_processed for s in sessions) == processed
    assert sum(s.frames_dropped for s in sessions) == result["frames_dropped"]
    assert sum(s.frames.count() for s in sessions) == processed


def test_loadtest_with_an_account_needs_no_database_and_sends_letterboxed_webcam_frames(
    daphne_server, celery_worker, group_photo, django_user_model
):
    owner = django_user_model.objects.create_user(username="lt-remote", password="lt-remote-pass-1")
    proc = _loadtest_subprocess(
        "--url", daphne_server, "--username", "lt-remote", "--password", "lt-remote-pass-1", "--size", "640x480",
        "--clients", "2", "--fps", "2", "--seconds", "4", "--images", str(group_photo[0]), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert KEYS | NEW_KEYS <= set(result)
    assert result["size"] == "640x480" and result["clients_connected"] == 2
    _assert_accounted(result)
    sent, processed = result["frames_sent"], result["frames_processed"]
    assert 14 <= sent <= 18 and processed >= sent // 2
    rates = result["per_client_processed_fps"]
    assert set(rates) == {"min", "mean", "max"}
    assert 0 < rates["min"] <= rates["mean"] <= rates["max"] <= 2.5  # frames/s; a client sends 2 per second
    seconds = [p["t_s"] for p in result["analysed_fps_over_time"]]
    assert seconds == list(range(len(seconds))) and len(seconds) >= 4  # one entry per second, none missing
    sessions = _stored_sessions(result, sent)
    assert {s.owner_id for s in sessions} == {owner.pk} and all(s.status == "ended" for s in sessions)
    # the worker saw 640x480 frames: the photo (500x334) letterboxed, not sent as it is
    frames = [f for s in sessions for f in s.frames.all()]
    assert frames and {(f.width, f.height) for f in frames} == {(640, 480)}


def test_a_ramp_reports_each_step_and_the_largest_client_count_meeting_the_target(
    daphne_server, celery_worker, group_photo, django_user_model
):
    django_user_model.objects.create_user(username="lt-ramp", password="lt-ramp-pass-1")
    common = ["--url", daphne_server, "--username", "lt-ramp", "--password", "lt-ramp-pass-1", "--fps", "2",
              "--seconds", "2", "--images", str(group_photo[0]), "--json"]  # fmt: skip
    out = io.StringIO()
    call_command("loadtest", *common, "--ramp", "2,1", "--target-p95-ms", "60000", stdout=out)
    ramp = json.loads(out.getvalue())
    assert set(ramp) == {"target_p95_ms", "max_dropped_pct", "steps", "max_clients_meeting_target"}
    assert [step["clients"] for step in ramp["steps"]] == [1, 2]  # ascending
    for step in ramp["steps"]:
        assert KEYS | NEW_KEYS | {"meets_target", "missed"} <= set(step)
        assert step["meets_target"] and step["missed"] == []
        _assert_accounted(step)
    assert ramp["max_clients_meeting_target"] == 2
    # a target nobody meets: the first step misses it (and says why), the ramp stops there
    out = io.StringIO()
    call_command("loadtest", *common, "--ramp", "1:3:1", "--target-p95-ms", "0.001", stdout=out)
    ramp = json.loads(out.getvalue())
    assert len(ramp["steps"]) == 1 and not ramp["steps"][0]["meets_target"]
    assert any(reason.startswith("p95 ") for reason in ramp["steps"][0]["missed"])
    assert ramp["max_clients_meeting_target"] is None
    ended = EmotionSession.objects.filter(owner__username="lt-ramp")
    assert ended.count() == 4 and not ended.exclude(status="ended").exists()  # 1 + 2 + 1 sessions, all ended


def test_clients_stop_like_cameras_so_a_frame_still_waiting_at_the_end_is_dropped_not_analysed_late(
    group_photo, django_user_model, tmp_path
):
    """A server whose live queue no worker consumes: each client's first two frames stay in flight, later ones wait
    for a slot (latest wins). At the end the client sends ``stop``: its waiting frame is dropped as ``stopped`` at
    once, instead of waiting the drain out; the two in flight stay unanswered, and every frame is accounted for."""
    from fer_platform.celery import app

    django_user_model.objects.create_user(username="lt-stop", password="lt-stop-pass-1")
    idle_queue = f"{TEST_QUEUE}.0.idle-{os.getpid()}"  # sorts before the upload queue, as settings require
    env = subprocess_env() | {"FER_LIVE_QUEUE": idle_queue}
    port = free_port()
    daphne = start_process(
        [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(port)], env, tmp_path / "daphne.log",
        port=port,
    )  # fmt: skip
    try:
        out = io.StringIO()
        call_command(
            "loadtest", "--url", f"http://127.0.0.1:{port}", "--username", "lt-stop", "--password", "lt-stop-pass-1",
            "--clients", "2", "--fps", "2", "--seconds", "3", "--drain", "2", "--images", str(group_photo[0]), "--json",
            stdout=out,
        )  # fmt: skip
    finally:
        stop_process(daphne)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(idle_queue)
            conn.default_channel.queue_delete(idle_queue)
    result = json.loads(out.getvalue())
    sent = result["frames_sent"]
    assert result["clients_connected"] == 2 and 10 <= sent <= 14
    assert result["frames_processed"] == 0 and result["errors"] == 0  # the stop itself is no error
    assert result["dropped_by_reason"] == {"replaced": sent - 2 * 3, "stopped": 2}
    assert result["unanswered"] == 2 * 2  # in flight to the idle queue
    assert sent == result["frames_dropped"] + result["unanswered"]


def test_a_bad_url_an_unreachable_server_and_a_wrong_password_give_one_line_errors(
    daphne_server, group_photo, django_user_model
):
    django_user_model.objects.create_user(username="lt-wrong", password="lt-right-pass-1")
    image = str(group_photo[0])
    cases = [
        (["--url", "ftp://example.org"], "--url must be http"),
        (["--url", f"http://127.0.0.1:{free_port()}"], "cannot reach the server"),
        (["--url", "http://no-such-host.invalid"], "cannot reach the server"),
        (["--url", daphne_server, "--password", "not-it"], "wrong username or password"),
    ]
    for args, message in cases:
        with pytest.raises(CommandError, match=message):
            call_command("loadtest", "--username", "lt-wrong", "--password", "x", *args, "--images", image)
    # as a process: the message on stderr, exit status 1, no traceback
    proc = _loadtest_subprocess("--url", f"http://127.0.0.1:{free_port()}", "--username", "u", "--password", "p",
                                "--images", image)  # fmt: skip
    assert proc.returncode == 1 and "cannot reach the server" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------- over HTTPS
@pytest.fixture(scope="module")
def https_localhost(django_db_setup, django_db_blocker, tmp_path_factory):
    """daphne (``DJANGO_HTTPS``, ``--proxy-headers``) behind Caddy on https://localhost:<port> with a certificate
    from this run's own Caddy CA; yields ``{"url", "ca"}``."""
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.fail("Caddy is missing: apt-get install caddy")
    tmp = tmp_path_factory.mktemp("https-loadtest")
    web_port, https_port = free_port(), free_port()
    site = f"https://localhost:{https_port}"
    with django_db_blocker.unblock():
        env = subprocess_env()
    env |= {"DJANGO_HTTPS": "true", "DJANGO_CSRF_TRUSTED_ORIGINS": site, "API_NUM_PROXIES": "1"}
    procs = []
    try:
        with open(tmp / "daphne.log", "w") as fh:
            procs.append(subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--", "-b", "127.0.0.1", "-p", str(web_port),
                 "--proxy-headers"], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        caddy_env = dict(os.environ) | {
            "SITE_ADDRESS": f"localhost:{https_port}", "CADDY_TLS": "tls internal",
            "CADDY_HTTPS_PORT": str(https_port), "CADDY_HTTP_PORT": str(free_port()),
            "UPSTREAM": f"127.0.0.1:{web_port}", "MAX_BODY": "2MB",
            "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config"),
        }  # fmt: skip
        with open(tmp / "caddy.log", "w") as fh:
            procs.append(subprocess.Popen(
                [caddy, "run", "--config", str(REPO / "deploy" / "Caddyfile"), "--adapter", "caddyfile"],
                env=caddy_env, stdout=fh, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        for port, proc in ((web_port, procs[0]), (https_port, procs[1])):
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"{proc.args[0]} did not start: {(tmp / 'caddy.log').read_text()[-2000:]}")
                    time.sleep(0.2)
        ca = tmp / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        deadline = time.monotonic() + 30
        while not ca.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        yield {"url": site, "ca": str(ca)}
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def test_loadtest_streams_over_wss_through_the_tls_proxy_trusting_its_ca(
    https_localhost, celery_worker, group_photo, django_user_model
):
    django_user_model.objects.create_user(username="lt-tls", password="lt-tls-pass-1")
    args = ["--url", https_localhost["url"], "--username", "lt-tls", "--password", "lt-tls-pass-1", "--clients", "1",
            "--fps", "2", "--seconds", "3", "--size", "640x480", "--images", str(group_photo[0]), "--json"]  # fmt: skip
    # without the CA: the certificate does not verify, and the command says what to do
    untrusted = _loadtest_subprocess(*args)
    assert untrusted.returncode == 1 and "--ca" in untrusted.stderr and "Traceback" not in untrusted.stderr
    proc = _loadtest_subprocess(*args, "--ca", https_localhost["ca"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    _assert_accounted(result)
    assert result["clients_connected"] == 1 and result["frames_processed"] >= 3
    # the port is Caddy's: no local daphne listens on it, so no memory is claimed for it
    assert result["memory_mb"] == {"web_peak": None, "workers_peak": None}
    insecure = _loadtest_subprocess(*args, "--insecure")
    assert insecure.returncode == 0, insecure.stderr[-3000:]
    assert json.loads(insecure.stdout)["frames_processed"] >= 3


# ------------------------------------------------------------------------------------------- the command's parts
def test_ramp_and_size_options_are_parsed_or_refused_with_a_clear_message():
    from sessions_app.management.commands.loadtest import parse_ramp, parse_size

    assert parse_ramp("5:30:5") == [5, 10, 15, 20, 25, 30]  # stop included
    assert parse_ramp("20,5,10,5") == [5, 10, 20]  # ascending, no repeats
    assert parse_size("640x480") == (640, 480)
    for bad in ("5:30:0", "a,b", "0,5", ""):
        with pytest.raises(CommandError, match="--ramp"):
            parse_ramp(bad)
    for bad in ("640", "640x", "8x8", "640x480x3"):
        with pytest.raises(CommandError, match="--size"):
            parse_size(bad)


def test_letterboxing_fits_the_photo_into_the_webcam_frame_keeping_its_aspect_ratio(group_photo):
    import cv2
    import numpy as np

    from sessions_app.management.commands.loadtest import letterbox, load_frames

    photo = cv2.imread(str(group_photo[0]))  # 500x334
    frame = letterbox(photo, (640, 480))
    assert frame.shape == (480, 640, 3)
    # scaled by 640/500 to 640x428, centred: 26 grey rows above, 26 below
    assert np.all(frame[:26] == 128) and np.all(frame[-26:] == 128) and not np.all(frame[26:30] == 128)
    jpeg = load_frames([str(group_photo[0])], (640, 480))[0]
    assert jpeg.startswith(b"\xff\xd8\xff") and cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1).shape == (480, 640, 3)


def test_a_still_camera_sends_noisy_copies_of_one_scene_and_cuts_to_the_next_photo_on_schedule(photos):
    import cv2
    import numpy as np

    from sessions_app.management.commands.loadtest import frame_for, load_frames, scene_variants

    paths = sorted(p for p in photos if p.parent.name == "group_photos")[:2]
    frames = load_frames([str(p) for p in paths], (640, 480))
    scenes = scene_variants(frames, variants=4, sigma=2.0)
    assert [len(s) for s in scenes] == [4, 4] and len(set(scenes[0])) == 4  # no two copies are the same bytes

    def grey(data):
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)

    original, copy = grey(frames[0]), grey(scenes[0][1])
    assert 0.5 < np.abs(copy - original).mean() < 4.0  # sensor noise of a few grey levels, the same picture
    assert np.abs(grey(scenes[1][0]) - original).mean() > 10  # the other photo is another scene

    # at 2 fps with 10-s scenes: client 0 films photo 0 for 20 frames, then photo 1; client 1 starts on photo 1
    sent = [frame_for(scenes, n, offset=0, fps=2.0, scene_seconds=10.0) for n in range(24)]
    assert all(f in scenes[0] for f in sent[:20]) and all(f in scenes[1] for f in sent[20:])
    assert sent[0] != sent[1] and sent[:4] == scenes[0]
    assert frame_for(scenes, 0, offset=1, fps=2.0, scene_seconds=10.0) in scenes[1]
    # independent cameras cut at their own phases: client 0 at 10 s, client 1 (phase 0.618) after 3.8 s, client 2
    # (phase 0.236) after 7.6 s; with "together" every client cuts at 10 s
    from sessions_app.management.commands.loadtest import cut_phase

    def first_cut(offset, scene_cuts):
        phase = cut_phase(offset, scene_cuts)
        sent = [frame_for(scenes, n, offset=offset, fps=2.0, scene_seconds=10.0, phase=phase) for n in range(24)]
        start = scenes[offset % 2]
        assert sent[0] in start
        return next(n for n, f in enumerate(sent) if f not in start)

    assert [first_cut(i, "independent") for i in range(3)] == [20, 8, 16]
    assert [first_cut(i, "together") for i in range(3)] == [20, 20, 20]
    phases = sorted(cut_phase(i, "independent") for i in range(30))
    assert all(0 <= p < 1 for p in phases) and max(np.diff(phases)) < 2 / 30  # 30 clients cover the scene evenly
    # --scene-seconds 0: a cut every frame, round-robin over the photos as sent
    cuts = [[f] for f in frames]
    sent = [frame_for(cuts, n, offset=1, fps=2.0, scene_seconds=0) for n in range(3)]
    assert sent == [frames[1], frames[0], frames[1]]


def test_results_per_second_and_the_ramp_target_are_computed_from_the_run():
    from sessions_app.management.commands.loadtest import fps_over_time, target_misses

    assert fps_over_time([]) == []
    assert fps_over_time([0.1, 0.9, 2.5]) == [{"t_s": 0, "fps": 2}, {"t_s": 1, "fps": 0}, {"t_s": 2, "fps": 1}]
    run = {"latency_ms": {"p95": 250.0}, "errors": 0, "unanswered": 0, "frames_sent": 100, "frames_dropped": 2}
    assert target_misses(run, target_p95_ms=300, max_dropped_pct=2) == []
    assert target_misses(run | {"frames_dropped": 3}, target_p95_ms=300, max_dropped_pct=2) == ["3 of 100 dropped"]
    assert target_misses(run, target_p95_ms=200, max_dropped_pct=2) == ["p95 250.0 ms > 200 ms"]
    assert target_misses(run | {"latency_ms": {"p95": None}, "errors": 1}, target_p95_ms=300, max_dropped_pct=2) == [
        "p95 None ms > 300 ms",
        "1 errors",
    ]
