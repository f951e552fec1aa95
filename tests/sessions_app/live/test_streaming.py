"""The per-connection stream state machine (``sessions_app.live.streaming``): plain Python, fake clocks."""

from __future__ import annotations

import pytest

from sessions_app.live import streaming
from sessions_app.live.streaming import ClientClock, StreamState

T0_MS = 1_800_000_000_000.0  # server wall clock at the start, ms since the epoch


class Clocks:
    """A fake monotonic clock (s) and a wall clock (ms) that advance together."""

    def __init__(self):
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def wall_ms(self) -> float:
        return T0_MS + (self.t - 100.0) * 1000.0

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture
def clocks():
    return Clocks()


def make(clocks, *, fps=2.0, max_in_flight=2, expires_s=10.0, lost_grace_s=10.0) -> StreamState:
    return StreamState(
        target_fps=fps,
        max_in_flight=max_in_flight,
        expires_s=expires_s,
        lost_grace_s=lost_grace_s,
        monotonic=clocks.monotonic,
        wall_ms=clocks.wall_ms,
    )


def offer(state, clocks, seq, *, skew_s=0.0):
    """Offer frame ``seq`` captured now on a client clock that is ``skew_s`` seconds off the server's."""
    return state.offer(sequence=seq, client_captured_at_ms=clocks.wall_ms() + skew_s * 1000.0, data=b"jpeg")


def accounted(state) -> int:
    """Frames with a final outcome in this connection's view plus those still in the stream's hands."""
    s = state.stats
    return s["processed"] + s["dropped"] + len(state.in_flight) + (state.pending is not None)


def test_latest_frame_wins_and_every_frame_is_counted_once(clocks):
    state = make(clocks)
    steps = [offer(state, clocks, seq) for seq in range(5)]
    assert [f.sequence for f in steps[0].dispatch + steps[1].dispatch] == [0, 1]
    assert steps[2].dispatch == [] and steps[2].dropped == []  # 2 waited in the pending slot ...
    assert steps[3].dropped == [(2, "replaced")] and steps[4].dropped == [(3, "replaced")]  # ... until replaced
    assert state.pending.sequence == 4
    step = state.answered(0, "result")  # a slot frees: the pending frame goes out
    assert [f.sequence for f in step.dispatch] == [4] and state.pending is None
    assert step.dispatch[0].expires_s == pytest.approx(10.0)
    assert state.stats == {"sent": 5, "processed": 1, "dropped": 2, "rejected": 0}
    assert accounted(state) == 5
    assert state.take_counter_delta() == {"received": 5, "dropped": 2, "rejected": 0}
    assert state.take_counter_delta() == {"received": 0, "dropped": 0, "rejected": 0}
    state.close()  # nothing pending: nothing more to count
    assert state.take_counter_delta()["dropped"] == 0


def test_token_bucket_cuts_floods_and_refills(clocks):
    state = make(clocks, fps=2.0, max_in_flight=100)  # rate 6/s, burst 6
    steps = [offer(state, clocks, seq) for seq in range(10)]
    assert sum(len(s.dispatch) for s in steps) == 6
    assert [d for s in steps for d in s.dropped] == [(seq, "rate_limited") for seq in range(6, 10)]
    clocks.advance(0.5)  # 3 tokens back
    steps = [offer(state, clocks, seq) for seq in range(10, 14)]
    assert [len(s.dispatch) for s in steps] == [1, 1, 1, 0]


def test_duplicate_sequence_and_invalid_messages_are_rejected(clocks):
    state = make(clocks)
    offer(state, clocks, 7)
    step = offer(state, clocks, 7)
    assert step.error == ("duplicate_sequence", "sequence 7 was already used; sequences must grow", 7)
    assert not step.dispatch
    state.reject()
    assert state.stats == {"sent": 3, "processed": 0, "dropped": 0, "rejected": 2}
    assert state.take_counter_delta() == {"received": 1, "dropped": 0, "rejected": 2}
    no_header = state.offer(sequence=None, client_captured_at_ms=None, data=b"jpeg")
    assert no_header.dispatch[0].sequence == 8  # the server numbers frames after the highest client sequence
    assert no_header.dispatch[0].captured_at_ms == clocks.wall_ms()


def test_a_sequence_reused_after_its_answer_is_refused_at_once(clocks):
    """A reused number would meet its stored frame and never be answered: it is refused when it arrives, so the
    client hears about every frame and sent = processed + dropped + rejected still holds."""
    state = make(clocks)
    offer(state, clocks, 3)
    state.answered(3, "result")
    assert state.stats["processed"] == 1 and not state.in_flight
    for reused in (3, 1):
        step = offer(state, clocks, reused)
        assert step.error[0] == "duplicate_sequence" and step.error[2] == reused and not step.dispatch
    stats = state.stats
    assert stats["sent"] == stats["processed"] + stats["dropped"] + stats["rejected"] == 3


