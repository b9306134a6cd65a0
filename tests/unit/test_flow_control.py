"""When a subscription holds back records and takes them again, and how fast its streams take."""

from __future__ import annotations

from sidecar.subscribe.flow_control import (
    MIN_HELD,
    RECORD_OVERHEAD_BYTES,
    DeliveryRate,
    FlowControl,
    Limits,
    Move,
)

LIMITS = Limits(max_held_records=20_000, max_held_bytes=16_000_000)


def test_holds_at_twice_the_outstanding_window_and_takes_again_at_half() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(7_999, 0, outstanding=4_000) is None
    assert flow.decide(8_000, 0, outstanding=4_000) is Move.HOLD
    assert flow.holding
    assert flow.decide(8_000, 0, outstanding=4_000) is None  # held once, not again
    assert flow.decide(4_001, 0, outstanding=4_000) is None
    assert flow.decide(4_000, 0, outstanding=4_000) is Move.TAKE
    assert not flow.holding
    assert flow.decide(4_000, 0, outstanding=4_000) is None


def test_the_bound_grows_with_the_delivery_rate_up_to_the_cap() -> None:
    flow = FlowControl(LIMITS)
    assert flow.max_held(outstanding=1_000, rate=0.0) == 2_000
    # The window plus a quarter second's worth.
    assert flow.max_held(outstanding=1_000, rate=40_000.0) == 11_000
    assert flow.max_held(outstanding=1_000, rate=1_000_000.0) == 20_000
    assert flow.decide(10_999, 0, outstanding=1_000, rate=40_000.0) is None
    assert flow.decide(11_000, 0, outstanding=1_000, rate=40_000.0) is Move.HOLD
    # The pace fell: the bound shrinks with it, so taking waits for half of the smaller bound.
    assert flow.decide(1_001, 0, outstanding=1_000, rate=0.0) is None
    assert flow.decide(1_000, 0, outstanding=1_000, rate=0.0) is Move.TAKE


def test_a_small_window_still_holds_the_minimum_and_a_large_one_the_cap() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(MIN_HELD - 1, 0, outstanding=1) is None
    assert flow.decide(MIN_HELD, 0, outstanding=1) is Move.HOLD
    flow = FlowControl(LIMITS)
    assert flow.decide(19_999, 0, outstanding=10_000) is None
    assert flow.decide(20_000, 0, outstanding=10_000) is Move.HOLD


def test_bytes_hold_on_their_own_counting_each_records_overhead() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(10, 16_000_000 - 10 * RECORD_OVERHEAD_BYTES - 1, 1_000) is None
    assert flow.decide(10, 16_000_000 - 10 * RECORD_OVERHEAD_BYTES, 1_000) is Move.HOLD
    assert flow.decide(10, 8_000_001 - 10 * RECORD_OVERHEAD_BYTES, 1_000) is None
    assert flow.decide(10, 8_000_000 - 10 * RECORD_OVERHEAD_BYTES, 1_000) is Move.TAKE
    # Small records: the overhead alone reaches the byte bound below the record cap.
    flow = FlowControl(Limits(max_held_records=100_000, max_held_bytes=RECORD_OVERHEAD_BYTES * 50))
    assert flow.decide(49, 0, outstanding=100_000) is None
    assert flow.decide(50, 0, outstanding=100_000) is Move.HOLD


def test_both_bounds_must_clear_to_take_again() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(2_000, 0, outstanding=1_000) is Move.HOLD
    assert flow.decide(500, 9_000_000, outstanding=1_000) is None  # records low, bytes not


def test_no_streams_means_the_minimum() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(MIN_HELD, 0, outstanding=0) is Move.HOLD


def test_the_delivery_rate_follows_a_fall_at_once_and_averages_a_rise() -> None:
    rate = DeliveryRate()
    assert rate.observe(10.0, 0) == 0.0
    assert rate.observe(10.2, 5_000) == 0.0  # under a window: no sample yet
    assert rate.observe(11.0, 10_000) == 5_000.0  # 10,000 in 1 s, averaged with nothing seen
    assert rate.observe(12.0, 30_000) == 12_500.0  # 20,000/s averaged in
    assert rate.observe(13.0, 31_000) == 1_000.0  # a fall shows at once
