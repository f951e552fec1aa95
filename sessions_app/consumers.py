"""WebSocket consumers: a camera stream (owner only) and a read-only live viewer.

Protocol of ``/ws/sessions/<id>/stream/``:

- Client -> server: binary messages, each one JPEG or PNG frame, optionally prefixed by the 16-byte header
  ``services.FRAME_HEADER`` (``b"FRM1"``, uint32 sequence, float64 capture time in ms since the epoch, big-endian).
- Server -> client: JSON text messages ``{"type": ...}``: ``ready`` (after connect: limits and the stream's source
  name), ``result`` (a stored frame's faces, for every source of the session), ``dropped`` (a frame of this stream
  that will never be analysed: ``reason`` = ``replaced`` | ``rate_limited`` | ``stale`` | ``expired`` | ``lost``),
  ``error`` (invalid message: ``code``, ``detail``; the connection stays open), ``ended`` (session ended; then
  close 1000).
- Close codes: 4401 not logged in, 4404 unknown session or not yours, 4403 you may watch but not stream (staff
  viewing someone else's session), 4409 session already ended.

Backpressure ("latest frame wins"): at most ``settings.FER_MAX_IN_FLIGHT`` frames of a stream are queued or being
analysed; one more waits in a single pending slot, and a newer frame replaces it (the older one is counted as
dropped). A frame rate far above the session's ``target_fps`` is cut by a token bucket (counted as dropped); a
frame whose client capture time is older than ``FER_FRAME_TASK_EXPIRES_S`` on arrival (server overloaded) is dropped
as stale. A frame whose result has not come back ``FER_FRAME_TASK_EXPIRES_S + 10`` s after dispatch is counted as lost.
Frames go to Celery directly; the channel layer only carries small JSON result events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from sessions_app import selectors, services
from sessions_app.models import EmotionSession

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_ENDED = 4409

#: How many times the session's target rate a stream may send before frames are cut by the rate limiter.
RATE_TOLERANCE = 3.0
#: Extra seconds after the task expiry before an unanswered frame is declared lost.
LOST_GRACE_S = 10.0
#: Seconds between counter flushes of a stream to the database.
FLUSH_INTERVAL_S = 2.0


@dataclass
class _Pending:
    sequence: int
    captured_at_ms: float
    data: bytes


def _load_session(user, session_id) -> tuple[EmotionSession | None, int | None]:
    """(session, None) when visible to ``user``, else (None, close code)."""
    if not getattr(user, "is_authenticated", False):
        return None, CLOSE_UNAUTHENTICATED
    try:
        return selectors.session_get_for_user(user=user, session_id=session_id), None
    except EmotionSession.DoesNotExist:
        return None, CLOSE_NOT_FOUND


class _SessionEventsMixin:
    """Forwards the session group's events (see ``services`` module doc) to the browser as JSON."""

    session: EmotionSession | None = None

    async def _send_json(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))

    async def _reject(self, code: int, error: str, detail: str) -> None:
        await self.accept()
        await self._send_json({"type": "error", "code": error, "detail": detail})
        await self.close(code=code)

    async def _join(self) -> None:
        self.group = services.session_group_name(self.session.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def _leave(self) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def frame_result(self, event: dict) -> None:
        await self._send_json({**event, "type": "result"})

    async def frame_dropped(self, event: dict) -> None:
        await self._send_json({**event, "type": "dropped"})

    async def frame_error(self, event: dict) -> None:
        await self._send_json({**event, "type": "error"})

    async def session_ended(self, event: dict) -> None:
        await self._send_json({"type": "ended", "session_id": event.get("session_id")})
        await self.close(code=1000)


class SessionViewerConsumer(_SessionEventsMixin, AsyncWebsocketConsumer):
    """``/ws/sessions/<id>/watch/``: live result events for anyone who may see the session (owner, staff)."""

    async def connect(self) -> None:
        self.session, code = await database_sync_to_async(_load_session)(
            self.scope.get("user"), self.scope["url_route"]["kwargs"]["session_id"]
        )
        if self.session is None:
            await self._reject(code, "not_found" if code == CLOSE_NOT_FOUND else "unauthenticated", "cannot watch")
            return
        await self._join()
        await self.accept()
        await self._send_json({"type": "ready", "session_id": self.session.pk, "mode": "watch"})

    async def receive(self, text_data=None, bytes_data=None) -> None:
        await self._send_json({"type": "error", "code": "read_only", "detail": "this connection only receives"})

    async def disconnect(self, code) -> None:
        await self._leave()


class SessionStreamConsumer(_SessionEventsMixin, AsyncWebsocketConsumer):
    """``/ws/sessions/<id>/stream/``: the owner's camera frames in, result events out (see module doc)."""

    async def connect(self) -> None:
        self.group = None
        self._flusher = None
        user = self.scope.get("user")
        self.session, code = await database_sync_to_async(_load_session)(
            user, self.scope["url_route"]["kwargs"]["session_id"]
        )
        if self.session is None:
            error = "unauthenticated" if code == CLOSE_UNAUTHENTICATED else "not_found"
            await self._reject(code, error, "log in and open one of your own sessions")
            return
        if not selectors.session_can_stream(user=user, session=self.session):
            await self._reject(CLOSE_FORBIDDEN, "forbidden", "only the session's owner can stream into it")
            return
        if self.session.status != EmotionSession.Status.RUNNING:
            await self._reject(CLOSE_ENDED, "session_ended", "this session has ended")
            return
        self.source = f"camera:{secrets.token_hex(4)}"
        self.max_in_flight = max(1, settings.FER_MAX_IN_FLIGHT)
        self.expires_s = float(settings.FER_FRAME_TASK_EXPIRES_S)
        self.in_flight: dict[int, float] = {}
        self.pending: _Pending | None = None
        self.next_sequence = 0
        rate = max(self.session.target_fps * RATE_TOLERANCE, self.session.target_fps + 2.0)
        self.bucket_rate, self.bucket_capacity = rate, max(4.0, rate)
        self.tokens, self.tokens_at = self.bucket_capacity, time.monotonic()
        self.delta = {"received": 0, "dropped": 0, "rejected": 0}
        self.stats = {"sent": 0, "processed": 0, "dropped": 0, "rejected": 0}
        await self._join()
        await self.accept()
        self._flusher = asyncio.create_task(self._housekeeping())
        await self._send_json(
            {
                "type": "ready",
                "mode": "stream",
                "session_id": self.session.pk,
                "source": self.source,
                "target_fps": self.session.target_fps,
                "max_in_flight": self.max_in_flight,
                "max_frame_bytes": settings.FER_MAX_FRAME_BYTES,
                "max_width": settings.FER_MAX_FRAME_WIDTH,
                "max_height": settings.FER_MAX_FRAME_HEIGHT,
            }
        )

    # ------------------------------------------------------------------------------------------ incoming frames
    async def receive(self, text_data=None, bytes_data=None) -> None:
        self.stats["sent"] += 1
        try:
            msg = services.frame_validate(bytes_data if bytes_data is not None else (text_data or ""))
        except services.FrameRejected as exc:
            self.delta["rejected"] += 1
            self.stats["rejected"] += 1
            await self._send_json({"type": "error", "code": exc.code, "detail": exc.detail, "source": self.source})
            return
        sequence = msg.sequence if msg.sequence is not None else self.next_sequence
        self.next_sequence = max(self.next_sequence, sequence + 1)
        if sequence in self.in_flight or (self.pending is not None and self.pending.sequence == sequence):
            self.delta["rejected"] += 1
            self.stats["rejected"] += 1
            await self._send_json(
                {
                    "type": "error",
                    "code": "duplicate_sequence",
                    "detail": f"sequence {sequence} already in flight",
                    "source": self.source,
                    "sequence": sequence,
                }
            )
            return
        captured = services.captured_at_from_client(msg.captured_at_ms)
        frame = _Pending(sequence=sequence, captured_at_ms=captured.timestamp() * 1000.0, data=msg.data)
        self.delta["received"] += 1
        if time.time() - captured.timestamp() > self.expires_s:
            # the frame waited in the server's inbound buffer longer than a task may wait: too old to be useful
            await self._drop(frame.sequence, "stale")
            return
        if not self._take_token():
            await self._drop(frame.sequence, "rate_limited")
            return
        if len(self.in_flight) < self.max_in_flight:
            await self._dispatch(frame)
            return
        if self.pending is not None:
            await self._drop(self.pending.sequence, "replaced")
        self.pending = frame

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.bucket_capacity, self.tokens + (now - self.tokens_at) * self.bucket_rate)
        self.tokens_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    async def _dispatch(self, frame: _Pending) -> None:
        from sessions_app.tasks import frame_analyze_enqueue

        self.in_flight[frame.sequence] = time.monotonic()
        try:
            await sync_to_async(frame_analyze_enqueue, thread_sensitive=False)(
                session_id=self.session.pk,
                source=self.source,
                sequence=frame.sequence,
                captured_at_ms=frame.captured_at_ms,
                data=frame.data,
                expires_s=self.expires_s,
            )
        except Exception:  # noqa: BLE001 - broker down: tell the client, keep the socket
            logger.exception("could not queue frame %s of %s", frame.sequence, self.source)
            self.in_flight.pop(frame.sequence, None)
            await self._drop(frame.sequence, "queue_unavailable")

    async def _drop(self, sequence: int, reason: str) -> None:
        self.delta["dropped"] += 1
        self.stats["dropped"] += 1
        await self._send_json({"type": "dropped", "source": self.source, "sequence": sequence, "reason": reason})

    async def _release(self, sequence) -> None:
        if self.in_flight.pop(sequence, None) is None:
            return
        if self.pending is not None and len(self.in_flight) < self.max_in_flight:
            frame, self.pending = self.pending, None
            await self._dispatch(frame)

    # ------------------------------------------------------------------------------------- group events (own)
    async def frame_result(self, event: dict) -> None:
        if event.get("source") == self.source:
            self.stats["processed"] += 1
            await self._send_json({**event, "type": "result", "stream": dict(self.stats)})
            await self._release(event.get("sequence"))
        else:
            await super().frame_result(event)

    async def frame_dropped(self, event: dict) -> None:
        if event.get("source") == self.source:
            self.stats["dropped"] += 1
            await super().frame_dropped(event)
            await self._release(event.get("sequence"))

    async def frame_error(self, event: dict) -> None:
        if event.get("source") == self.source:
            self.stats["rejected"] += 1
            await super().frame_error(event)
            await self._release(event.get("sequence"))

    # --------------------------------------------------------------------------------------------- bookkeeping
    async def _flush(self) -> None:
        delta, self.delta = self.delta, {"received": 0, "dropped": 0, "rejected": 0}
        if any(delta.values()):
            await database_sync_to_async(services.session_counters_add)(session_id=self.session.pk, **delta)

    async def _housekeeping(self) -> None:
        """Every FLUSH_INTERVAL_S: store counter deltas, declare frames lost that never came back."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                deadline = time.monotonic() - (self.expires_s + LOST_GRACE_S)
                for sequence in [s for s, t in self.in_flight.items() if t < deadline]:
                    await self._drop(sequence, "lost")
                    await self._release(sequence)
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the loop alive
                logger.exception("stream housekeeping failed")

    async def disconnect(self, code) -> None:
        await self._leave()
        if getattr(self, "_flusher", None) is not None:
            self._flusher.cancel()
            if getattr(self, "pending", None) is not None:
                self.delta["dropped"] += 1
                self.pending = None
            await self._flush()
