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


def test_an_event_popped_for_a_camera_that_stays_reaches_it_when_the_popping_camera_disconnects():
    """All consumers of a web process share one Redis pop loop: whichever holds it pops the next event of any of
    them. When that consumer's socket closes at the moment Redis hands it another camera's event (a reply in flight),
    channels_redis cancelled the pop and the event was gone: seen as results arriving only at their deadline while 29
    of 30 cameras left at once. The pop is emulated with a reply that takes 0.5 s to arrive, so the cancellation
    reliably lands inside it; the staying camera must still get its event."""
    layer = get_channel_layer()

    async def scenario():
        leaving, staying = await layer.new_channel(), await layer.new_channel()
        connection = layer.connection(0)
        real_pop = connection.bzpopmin
        popped = asyncio.Event()

        async def pop_whose_reply_is_in_flight(*args, **kwargs):
            result = await real_pop(*args, **kwargs)
            if result is not None:
                popped.set()
                await asyncio.sleep(0.5)  # the event has left Redis; the reply is still on its way to this process
            return result

        connection.bzpopmin = pop_whose_reply_is_in_flight
        try:
            receiving = asyncio.ensure_future(layer.receive(leaving))  # holds the process's pop loop
            await asyncio.sleep(0.1)
            waiting = asyncio.ensure_future(layer.receive(staying))
            await asyncio.sleep(0.1)
            await layer.send(staying, {"type": "frame.result", "sequence": 7})
            await asyncio.wait_for(popped.wait(), 5)
            receiving.cancel()  # the leaving camera's socket closes
            message = await asyncio.wait_for(waiting, 5)
            later = asyncio.ensure_future(layer.receive(staying))  # the loop goes on for the cameras that stay
            await layer.send(staying, {"type": "frame.result", "sequence": 8})
            return message, await asyncio.wait_for(later, 5)
        finally:
            del connection.bzpopmin

    first, second = async_to_sync(scenario)()
    assert (first["sequence"], second["sequence"]) == (7, 8)