@pytest.mark.parametrize("skew_s", [-60.0, -30.0, -10.5, 0.0, 45.0, -7200.0])
def test_skewed_client_clock_is_served_normally(clocks, skew_s):
    """A browser whose clock is off (here by up to 2 h) gets no stale drops, and capture times land on the server's
    time axis with the client's own spacing between frames."""
    state = make(clocks, max_in_flight=100)
    captured = []
    for seq in range(6):
        step = offer(state, clocks, seq, skew_s=skew_s)
        assert not step.dropped and len(step.dispatch) == 1, step
        captured.append(step.dispatch[0].captured_at_ms)
        clocks.advance(0.5)
    start = T0_MS
    assert captured == pytest.approx([start + 500.0 * i for i in range(6)], abs=1e-3)
    assert state.stats["dropped"] == 0


def test_client_clock_mapping_keeps_spacing_and_recovers_from_jumps():
    clock = ClientClock(max_delay_ms=10_000)
    # 30 s behind; transit 40 ms, then 20 ms (the best estimate wins), then 80 ms
    assert clock.to_server_ms(1_000.0, received_ms=31_040.0) == 31_040.0
    assert clock.to_server_ms(1_500.0, received_ms=31_520.0) == 31_520.0
    assert clock.to_server_ms(2_000.0, received_ms=32_080.0) == pytest.approx(32_020.0)  # capture instant kept
    # the client's clock jumps back by a minute: restart from the receive time instead of placing it 60 s early
    assert clock.to_server_ms(-57_500.0, received_ms=32_600.0) == 32_600.0
    assert clock.to_server_ms(-57_000.0, received_ms=33_110.0) == pytest.approx(33_100.0)
    # jumps forward: never later than the receive time
    assert clock.to_server_ms(99_000.0, received_ms=33_600.0) == 33_600.0
    assert clock.to_server_ms(None, received_ms=34_000.0) == 34_000.0
    assert clock.to_server_ms(float("inf"), received_ms=34_500.0) == 34_500.0


def test_staleness_is_measured_on_the_server_clock(clocks):
    state = make(clocks, max_in_flight=1, expires_s=10.0, lost_grace_s=100.0)
    offer(state, clocks, 0, skew_s=-40.0)  # in flight
    clocks.advance(1.0)
    offer(state, clocks, 1, skew_s=-40.0)  # pending
    clocks.advance(4.0)
    step = state.answered(0, "result")  # pending waited 4 s: goes out with the 6 s of expiry left
    assert [f.sequence for f in step.dispatch] == [1] and step.dispatch[0].expires_s == pytest.approx(6.0)
    clocks.advance(1.0)
    offer(state, clocks, 2)  # pending behind 1
    clocks.advance(10.5)
    assert state.expire_pending().dropped == [(2, "stale")] and state.pending is None
    offer(state, clocks, 3)
    clocks.advance(11.0)
    step = state.answered(1, "result")  # the waiting frame is too old by now: dropped, not dispatched
    assert step.dropped == [(3, "stale")] and not step.dispatch


def test_overdue_frames_are_lost_or_forgotten_and_counted_once(clocks):
    state = make(clocks, max_in_flight=2, expires_s=10.0, lost_grace_s=10.0)
    offer(state, clocks, 0)
    offer(state, clocks, 1)
    offer(state, clocks, 2)  # pending
    clocks.advance(19.0)
    assert state.overdue() == []
    clocks.advance(2.0)
    assert sorted(state.overdue()) == [0, 1]
    # the stream wins the claim of 0: counted dropped once; the pending frame (21 s old) is stale by now
    step = state.declare_lost(0)
    assert step.dropped == [(0, "lost"), (2, "stale")] and not step.dispatch
    # the worker had claimed 1: its answer is on the way; only the slot is freed, nothing counted yet
    assert state.forget(1).dropped == [] and state.in_flight == {}
    assert state.stats["dropped"] == 2
    state.answered(1, "result")  # the answer arrives: counted once, as processed
    assert state.declare_lost(1).dropped == []  # no longer in flight: never counted twice
    assert state.stats == {"sent": 3, "processed": 1, "dropped": 2, "rejected": 0}
    assert state.take_counter_delta() == {"received": 3, "dropped": 2, "rejected": 0}


def test_frames_in_flight_when_the_broker_went_away_are_overdue_soon_after_a_failed_dispatch(clocks):
    """A broker outage loses the queued frames: they are declared overdue OUTAGE_GRACE_S after the first failed
    dispatch instead of 20 s after they were sent, so the stream's slots come back with the broker."""
    state = make(clocks, max_in_flight=3, expires_s=10.0, lost_grace_s=10.0)
    offer(state, clocks, 0)
    offer(state, clocks, 1)  # both queued, then the broker dies with them
    clocks.advance(1.0)
    offer(state, clocks, 2)
    state.dispatch_failed(2)  # queue_unavailable: the outage is noticed
    clocks.advance(2.0)
    assert state.overdue() == []  # a worker holding one may still answer
    clocks.advance(1.5)
    assert sorted(state.overdue()) == [0, 1]
    offer(state, clocks, 3)  # sent after the outage: only the normal deadline applies
    clocks.advance(5.0)
    assert 3 not in state.overdue()


