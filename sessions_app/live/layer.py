"""A Redis channel layer that rides out Redis outages instead of killing every WebSocket.

With the stock ``channels_redis`` layer, a Redis restart makes each consumer's ``receive`` raise, Channels ends the
consumer and daphne closes every camera stream with code 1011. Here ``receive`` waits and retries with exponential
backoff (0.2 s doubling to 5 s), and group membership changes log instead of raising; consumers re-join their
group periodically (a Redis restart without persistence forgets groups). Events published while Redis is down are
lost: consumers reconcile from the database (frames become ``lost`` after their deadline, an ended session is seen
in the next status check).
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
