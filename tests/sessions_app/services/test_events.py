"""Result events from synchronous code (``sessions_app.services.events``) on the real Redis channel layer."""

from __future__ import annotations

import asyncio
import os

import pytest
import redis
from django.conf import settings

from sessions_app.services import events
from sessions_app.services.events import camera_group_name, cameras_wake, event_publish, group_events_send
from tests.helpers import listen, next_event, no_event


def connections_received() -> int:
    """Connections Redis has accepted since it started (``INFO stats``)."""
    return int(redis.Redis.from_url(settings.REDIS_URL).info("stats")["total_connections_received"])


def test_events_from_synchronous_code_arrive_in_order_over_one_long_lived_connection():
    layer, channel = listen(9001)
    event_publish(9001, {"type": "frame.result", "sequence": -1})  # the sender loop and its connection exist now
    assert next_event(layer, channel)["sequence"] == -1
    before = connections_received()
    for sequence in range(20):
        event_publish(9001, {"type": "frame.result", "sequence": sequence})
    opened = connections_received() - before
    assert opened <= 1  # one per event before (a new event loop, thread and connection each time); 1 = our INFO
    assert [next_event(layer, channel)["sequence"] for _ in range(20)] == list(range(20))


def test_a_forked_child_sends_on_a_loop_of_its_own():
    layer, channel = listen(9002)
    event_publish(9002, {"type": "frame.result", "sequence": 0})  # the parent's loop thread does not survive a fork
    assert next_event(layer, channel)["sequence"] == 0
    pid = os.fork()
    if pid == 0:  # the child: a Celery prefork worker in production
        code = 1
        try:
            event_publish(9002, {"type": "frame.result", "sequence": 1, "from": "child"})
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert next_event(layer, channel) == {"type": "frame.result", "sequence": 1, "from": "child"}


def test_a_running_event_loop_must_await_the_layer_itself():
    async def from_async_code():
        group_events_send([("session_1", {"type": "frame.result"})])

    with pytest.raises(RuntimeError, match="await"):
        asyncio.run(from_async_code())


def test_waking_cameras_skips_malformed_names_and_wakes_the_others_in_one_call():
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    inbox = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(camera_group_name(77, "camera:aa"), inbox)
    cameras_wake(["77:camera:aa", "not-a-camera", "x:camera:bb", "77:upload:cc"])
    assert next_event(layer, inbox) == {"type": "admission.wake"}
    assert no_event(layer, inbox)


def test_a_layer_that_does_not_answer_in_time_raises_timeout(monkeypatch):
    class StuckLayer:
        async def group_send(self, group, event):
            await asyncio.sleep(10)

    monkeypatch.setattr(events, "get_channel_layer", lambda: StuckLayer())
    monkeypatch.setattr(events, "SEND_TIMEOUT_S", 0.2)
    with pytest.raises(TimeoutError):
        group_events_send([("session_1", {"type": "frame.result"})])
    event_publish(1, {"type": "frame.result"})  # the publisher logs it and never raises
