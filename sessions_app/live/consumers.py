"""WebSocket consumers: a camera stream (owner only) and a read-only live viewer.

Protocol of ``/ws/sessions/<id>/stream/``:

- Client -> server: binary messages, each one JPEG or PNG frame, optionally prefixed by the 16-byte header
  ``inference.imageio.FRAME_HEADER`` (``b"FRM1"``, uint32 sequence, float64 capture time in ms since the epoch,
  big-endian). One text message: ``{"type": "stop"}``, the camera stopped but the client stays for the answers of
  its frames in flight (the frame waiting for a slot is dropped, ``stopped``); any other text is ``binary_expected``.
- Server -> client: JSON text messages ``{"type": ...}``: ``ready`` (after connect: limits and the stream's source
  name), ``result`` (a stored frame's faces, for every source of the session), ``dropped`` (a frame of this stream
  that will never be analysed: ``reason`` = ``replaced`` | ``rate_limited`` | ``stale`` | ``stopped`` | ``expired``
  | ``revoked`` | ``lost`` | ``queue_unavailable``), ``error`` (invalid message or a frame the worker could not
  analyse: ``code``, ``detail``; the connection stays open), ``ended`` (session ended; then close 1000).
- Close codes: 4401 not logged in, 4404 unknown session or not yours, 4403 you may watch but not stream (staff
  viewing someone else's session), 4409 session already ended.

Backpressure ("latest frame wins"), rate limit, staleness (judged on the server's clock: time since the server
received the frame, so a client with a skewed clock is served normally), lost frames and exactly-once counting live in
``streaming.StreamState`` (see there); the consumers stay thin. Frames go to Celery directly; the channel layer only
carries small JSON result events.

Viewers (``/ws/sessions/<id>/watch/``): anyone who may see the session (its owner, e.g. in a second tab, or staff)
gets ``ready`` (``mode`` = ``watch``), then every ``result``, ``dropped``, ``error`` and ``ended`` event of the
session; messages sent to it are answered with an ``error`` (``read_only``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from sessions_app import selectors
from sessions_app.live import streaming
from sessions_app.live.streaming import Step, StreamFrame, StreamState
from sessions_app.models import EmotionSession
from sessions_app.services import frames as frame_services
from sessions_app.services.events import camera_group_name, session_group_name
from sessions_app.services.sessions import session_counters_add

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_ENDED = 4409

#: Seconds between housekeeping rounds of a stream (lost frames, stale pending frame, counter flush to the database,
#: group re-join).
FLUSH_INTERVAL_S = 2.0
#: Seconds between checks of the session's status in the database: an ``ended`` event published while Redis was down
#: is lost, so a running session's sockets also learn of its end from the database.
STATUS_CHECK_S = 10.0
#: Mean seconds before a frame the system could not admit is offered again (jittered 0.5x-1.5x).
ADMISSION_RETRY_S = 0.06


def _load_session(user, session_id) -> tuple[EmotionSession | None, int | None]:
    """(session, None) when visible to ``user``, else (None, close code)."""
    if not getattr(user, "is_authenticated", False):
        return None, CLOSE_UNAUTHENTICATED
    try:
        return selectors.session_get_for_user(user=user, session_id=session_id), None
    except EmotionSession.DoesNotExist:
        return None, CLOSE_NOT_FOUND


class _SessionEventsMixin:
    """Forwards the session group's events (see ``services.events``) to the browser as JSON."""

    session: EmotionSession | None = None

    async def dispatch(self, message: dict) -> None:
        """Channels' ``AsyncConsumer.dispatch`` without its per-message ``aclose_old_connections()``.

        That call is a hop into the process's one shared sync thread for every WebSocket frame and group event, so a
        slow database call of any consumer held up every camera's messages. These consumers touch the database only
        through ``database_sync_to_async``, which closes old connections around each call itself.
        Raises ``ValueError`` for a message type without a handler, as Channels does.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _send_json(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))

    async def _reject(self, code: int, error: str, detail: str) -> None:
        await self.accept()
        await self._send_json({"type": "error", "code": error, "detail": detail})
        await self.close(code=code)

    async def _join(self) -> None:
        self.group = session_group_name(self.session.pk)
        self._watching_running = self.session.status == EmotionSession.Status.RUNNING
        self._status_checked_at = time.monotonic()
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def _keep_alive(self) -> bool:
        """One watchdog round: re-join the group (a restarted Redis forgot it) and, every ``STATUS_CHECK_S``, look up
        the session in the database; when a session that was running has ended (or is gone), send ``ended`` and close.

        Returns ``False`` when the socket was closed.
        """
        await self.channel_layer.group_add(self.group, self.channel_name)
        if getattr(self, "camera_group", None):  # a stream's own wake-up group
            await self.channel_layer.group_add(self.camera_group, self.channel_name)
        if not self._watching_running or time.monotonic() - self._status_checked_at < STATUS_CHECK_S:
            return True
        self._status_checked_at = time.monotonic()
        current = await database_sync_to_async(selectors.session_get_by_id)(session_id=self.session.pk)
        if current is None or current.status != EmotionSession.Status.RUNNING:
            await self.session_ended({"session_id": self.session.pk})
            return False
        return True

    async def _leave(self) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def frame_result(self, event: dict) -> None:
        """``frame.result`` group event (shape: ``services.events``) -> ``{..., "type": "result"}`` to the
        browser."""
        await self._send_json({**event, "type": "result"})

    async def frame_dropped(self, event: dict) -> None:
        """``frame.dropped`` group event ``{"source", "sequence", "reason"}`` -> ``{..., "type": "dropped"}``."""
        await self._send_json({**event, "type": "dropped"})

    async def frame_error(self, event: dict) -> None:
        """``frame.error`` group event ``{"source", "sequence", "code", "detail"}`` -> ``{..., "type": "error"}``."""
        await self._send_json({**event, "type": "error"})

    async def session_ended(self, event: dict) -> None:
        """``session.ended`` group event ``{"session_id"}`` -> ``{"type": "ended", "session_id"}``, then close 1000."""
        await self._send_json({"type": "ended", "session_id": event.get("session_id")})
        await self.close(code=1000)


class SessionViewerConsumer(_SessionEventsMixin, AsyncWebsocketConsumer):
    """``/ws/sessions/<id>/watch/``: live result events for anyone who may see the session (owner, staff)."""

    async def connect(self) -> None:
        """Accept a user who may see the session (else an ``error`` event and close 4401/4404), join its group and
        send ``{"type": "ready", "session_id", "mode": "watch"}``. Works for ended sessions too (nothing follows)."""
        self.session, code = await database_sync_to_async(_load_session)(
            self.scope.get("user"), self.scope["url_route"]["kwargs"]["session_id"]
        )
        if self.session is None:
            await self._reject(code, "not_found" if code == CLOSE_NOT_FOUND else "unauthenticated", "cannot watch")
            return
        await self._join()
        await self.accept()
        self._watchdog = asyncio.create_task(self._watch())
        await self._send_json({"type": "ready", "session_id": self.session.pk, "mode": "watch"})

    async def _watch(self) -> None:
        """Every ``FLUSH_INTERVAL_S``: ``_keep_alive`` until the socket closes."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                if not await self._keep_alive():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("viewer watchdog failed")

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Any message: answered with ``{"type": "error", "code": "read_only"}``; the socket stays open."""
        await self._send_json({"type": "error", "code": "read_only", "detail": "this connection only receives"})

    async def disconnect(self, code) -> None:
        """Leave the session's group, stop the watchdog. ``code``: the WebSocket close code (unused)."""
        await self._leave()
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.cancel()


