import asyncio
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def test_a_web_process_that_falls_behind_loses_none_of_its_cameras_events():
    """One web process serving 40 cameras falls 1,000 events behind (25 per camera, none read yet): every event is
    still delivered. channels_redis keeps all of a process's events under one Redis key and, at its default capacity
    of 100, silently dropped the rest; those frames were then answered only at their deadline."""
    layer = get_channel_layer()
    tag = uuid.uuid4().hex[:8]
    cameras, events = 40, 25

    async def scenario():
        channels = [await layer.new_channel() for _ in range(cameras)]
        groups = [f"test_capacity_{tag}_{i}" for i in range(cameras)]
        for group, channel in zip(groups, channels, strict=True):
            await layer.group_add(group, channel)
        try:
            for k in range(events):
                for group in groups:
                    await layer.group_send(group, {"type": "frame.result", "k": k})
            received = []
            for channel in channels:
                received.append(
                    sorted([(await asyncio.wait_for(layer.receive(channel), 5))["k"] for _ in range(events)])
                )
            return received
        finally:
            for group, channel in zip(groups, channels, strict=True):
                await layer.group_discard(group, channel)

    assert async_to_sync(scenario)() == [list(range(events))] * cameras
