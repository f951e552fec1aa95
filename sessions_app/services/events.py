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

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def session_group_name(session_id: int) -> str:
    """Channel-layer group of a session's result events: ``"session_<id>"``."""
    return f"session_{int(session_id)}"


def camera_group_name(session_id: int, source: str) -> str:
    """Channel-layer group of one camera connection (``source`` ``"camera:<hex>"``): ``"camera_<id>_<hex>"``."""
    return f"camera_{int(session_id)}_{source.removeprefix('camera:')}"[:99]


def camera_wake(camera: str) -> None:
    """Send ``admission.wake`` to the camera ``"<session id>:<source>"`` (the admission queue's member name). Never
    raises: a camera that misses it retries on its timer."""
    layer = get_channel_layer()
    session_id, _, source = camera.partition(":")
    if layer is None or not session_id.isdigit() or not source.startswith("camera:"):
        return
    try:
        async_to_sync(layer.group_send)(camera_group_name(int(session_id), source), {"type": "admission.wake"})
    except Exception:
        logger.warning("could not wake camera %s", camera, exc_info=True)


def event_publish(session_id: int, event: dict) -> None:
    """Send ``event`` (a dict with a ``type``, see the module doc) to the session's group.

    Failures are logged, never raised: the results are already stored, and a dead channel layer must not fail them.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group_name(session_id), event)
    except Exception:
        logger.exception("could not publish %s for session %s", event.get("type"), session_id)