def test_failed_dispatch_and_close_count_their_frames_as_dropped_once(clocks):
    state = make(clocks, max_in_flight=1)
    offer(state, clocks, 0)
    offer(state, clocks, 1)  # pending
    assert state.dispatch_failed(0).dropped == [(0, "queue_unavailable")]
    assert state.dispatch_failed(0).dropped == []  # idempotent
    state.close()  # the pending frame will never be sent
    assert state.stats["dropped"] == 2 and state.pending is None
    assert state.take_counter_delta() == {"received": 2, "dropped": 2, "rejected": 0}


def test_a_frame_the_system_cannot_admit_waits_in_the_pending_slot_and_the_latest_wins(clocks):
    state = make(clocks, max_in_flight=2)
    first = offer(state, clocks, 0).dispatch[0]
    step = state.admission_refused(first)
    assert not step.dropped and state.pending.sequence == 0 and not state.in_flight
    second = offer(state, clocks, 1)  # latest frame wins the pending slot; a free slot dispatches it at once
    assert second.dropped == [(0, "replaced")] and [f.sequence for f in second.dispatch] == [1]
    refused_late = state.admission_refused(second.dispatch[0])
    assert state.pending.sequence == 1 and not refused_late.dropped
    retried = state.retry_pending()
    assert [f.sequence for f in retried.dispatch] == [1] and state.pending is None and 1 in state.in_flight
    clocks.advance(11.0)  # past expires_s: a frame refused for that long is stale, not sent
    state.admission_refused(retried.dispatch[0])
    assert state.retry_pending().dropped == [(1, "stale")]
    stats = state.stats
    assert stats["sent"] == 2 and stats["dropped"] == 2


def test_a_stop_drops_the_waiting_frame_and_leaves_frames_in_flight_to_their_answers(clocks):
    state = make(clocks, max_in_flight=1)
    offer(state, clocks, 0)  # in flight
    offer(state, clocks, 1)  # waits for a slot
    step = state.stop()
    assert step.dropped == [(1, "stopped")] and step.dispatch == [] and state.pending is None
    assert list(state.in_flight) == [0]  # still waiting for its answer
    assert state.stop().dropped == []  # nothing left to drop
    after = state.answered(0, "result")
    assert after is not None and after.dispatch == []  # nothing pending: the freed slot takes nothing
    assert [f.sequence for f in offer(state, clocks, 2).dispatch] == [2]  # a later frame is taken as usual
    assert state.stats["dropped"] == 1 and accounted(state) == 3
    assert state.take_counter_delta() == {"received": 3, "dropped": 1, "rejected": 0}


def test_a_frame_unanswered_for_a_while_is_due_for_a_lookup_once_per_lookup_delay(clocks):
    """An unanswered frame is looked up in the database RESULT_LOOKUP_S after dispatch and again every
    RESULT_LOOKUP_S, long before its ~20 s deadline; an answered one never."""
    delay = streaming.RESULT_LOOKUP_S
    state = make(clocks, max_in_flight=3, expires_s=10.0, lost_grace_s=10.0)
    offer(state, clocks, 0)
    clocks.advance(1.0)
    offer(state, clocks, 1)
    offer(state, clocks, 2)
    state.answered(2, "result")
    clocks.advance(delay - 1.0 - 0.01)
    assert state.due_for_lookup() == []
    clocks.advance(0.02)
    assert state.due_for_lookup() == [0]  # 1 is a second younger
    assert state.due_for_lookup() == []  # just looked up
    clocks.advance(1.0)
    assert state.due_for_lookup() == [1]
    clocks.advance(delay - 1.0)
    assert state.due_for_lookup() == [0]
    state.answered(1, "result")
    clocks.advance(delay)
    assert state.due_for_lookup() == [0]
    assert state.overdue() == []  # still well before the deadline


def test_a_second_answer_for_the_same_frame_is_a_duplicate_that_counts_and_frees_nothing(clocks):
    """A result sent from the database and the frame's late event (either order) count once; the duplicate returns
    None so the consumer sends nothing. A lost frame's stray answer is a duplicate too."""
    state = make(clocks, max_in_flight=1)
    offer(state, clocks, 0)
    offer(state, clocks, 1)  # waits for the slot
    first = state.answered(0, "result")
    assert [f.sequence for f in first.dispatch] == [1]
    assert state.answered(0, "result") is None
    assert state.answered(0, "error") is None
    assert state.in_flight.keys() == {1}  # 1 keeps its slot
    clocks.advance(25.0)
    assert state.overdue() == [1]
    state.declare_lost(1)
    assert state.answered(1, "result") is None
    assert state.stats == {"sent": 2, "processed": 1, "dropped": 1, "rejected": 0}


def test_the_stream_remembers_a_bounded_number_of_answers(clocks):
    state = make(clocks, max_in_flight=1, fps=1000.0)
    for seq in range(streaming.ANSWERED_MEMORY + 50):
        offer(state, clocks, seq)
        assert state.answered(seq, "result") is not None
        clocks.advance(0.01)
    assert len(state._answered) == streaming.ANSWERED_MEMORY
    assert state.answered(streaming.ANSWERED_MEMORY + 49, "result") is None  # recent: still recognised
