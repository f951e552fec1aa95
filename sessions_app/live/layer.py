"""A Redis channel layer that rides out Redis outages instead of killing every WebSocket.

With the stock ``channels_redis`` layer, a Redis restart makes each consumer's ``receive`` raise, Channels ends the
consumer and daphne closes every camera stream with code 1011. Here ``receive`` waits and retries with exponential
backoff (0.2 s doubling to 5 s), and group membership changes log instead of raising; consumers re-join their
group periodically (a Redis restart without persistence forgets groups). Events published while Redis is down are
lost: consumers reconcile from the database (frames become ``lost`` after their deadline, an ended session is seen
in the next status check).

It also keeps events that a leaving consumer had already taken off Redis. All consumers of a process share one pop
loop (``receive_single`` on the process's channel, run by whichever consumer holds the layer's receive lock); when
that consumer's socket closes, Channels cancels its ``receive``, and a pop whose reply was on its way was cancelled
with it: the event, possibly another camera's result, was gone (channels_redis#366, django/channels#1683; seen as
results answered only at their deadline while 29 of 30 cameras left at once). Here the pop is shielded from the
cancellation and handed to the next consumer that takes the receive lock, which gets the event into its owner's
buffer.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

#: Seconds between receive retries while Redis is unreachable: first and largest wait.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


def _is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means "Redis is unreachable" (redis-py's connection/timeout errors, OS socket errors)."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionError | TimeoutError | OSError)


class ResilientRedisChannelLayer(RedisChannelLayer):
    """``channels_redis.core.RedisChannelLayer`` whose ``receive`` survives outages and whose group changes never
    raise for one. ``outages`` counts the connection errors seen (for logs and tests)."""

    outages = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: A pop of the process channel whose receiver was cancelled, and its event loop: the next receiver takes it.
        self._handed_over: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None

    async def receive_single(self, channel: str) -> tuple:
        """``channels_redis``'s pop of the next message of ``channel``, shielded from cancellation for the process
        channel (``...!``, only ever called with the receive lock held): if the caller is cancelled, the pop goes on
        and the next caller awaits it instead of starting another, so a message already taken off Redis reaches its
        consumer's buffer. Returns ``(channel or [channels], message)`` as the base class does."""
        if not channel.endswith("!"):
            return await super().receive_single(channel)
        loop = asyncio.get_running_loop()
        handed, self._handed_over = self._handed_over, None
        if handed is not None and handed[0] is loop:
            pop = handed[1]
        else:  # none, or one of a loop that is gone (each async_to_sync call of a test runs its own loop)
            pop = asyncio.ensure_future(super().receive_single(channel))
        try:
            return await asyncio.shield(pop)
        except asyncio.CancelledError:
            self._handed_over = (loop, pop)
            raise

    async def receive(self, channel: str) -> dict:
        """The next message of ``channel``; while Redis is down, waits and retries (never raises for an outage)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                return await super().receive(channel)
            except Exception as exc:
                if not _is_outage(exc):
                    raise
                self.outages += 1
                logger.warning("channel layer unreachable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def group_add(self, group: str, channel: str) -> None:
        """Join ``group``; during an outage log and return (the caller re-joins later)."""
        try:
            await super().group_add(group, channel)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            self.outages += 1
            logger.warning("could not join %s: channel layer unreachable", group)

    async def group_discard(self, group: str, channel: str) -> None:
        """Leave ``group``; during an outage log and return (the membership expires by itself)."""
        try:
            await super().group_discard(group, channel)
        except Exception as exc:
            if not _is_outage(exc):
                raise
            self.outages += 1
            logger.warning("could not leave %s: channel layer unreachable", group)
