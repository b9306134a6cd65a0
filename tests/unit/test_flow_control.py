"""When a subscription pauses and resumes its partitions."""

from __future__ import annotations

from sidecar.subscribe.flow_control import MIN_HELD, FlowControl, Limits, Move

LIMITS = Limits(max_held_records=20_000, max_held_bytes=1_000_000)


def test_pauses_at_eight_times_the_outstanding_window_and_resumes_at_a_quarter() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(7_999, 0, outstanding=1_000) is None
    assert flow.decide(8_000, 0, outstanding=1_000) is Move.PAUSE
    assert flow.paused
    assert flow.decide(8_000, 0, outstanding=1_000) is None  # paused once, not again
    assert flow.decide(2_001, 0, outstanding=1_000) is None
    assert flow.decide(2_000, 0, outstanding=1_000) is Move.RESUME
    assert not flow.paused
    assert flow.decide(2_000, 0, outstanding=1_000) is None


def test_a_small_window_still_holds_the_minimum_and_a_large_one_the_cap() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(MIN_HELD - 1, 0, outstanding=1) is None
    assert flow.decide(MIN_HELD, 0, outstanding=1) is Move.PAUSE
    flow = FlowControl(LIMITS)
    assert flow.decide(19_999, 0, outstanding=10_000) is None
    assert flow.decide(20_000, 0, outstanding=10_000) is Move.PAUSE


def test_bytes_pause_on_their_own_and_both_bounds_must_clear_to_resume() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(10, 1_000_000, outstanding=1_000) is Move.PAUSE
    assert flow.decide(10, 250_001, outstanding=1_000) is None  # bytes still above a quarter
    assert flow.decide(10, 250_000, outstanding=1_000) is Move.RESUME
    flow = FlowControl(LIMITS)
    assert flow.decide(8_000, 0, outstanding=1_000) is Move.PAUSE
    assert flow.decide(2_000, 300_000, outstanding=1_000) is None  # records low, bytes not


def test_no_streams_means_the_minimum() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(MIN_HELD, 0, outstanding=0) is Move.PAUSE
