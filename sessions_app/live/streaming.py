"""Per-connection admission of camera frames: backpressure, rate limit, staleness, lost frames and clock skew.

Plain Python (no Django, no I/O, injectable clocks) so the state machine is unit-testable; ``consumers`` only feeds it
events and carries out the returned ``Step`` (send these drop/error events, queue these frames).

Rules (``StreamState``):

- **Latest frame wins.** At most ``max_in_flight`` frames of the stream are queued or being analysed. One more frame
  waits in a single pending slot; a newer frame replaces it and the replaced frame is dropped (``"replaced"``).
- **Stop.** A client that stops its camera but stays connected for the answers of its frames in flight says so
  (``stop``): its waiting frame, which no newer frame will replace, is dropped (``"stopped"``), not analysed late.
- **Token bucket.** Frames arriving faster than ``rate_tolerance`` x the session's ``target_fps`` (at least
  ``target_fps + 2``; burst capacity ``max(4, rate)``) are dropped (``"rate_limited"``).
- **Staleness on the server clock.** A frame's age is measured from the moment the server received it (monotonic
  clock), never from the client's capture time: a frame that waited in the pending slot longer than ``expires_s`` is
  dropped (``"stale"``); a dispatched frame's task expires after what is left of ``expires_s``.
- **Lost frames.** A dispatched frame with no answer (result, dropped or error event) ``expires_s + lost_grace_s``
  after dispatch is *overdue*. The consumer then races the worker for the frame's single outcome
  (``services.frame_outcome_claim``): if it wins, ``declare_lost`` counts the frame as dropped (``"lost"``) and the
  worker will discard a late result; if it loses, the worker's answer is on its way and ``forget`` only frees the slot.
- **Results the channel layer lost.** A dispatched frame unanswered ``RESULT_LOOKUP_S`` after dispatch (and every
  ``RESULT_LOOKUP_S`` after that, until it is overdue) is *due for lookup* (``due_for_lookup``): the consumer looks
  it up in the database and sends a stored frame's result from there, so an event the channel layer lost costs a
  few seconds instead of the whole deadline. Each frame is answered once: an answer for a frame already answered
  (the late event after the lookup, or the other way round) is a duplicate, and ``answered`` returns ``None``.
- **Clock skew** (``ClientClock``): the client's capture timestamps are mapped onto the server clock, so a browser
  whose clock is off by seconds or hours gets the same treatment and correct session offsets.

Every valid frame is counted exactly once: dropped here (``counter_delta["dropped"]``, stored by the consumer), or by
the worker (processed, expired or error), never both.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

#: How many times the session's target rate a stream may send before frames are cut by the rate limiter.
RATE_TOLERANCE = 3.0
#: Extra seconds after the task expiry before an unanswered frame is declared lost.
LOST_GRACE_S = 10.0
#: Seconds after a failed dispatch (the broker was down) at which frames dispatched before it and still unanswered
#: are overdue: a broker that went away took the queued ones with it, and waiting the full ``expires_s +
#: lost_grace_s`` would hold the stream's slots for ~20 s after it came back. A frame a worker did hold is answered
#: within this in practice; if not, the outcome claim still lets only one answer count.
OUTAGE_GRACE_S = 3.0
#: Seconds after dispatch (and between lookups) at which an unanswered frame is looked up in the database: well above
#: the p95 frame-to-result latency of an overloaded 2-core server (0.7 s at 100 cameras, README *Load test*), so a
#: frame whose event is merely queued is seldom looked up, and well below the ~20 s deadline.
RESULT_LOOKUP_S = 5.0
#: How many answered sequences a stream remembers to recognise a duplicate answer (minutes of frames at 2 fps).
ANSWERED_MEMORY = 256


class ClientClock:
    """Maps a client's capture timestamps (ms since the epoch, on the *client's* clock) onto the server clock.

    The offset between the clocks is estimated as the smallest ``received_ms - client_ms`` seen so far on the
    connection (clock skew plus the shortest transit time; transit times are never negative). A frame's server capture
    time is ``client_ms + offset``: it keeps the client's spacing and order of frames (exact capture instants) while
    living on the server's time axis, whatever the client's clock says. If a frame would imply more than
    ``max_delay_ms`` of transit (the client's clock jumped back, or nonsense), the estimate restarts from that frame and
    its receive time is used.
    """

    def __init__(self, *, max_delay_ms: float):
        self.max_delay_ms = float(max_delay_ms)
        self.offset_ms: float | None = None

    def to_server_ms(self, client_ms: float | None, *, received_ms: float) -> float:
        """Server-clock capture time in ms since the epoch (never later than ``received_ms``).

        ``client_ms``: the client's capture time, ``None`` (or not finite) when unknown: then ``received_ms``.
        """
        if client_ms is None or not math.isfinite(client_ms):
            return received_ms
        sample = received_ms - client_ms
        if self.offset_ms is None or sample < self.offset_ms:
            self.offset_ms = sample
        captured = client_ms + self.offset_ms
        if received_ms - captured > self.max_delay_ms:
            self.offset_ms = sample
            captured = received_ms
        return min(captured, received_ms)


@dataclass(frozen=True)
class StreamFrame:
    """A valid frame of the stream.

    ``sequence``: the client's (or the server's) sequence number; ``captured_at_ms``: capture time on the *server*
    clock, ms since the epoch (see ``ClientClock``); ``client_captured_at_ms``: as sent by the client (``None``
    without header); ``received_at``: server monotonic seconds at arrival; ``data``: JPEG/PNG bytes;
    ``expires_s``: set when dispatched: seconds the Celery task may wait before it expires.
    """

    sequence: int
    captured_at_ms: float
    client_captured_at_ms: float | None
    received_at: float
    data: bytes
    expires_s: float | None = None


@dataclass
class Step:
    """What the consumer must do after one call, in this order: send ``error`` (``(code, detail, sequence)``) if
    set, send one ``dropped`` event per ``(sequence, reason)`` in ``dropped``, queue the frames in ``dispatch``
    (calling ``StreamState.dispatch_failed`` for any that cannot be queued)."""

    dispatch: list[StreamFrame] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    error: tuple[str, str, int | None] | None = None


class StreamState:
    """Backpressure and accounting of one camera stream (one WebSocket connection); see the module doc.

    ``target_fps``: the session's frame rate (frames/s); ``max_in_flight``: frames queued or in analysis at once
    (>= 1); ``expires_s``: seconds a frame may wait (pending slot + task queue) before it is useless;
    ``lost_grace_s``: extra seconds before an unanswered dispatched frame is overdue; ``monotonic``: seconds clock for
    ages and the token bucket; ``wall_ms``: the server's wall clock in ms since the epoch.

    Counters: ``stats`` (this connection's view, sent to the client: ``sent`` messages, and frames ``processed``,
    ``dropped``, ``rejected``) and ``take_counter_delta()`` (what the consumer must add to the session's stored
    counters: ``received``, ``dropped``, ``rejected``; outcomes recorded by the worker are not in it).
    """

    def __init__(
        self,
        *,
        target_fps: float,
        max_in_flight: int,
        expires_s: float,
        lost_grace_s: float = LOST_GRACE_S,
        rate_tolerance: float = RATE_TOLERANCE,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], float] = lambda: time.time() * 1000.0,
    ):
        self.max_in_flight = max(1, int(max_in_flight))
        self.expires_s = float(expires_s)
        self.lost_grace_s = float(lost_grace_s)
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self.clock = ClientClock(max_delay_ms=self.expires_s * 1000.0)
        rate = max(target_fps * rate_tolerance, target_fps + 2.0)
        self.bucket_rate, self.bucket_capacity = rate, max(4.0, rate)
        self.tokens, self.tokens_at = self.bucket_capacity, monotonic()
        self.in_flight: dict[int, float] = {}  # sequence -> monotonic dispatch time
        self._lookups_at = monotonic()  # monotonic time of the last ``due_for_lookup`` call
        self._answered: OrderedDict[int, None] = OrderedDict()  # recently answered sequences, oldest first
        self.outage_at: float | None = None  # monotonic time of the last failed dispatch
        self.pending: StreamFrame | None = None
        self.next_sequence = 0
        self.stats = {"sent": 0, "processed": 0, "dropped": 0, "rejected": 0}
        self._delta = {"received": 0, "dropped": 0, "rejected": 0}

    # ------------------------------------------------------------------------------------------- incoming
    def reject(self) -> None:
        """Count one invalid message (not a frame): the consumer sends the validation error itself."""
        self.stats["sent"] += 1
        self._count_rejected()

    def offer(self, *, sequence: int | None, client_captured_at_ms: float | None, data: bytes) -> Step:
        """A valid frame message arrived. ``sequence``/``client_captured_at_ms``: from the optional frame header
        (``None``: the server numbers frames and uses the receive time). Returns the ``Step`` to carry out: a
        ``duplicate_sequence`` error, a drop (``rate_limited``, ``replaced``), and/or a frame to dispatch."""
        self.stats["sent"] += 1
        if sequence is not None and sequence < self.next_sequence:
            # Sequences of a stream only grow (one WebSocket delivers in order): a used number, in flight or
            # answered long ago, would collide with its stored frame and never be answered.
            self._count_rejected()
            return Step(
                error=("duplicate_sequence", f"sequence {sequence} was already used; sequences must grow", sequence)
            )
        seq = sequence if sequence is not None else self.next_sequence
        self.next_sequence = seq + 1
        now = self._monotonic()
        frame = StreamFrame(
            sequence=seq,
            captured_at_ms=self.clock.to_server_ms(client_captured_at_ms, received_ms=self._wall_ms()),
            client_captured_at_ms=client_captured_at_ms,
            received_at=now,
            data=data,
        )
        self._delta["received"] += 1
        step = Step()
        if not self._take_token(now):
            self._drop(step, seq, "rate_limited")
            return step
        if self.pending is not None:  # latest frame wins
            self._drop_pending(step, "replaced")
        if len(self.in_flight) < self.max_in_flight:
            self._dispatch(step, frame, now)
        else:
            self.pending = frame
        return step

    def _take_token(self, now: float) -> bool:
        self.tokens = min(self.bucket_capacity, self.tokens + (now - self.tokens_at) * self.bucket_rate)
        self.tokens_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    # ------------------------------------------------------------------------------------------- outgoing
    def _dispatch(self, step: Step, frame: StreamFrame, now: float) -> None:
        remaining = self.expires_s - (now - frame.received_at)
        if remaining <= 0:
            self._drop(step, frame.sequence, "stale")
            return
        self.in_flight[frame.sequence] = now
        step.dispatch.append(replace(frame, expires_s=remaining))

    def _drop(self, step: Step, sequence: int, reason: str) -> None:
        self.stats["dropped"] += 1
        self._delta["dropped"] += 1
        step.dropped.append((sequence, reason))

    def _drop_pending(self, step: Step, reason: str) -> None:
        """Drop the frame in the pending slot (there must be one) for ``reason`` and empty the slot."""
        assert self.pending is not None
        self._drop(step, self.pending.sequence, reason)
        self.pending = None

    def _count_rejected(self) -> None:
        self.stats["rejected"] += 1
        self._delta["rejected"] += 1

    def _free_slot(self, step: Step, sequence) -> None:
        """Remove ``sequence`` from the in-flight set and move the pending frame (if still fresh) into the slot."""
        if self.in_flight.pop(sequence, None) is None:
            return
        if self.pending is not None and len(self.in_flight) < self.max_in_flight:
            frame, self.pending = self.pending, None
            self._dispatch(step, frame, self._monotonic())

    def _note_answered(self, sequence) -> bool:
        """Remember that ``sequence`` was answered; ``False`` if it already was (a duplicate answer)."""
        if sequence is None:  # nothing to recognise it by
            return True
        if sequence in self._answered:
            return False
        self._answered[sequence] = None
        if len(self._answered) > ANSWERED_MEMORY:
            self._answered.popitem(last=False)
        return True

    def dispatch_failed(self, sequence: int) -> Step:
        """The frame ``sequence`` of a previous ``Step.dispatch`` could not be queued (broker down): it is dropped
        (``queue_unavailable``) and its slot freed. The pending frame stays pending (the next frame replaces it)."""
        step = Step()
        self.note_outage()
        if self.in_flight.pop(sequence, None) is not None:
            self._drop(step, sequence, "queue_unavailable")
        return step

    def answered(self, sequence, outcome: str) -> Step | None:
        """The worker answered a frame of this stream: ``outcome`` = ``"result"`` | ``"dropped"`` | ``"error"`` (the
        worker stored that outcome in the session's counters), by its event or from the database. Frees the frame's
        slot (if it still held one). Returns ``None`` when the frame was answered before (a duplicate: the late
        event of a result sent from the database, or the reverse): the consumer then sends nothing."""
        if not self._note_answered(sequence):
            return None
        key = {"result": "processed", "dropped": "dropped", "error": "rejected"}[outcome]
        self.stats[key] += 1
        step = Step()
        self._free_slot(step, sequence)
        return step

    # ------------------------------------------------------------------------------------------ housekeeping
    def note_outage(self) -> None:
        """Redis (broker and channel layer) was found unreachable now: frames in flight may be gone (see
        ``overdue``)."""
        self.outage_at = self._monotonic()

    def overdue(self) -> list[int]:
        """Sequences still unanswered that were dispatched more than ``expires_s + lost_grace_s`` seconds ago, or
        before a failed dispatch (the broker was down) that lies more than ``OUTAGE_GRACE_S`` seconds back."""
        now = self._monotonic()
        deadline = now - (self.expires_s + self.lost_grace_s)
        if self.outage_at is not None and now - self.outage_at > OUTAGE_GRACE_S:
            deadline = max(deadline, self.outage_at)
        return [s for s, t in self.in_flight.items() if t < deadline]

    def due_for_lookup(self) -> list[int]:
        """Sequences in flight that crossed a multiple of ``RESULT_LOOKUP_S`` seconds since dispatch (5, 10, 15 s...)
        since the previous call, oldest first: each unanswered frame is due once per ``RESULT_LOOKUP_S`` (the
        consumer looks them up in the database and sends stored results)."""
        now, before = self._monotonic(), self._lookups_at
        self._lookups_at = now

        def periods(age: float) -> int:
            return math.floor(max(0.0, age) / RESULT_LOOKUP_S)

        return [s for s, t in self.in_flight.items() if periods(now - t) > periods(before - t)]

    def declare_lost(self, sequence: int) -> Step:
        """The consumer won the outcome claim of an overdue frame: count it dropped (``lost``) and free its slot."""
        step = Step()
        if sequence in self.in_flight:
            self._note_answered(sequence)
            self._drop(step, sequence, "lost")
            self._free_slot(step, sequence)
        return step

    def forget(self, sequence: int) -> Step:
        """The worker already claimed an overdue frame's outcome (its answer is on the way and will be counted by
        ``answered``): only free the slot."""
        step = Step()
        self._free_slot(step, sequence)
        return step

    def admission_refused(self, frame: StreamFrame) -> Step:
        """The system is at capacity (``services.frames.frame_admission_acquire`` said no): ``frame`` of a previous
        ``Step.dispatch`` was not queued. It goes back to the pending slot, unless a newer frame already waits there
        (then it is dropped as ``replaced``, latest frame wins), and its in-flight slot is freed; the consumer offers
        it again shortly with ``retry_pending``."""
        step = Step()
        if self.in_flight.pop(frame.sequence, None) is None:
            return step
        if self.pending is None or self.pending.sequence < frame.sequence:
            if self.pending is not None:
                self._drop(step, self.pending.sequence, "replaced")
            self.pending = replace(frame, expires_s=None)
        else:
            self._drop(step, frame.sequence, "replaced")
        return step

    def retry_pending(self) -> Step:
        """Dispatch the pending frame if a slot of this stream is free (``stale`` when it is too old by now)."""
        step = Step()
        if self.pending is not None and len(self.in_flight) < self.max_in_flight:
            frame, self.pending = self.pending, None
            self._dispatch(step, frame, self._monotonic())
        return step

    def expire_pending(self) -> Step:
        """Drop the pending frame as ``stale`` when it has waited longer than ``expires_s`` (server clock)."""
        step = Step()
        if self.pending is not None and self._monotonic() - self.pending.received_at > self.expires_s:
            self._drop_pending(step, "stale")
        return step

    def stop(self) -> Step:
        """The client stopped sending (its camera stopped) but keeps the connection for the answers of its frames in
        flight: the frame waiting for a slot will never be replaced by a newer one, so it is dropped (``"stopped"``)
        rather than analysed late, as closing the connection would drop it (``"closed"``). Frames in flight are
        answered as usual, and a frame sent afterwards is taken like any other. Returns the ``Step`` (the drop, or
        nothing without a waiting frame)."""
        step = Step()
        if self.pending is not None:
            self._drop_pending(step, "stopped")
        return step

    def close(self) -> None:
        """The connection closes: a frame still pending will never be sent and counts as dropped. Frames in flight
        are left to the worker, which records their outcome."""
        if self.pending is not None:
            self._drop_pending(Step(), "closed")

    def take_counter_delta(self) -> dict[str, int]:
        """Counter increments to store since the last call: ``{"received", "dropped", "rejected"}`` (then reset)."""
        delta, self._delta = self._delta, {"received": 0, "dropped": 0, "rejected": 0}
        return delta