#: The one text message a camera stream takes (module doc): the camera stopped, the client stays for its answers.
STOP_MESSAGE = {"type": "stop"}


def _is_stop(text: str | None) -> bool:
    """Whether ``text`` is the ``STOP_MESSAGE`` (JSON; whitespace and key order free). Longer texts are not parsed."""
    if not text or len(text) > 64:
        return False
    try:
        return json.loads(text) == STOP_MESSAGE
    except ValueError:
        return False


class SessionStreamConsumer(_SessionEventsMixin, AsyncWebsocketConsumer):
    """``/ws/sessions/<id>/stream/``: the owner's camera frames in, result events out (see module doc).

    Thin: validation is ``services.frames.frame_validate``; backpressure, rate limit, staleness, lost frames and
    counting are ``streaming.StreamState``; this class only carries out the returned ``streaming.Step``.
    """

    async def connect(self) -> None:
        """Accept the owner of a running session (else send an ``error`` event and close with 4401/4404/4403/4409),
        join the session's group, start housekeeping and send ``{"type": "ready", "mode": "stream", "session_id",
        "source", "target_fps", "max_in_flight", "max_frame_bytes", "max_width", "max_height"}``."""
        self.group = None
        self._flusher = None
        self.state = None
        self._counter_writes: set[asyncio.Future] = set()
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
        self.min_face_px = selectors.session_min_face_px(session=self.session)
        self.state = StreamState(
            target_fps=self.session.target_fps,
            max_in_flight=settings.FER_MAX_IN_FLIGHT,
            expires_s=float(settings.FER_FRAME_TASK_EXPIRES_S),
            lost_grace_s=streaming.LOST_GRACE_S,
        )
        await self._join()
        self.camera_group = camera_group_name(self.session.pk, self.source)
        await self.channel_layer.group_add(self.camera_group, self.channel_name)
        await self.accept()
        self._flusher = asyncio.create_task(self._housekeeping())
        await self._send_json(
            {
                "type": "ready",
                "mode": "stream",
                "session_id": self.session.pk,
                "source": self.source,
                "target_fps": self.session.target_fps,
                "max_in_flight": self.state.max_in_flight,
                "max_frame_bytes": settings.FER_MAX_FRAME_BYTES,
                "max_width": settings.FER_MAX_FRAME_WIDTH,
                "max_height": settings.FER_MAX_FRAME_HEIGHT,
            }
        )

    # ------------------------------------------------------------------------------------------ incoming frames
    async def receive(self, text_data=None, bytes_data=None) -> None:
        """One client message: ``bytes_data`` = an optional 16-byte ``FRAME_HEADER`` + JPEG/PNG bytes.

        ``text_data`` ``{"type": "stop"}`` (``STOP_MESSAGE``): drop the frame waiting for a slot (``stopped``).

        Replies only when needed: an ``error`` event (``code``: ``binary_expected`` for any other ``text_data``, any
        ``inference.imageio.FrameRejected`` code, ``duplicate_sequence``) or ``dropped`` events (``reason``:
        ``rate_limited``, ``replaced``, ``stale``, ``stopped``, ``queue_unavailable``); an accepted frame is answered
        later by ``result``, ``dropped`` or ``error``. Never closes the socket.
        """
        if self.state is None:  # a refused connection that is being closed
            return
        if bytes_data is None and _is_stop(text_data):
            await self._apply(self.state.stop())
            return
        try:
            msg = frame_services.frame_validate(bytes_data if bytes_data is not None else (text_data or ""))
        except frame_services.FrameRejected as exc:
            self.state.reject()
            await self._send_json({"type": "error", "code": exc.code, "detail": exc.detail, "source": self.source})
            return
        await self._apply(
            self.state.offer(sequence=msg.sequence, client_captured_at_ms=msg.captured_at_ms, data=msg.data)
        )

    async def _apply(self, step: Step) -> None:
        """Carry out a ``Step`` of the state machine: error, drop events, then queue frames for Celery."""
        if step.error is not None:
            code, detail, sequence = step.error
            await self._send_json(
                {"type": "error", "code": code, "detail": detail, "source": self.source, "sequence": sequence}
            )
        for sequence, reason in step.dropped:
            await self._send_json({"type": "dropped", "source": self.source, "sequence": sequence, "reason": reason})
        for frame in step.dispatch:
            await self._dispatch(frame)

    async def _dispatch(self, frame: StreamFrame) -> None:
        """Queue ``frame`` for analysis if the system admits it (``frame_live_dispatch``: admission and queueing in
        one hop into a worker thread); else it waits in the pending slot and is offered again after
        ``ADMISSION_RETRY_S`` (jittered, so waiting cameras take turns). A broker outage answers the frame
        ``queue_unavailable`` and keeps the socket."""
        outcome = await sync_to_async(frame_services.frame_live_dispatch, thread_sensitive=False)(
            session_id=self.session.pk,
            source=self.source,
            sequence=frame.sequence,
            captured_at_ms=frame.captured_at_ms,
            data=frame.data,
            expires_s=frame.expires_s,
            waited_s=time.monotonic() - frame.received_at,
            min_face_px=self.min_face_px,
        )
        if outcome == frame_services.DISPATCH_REFUSED:
            await self._apply(self.state.admission_refused(frame))
            self._schedule_retry()
        elif outcome == frame_services.DISPATCH_UNAVAILABLE:
            await self._apply(self.state.dispatch_failed(frame.sequence))

    def _schedule_retry(self) -> None:
        if getattr(self, "_retry", None) is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_later())

    async def _retry_later(self) -> None:
        await asyncio.sleep(ADMISSION_RETRY_S * (0.5 + random.random()))
        if self.state is not None:
            await self._apply(self.state.retry_pending())

    async def admission_wake(self, event: dict) -> None:
        """``admission.wake`` (``services.events.cameras_wake``): this camera is first in line for a slot that was
        just freed; offer the pending frame now (a no-op without one)."""
        if self.state is not None:
            await self._apply(self.state.retry_pending())

    # ------------------------------------------------------------------------------------- group events (own)
    async def frame_result(self, event: dict) -> None:
        """A ``frame.result`` group event (shape: ``services.events``). For this stream's own frames the client
        gets ``{..., "type": "result", "stream": {"sent", "processed", "dropped", "rejected"}}`` and the frame's slot
        is freed; results of other sources of the session are forwarded as ``{..., "type": "result"}``."""
        if event.get("source") == self.source:
            step = self.state.answered(event.get("sequence"), "result")
            if step is None:  # already answered (from the database, before its late event came)
                return
            await self._send_json({**event, "type": "result", "stream": dict(self.state.stats)})
            await self._apply(step)
        else:
            await super().frame_result(event)

    async def frame_dropped(self, event: dict) -> None:
        """A ``frame.dropped`` group event (the worker expired this stream's frame): forwarded as
        ``{"type": "dropped", "source", "sequence", "reason"}``, slot freed. Other sources' drops are ignored."""
        if event.get("source") == self.source:
            step = self.state.answered(event.get("sequence"), "dropped")
            if step is None:
                return
            await super().frame_dropped(event)
            await self._apply(step)

    async def frame_error(self, event: dict) -> None:
        """A ``frame.error`` group event (the worker could not analyse this stream's frame): forwarded as
        ``{"type": "error", "source", "sequence", "code", "detail"}``, slot freed. Other sources' errors are
        ignored."""
        if event.get("source") == self.source:
            step = self.state.answered(event.get("sequence"), "error")
            if step is None:
                return
            await super().frame_error(event)
            await self._apply(step)

    # --------------------------------------------------------------------------------------------- bookkeeping
    async def _flush(self) -> None:
        """Store the counter deltas taken from the state. The write runs as its own task, shielded: a disconnect
        that cancels housekeeping while it waits would otherwise cancel a write not yet started in the database
        thread, and the deltas already taken from the state would be lost (``disconnect`` waits for it)."""
        delta = self.state.take_counter_delta()
        if any(delta.values()):
            write = asyncio.ensure_future(
                database_sync_to_async(session_counters_add)(session_id=self.session.pk, **delta)
            )
            self._counter_writes.add(write)
            write.add_done_callback(self._counter_writes.discard)
            await asyncio.shield(write)

    async def _declare_overdue_lost(self) -> None:
        """Frames unanswered past their deadline: claim their outcome; count them lost only if the claim is ours."""
        for sequence in self.state.overdue():
            won = await sync_to_async(frame_services.frame_outcome_claim, thread_sensitive=False)(
                session=self.session, source=self.source, sequence=sequence, outcome="lost"
            )
            if won:
                token = frame_services.frame_admission_token(self.session.pk, self.source, sequence)
                await sync_to_async(frame_services.frame_admission_release, thread_sensitive=False)(token=token)
                await self._apply(self.state.declare_lost(sequence))
                continue
            # The worker claimed the frame first. Its answer may still be on the way (then only free the slot), or it
            # was published while this socket was out of its group (a Redis restart forgets groups): then the frame
            # is stored, and the client gets its result from the database.
            stored = await database_sync_to_async(selectors.frames_get)(
                session_id=self.session.pk, source=self.source, sequences=[sequence]
            )
            if sequence not in stored:
                await self._apply(self.state.forget(sequence))
            else:
                logger.warning(
                    "result of frame %s of %s never arrived through the channel layer: sent from the database",
                    sequence,
                    self.source,
                )
                await self.frame_result(frame_services.frame_result_event(*stored[sequence]))

    async def _look_up_unanswered(self) -> None:
        """Frames unanswered ``streaming.RESULT_LOOKUP_S`` after dispatch: one query for all of them; a stored one's
        result is sent from the database (its event was lost by the channel layer, or is late; ``StreamState.answered``
        lets only the first answer through)."""
        sequences = self.state.due_for_lookup()
        if not sequences:
            return
        stored = await database_sync_to_async(selectors.frames_get)(
            session_id=self.session.pk, source=self.source, sequences=sequences
        )
        for sequence in sorted(stored):
            if sequence in self.state.in_flight:  # its event may have come while the query ran
                logger.warning(
                    "result of frame %s of %s had not arrived through the channel layer %.0f s after dispatch: "
                    "sent from the database",
                    sequence,
                    self.source,
                    streaming.RESULT_LOOKUP_S,
                )
                await self.frame_result(frame_services.frame_result_event(*stored[sequence]))

    async def _housekeeping(self) -> None:
        """Every FLUSH_INTERVAL_S: note a channel-layer outage seen since the last round (frames in flight then become
        overdue sooner, ``StreamState.overdue``), declare overdue frames lost, send results of frames stored a while
        ago whose event has not come (``_look_up_unanswered``), drop a stale pending frame, store counter deltas,
        re-join the group and check the session's status (``_keep_alive``)."""
        outages_seen = getattr(self.channel_layer, "outages", 0)
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                outages = getattr(self.channel_layer, "outages", 0)  # ResilientRedisChannelLayer counts them
                if outages != outages_seen:  # Redis went away: queued frames may be lost with it
                    outages_seen = outages
                    self.state.note_outage()
                await self._declare_overdue_lost()
                await self._look_up_unanswered()
                await self._apply(self.state.expire_pending())
                await self._flush()
                if not await self._keep_alive():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("stream housekeeping failed")

    async def disconnect(self, code) -> None:
        """Leave the groups, stop housekeeping, count a still-pending frame as dropped and store the last counter
        deltas. ``code``: the WebSocket close code (unused). Frames in flight are recorded by the worker."""
        await self._leave()
        if getattr(self, "camera_group", None):
            await self.channel_layer.group_discard(self.camera_group, self.channel_name)
        if getattr(self, "_flusher", None) is not None:
            self._flusher.cancel()
        if getattr(self, "_retry", None) is not None:
            self._retry.cancel()
        if getattr(self, "state", None) is not None:
            self.state.close()
            await self._flush()
            # A housekeeping write still in flight: stored before the socket is gone.
            for result in await asyncio.gather(*self._counter_writes, return_exceptions=True):
                if isinstance(result, Exception):
                    logger.error("counters of %s could not be stored: %r", self.source, result)
