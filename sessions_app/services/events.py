"""Result events of a session, sent through the Channels layer to its live pages (group ``session_<id>``).

After a frame's results are committed, a small JSON event goes to the group ``session_group_name(id)``; the stream
consumers and viewers of that session forward it to their browsers. Frames themselves never travel through the
channel layer (they go to Celery as task payload).

Event shapes (``type`` is the Channels handler name):

- ``frame.result``: ``{"source", "sequence", "captured_at_ms", "offset_s", "width", "height", "processing_ms",
  "face_count", "faces": [{"box": [x, y, w, h], "label", "score", "probabilities": {label: p}}]}``
- ``frame.dropped``: ``{"source", "sequence", "reason": "expired" | "revoked"}`` (the task never ran)
- ``frame.error``: ``{"source", "sequence", "code", "detail"}`` (the worker could not decode, analyse or store the
  frame: ``undecodable``, ``analysis_failed``, ``storage_failed``)
- ``session.ended``: ``{"session_id"}``

One more event goes to a single camera connection rather than to the session: ``admission.wake`` (``{}``, group
``camera_group_name(session_id, source)``), telling the camera first in line for an analysis slot that one is free
(``services.frames.frame_admission_release``), so it retries at once instead of at its next timed retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterable

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

#: Seconds a synchronous caller waits for the channel layer to take its events.
SEND_TIMEOUT_S = 5.0

_sender_lock = threading.Lock()
_sender_loop: asyncio.AbstractEventLoop | None = None
_sender_pid = 0


def _layer_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for channel-layer sends from synchronous code, running in a daemon thread (started
    on first use, again in a forked child). One long-lived loop keeps ``channels_redis``'s per-loop connection pool:
    ``async_to_sync`` made a new loop, thread and Redis connection for every event (a sixth of a worker's time per
    camera frame, README "Load test")."""
    global _sender_loop, _sender_pid
    with _sender_lock:
        if _sender_loop is None or _sender_pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-layer-sender", daemon=True).start()
            _sender_loop, _sender_pid = loop, os.getpid()
        return _sender_loop


def group_events_send(messages: Iterable[tuple[str, dict]]) -> None:
    """Send each ``(group, event)`` through the channel layer, from synchronous code (a worker, a view, a thread of
    ``sync_to_async``), concurrently on the process's sender loop; returns when all are sent.

    Raises the layer's errors (the first one), ``TimeoutError`` after ``SEND_TIMEOUT_S``, and ``RuntimeError`` when
    called on a running event loop (await the layer there). A no-op without a channel layer.
    """
    layer = get_channel_layer()
    messages = list(messages)
    if layer is None or not messages:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("group_events_send is for synchronous code: await channel_layer.group_send instead")

    async def send_all() -> None:
        await asyncio.gather(*(layer.group_send(group, event) for group, event in messages))

    future = asyncio.run_coroutine_threadsafe(send_all(), _layer_loop())
    try:
        future.result(timeout=SEND_TIMEOUT_S)
    except TimeoutError:
        future.cancel()
        raise


def session_group_name(session_id: int) -> str:
    """Channel-layer group of a session's result events: ``"session_<id>"``."""
    return f"session_{int(session_id)}"


def camera_group_name(session_id: int, source: str) -> str:
    """Channel-layer group of one camera connection (``source`` ``"camera:<hex>"``): ``"camera_<id>_<hex>"``."""
    return f"camera_{int(session_id)}_{source.removeprefix('camera:')}"[:99]


def cameras_wake(cameras: Iterable[str]) -> None:
    """Send ``admission.wake`` to each camera ``"<session id>:<source>"`` (the admission queue's member names) in one
    round trip; malformed names are skipped. Never raises: a camera that misses it retries on its timer."""
    messages = []
    for camera in cameras:
        session_id, _, source = camera.partition(":")
        if session_id.isdigit() and source.startswith("camera:"):
            messages.append((camera_group_name(int(session_id), source), {"type": "admission.wake"}))
    try:
        group_events_send(messages)
    except Exception:
        logger.warning("could not wake cameras %s", [group for group, _ in messages], exc_info=True)


def event_publish(session_id: int, event: dict) -> None:
    """Send ``event`` (a dict with a ``type``, see the module doc) to the session's group.

    Failures are logged, never raised: the results are already stored, and a dead channel layer must not fail them.
    """
    try:
        group_events_send([(session_group_name(session_id), event)])
    except Exception:
        logger.exception("could not publish %s for session %s", event.get("type"), session_id)
