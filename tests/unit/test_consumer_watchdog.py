"""ConsumerWatchdog: replace a consumer stuck outside its group, and nothing else (manual clock)."""

from __future__ import annotations

import pytest

from sidecar.clock import ManualClock
from sidecar.kafka.watchdog import OFFSETS_UNFETCHED, ConsumerWatchdog, Stall

STALL = 30.0
CAP = 240.0


def make(start: float = 100.0) -> tuple[ConsumerWatchdog, ManualClock]:
    clock = ManualClock(start)
    return ConsumerWatchdog(clock, STALL, CAP), clock


def test_a_consumer_that_lost_its_partitions_and_never_rejoins_is_replaced() -> None:
    dog, clock = make()
    dog.rebalanced(3)
    dog.fetched()
    clock.advance(600)  # owning partitions: never replaced, however quiet the topic
    assert dog.check(wanted=True) is None
    dog.rebalanced(0)  # the session timed out: partitions lost
    dog.group_reported("query-coord", "init")
    clock.advance(STALL - 0.1)
    dog.group_reported("query-coord", "init")
    assert dog.check(wanted=True) is None
    clock.advance(0.1)
    assert dog.check(wanted=True) == Stall(STALL, "query-coord/init", 0)


def test_a_new_consumer_that_never_joins_is_never_replaced_before_the_limit() -> None:
    dog, clock = make()
    clock.advance(STALL - 1)
    assert dog.check(wanted=True) is None
    clock.advance(1)
    stall = dog.check(wanted=True)
    assert stall is not None
    assert stall.group_state == "unknown"


def test_nothing_is_replaced_while_no_subscriber_waits() -> None:
    dog, clock = make()
    dog.rebalanced(0)
    clock.advance(10 * STALL)
    assert dog.check(wanted=False) is None
    assert dog.check(wanted=True) is not None


def test_a_member_in_the_group_that_owns_nothing_is_left_alone() -> None:
    """More members than partitions: replacing the idle one would rebalance the whole group."""
    dog, clock = make()
    dog.rebalanced(0)
    for _ in range(100):
        clock.advance(STALL / 3)
        dog.group_reported("up", "steady")
        assert dog.check(wanted=True) is None


@pytest.mark.parametrize(
    "sign_of_life",
    [
        lambda dog: dog.rebalanced(0),
        lambda dog: dog.fetched(),
        lambda dog: dog.group_reported("up", "steady"),
    ],
)
def test_any_sign_of_life_restarts_the_count(sign_of_life) -> None:  # type: ignore[no-untyped-def]
    dog, clock = make()
    dog.rebalanced(0)
    clock.advance(STALL - 1)
    sign_of_life(dog)
    clock.advance(STALL - 1)
    assert dog.check(wanted=True) is None
    clock.advance(1)
    assert dog.check(wanted=True) is not None


def test_group_states_short_of_a_settled_member_are_no_sign_of_life() -> None:
    """Stuck consumers were seen in query-coord and in up/wait-join (JoinGroup never sent)."""
    dog, clock = make()
    dog.rebalanced(0)
    for state, join_state in [("up", "wait-join"), ("wait-coord", "init"), ("query-coord", "init")]:
        clock.advance(STALL / 3)
        dog.group_reported(state, join_state)
    assert dog.check(wanted=True) == Stall(STALL, "query-coord/init", 0)


def test_replacements_back_off_until_a_consumer_shows_life() -> None:
    dog, clock = make()
    dog.rebalanced(0)
    waited = []
    for _ in range(6):
        start = clock.monotonic()
        while dog.check(wanted=True) is None:
            clock.advance(1)
        waited.append(clock.monotonic() - start)
        dog.replaced()
    assert waited == [30, 60, 120, 240, 240, 240]
    clock.advance(5)
    dog.group_reported("up", "steady")  # the sixth new consumer joined
    assert dog.limit_s == STALL
    dog.rebalanced(0)
    clock.advance(STALL)
    assert dog.check(wanted=True) == Stall(STALL, "up/steady", 0)


def test_a_replacement_starts_the_count_afresh() -> None:
    dog, clock = make()
    dog.rebalanced(2)
    dog.rebalanced(0)
    clock.advance(STALL)
    stall = dog.check(wanted=True)
    assert stall is not None
    assert stall.replacements_in_a_row == 0
    dog.replaced()
    assert dog.check(wanted=True) is None
    clock.advance(2 * STALL)
    stall = dog.check(wanted=True)
    assert stall is not None
    assert (stall.replacements_in_a_row, stall.group_state) == (1, "unknown")


def test_limits_are_checked() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="stall_after_s"):
        ConsumerWatchdog(clock, 0, 10)
    with pytest.raises(ValueError, match="stall_after_s"):
        ConsumerWatchdog(clock, 10, 5)


def test_an_assignment_whose_committed_offsets_were_not_fetched_is_replaced() -> None:
    dog, clock = make()
    dog.rebalanced(3)
    dog.offsets_unfetched()  # librdkafka never retries: the partitions never fetch
    clock.advance(STALL - 0.1)
    dog.group_reported("up", "steady")  # a settled member all along
    assert dog.check(wanted=True) is None
    clock.advance(0.1)
    stall = dog.check(wanted=True)
    assert stall is not None
    assert (stall.stalled_s, stall.group_state, stall.reason) == (
        STALL,
        "up/steady",
        OFFSETS_UNFETCHED,
    )
    assert dog.check(wanted=False) is None
    dog.replaced()
    clock.advance(10 * STALL)
    dog.rebalanced(3)  # the new consumer queried the offsets afresh
    clock.advance(10 * STALL)
    assert dog.check(wanted=True) is None


def test_a_new_assignment_clears_an_offset_fetch_failure() -> None:
    dog, clock = make()
    dog.rebalanced(3)
    dog.offsets_unfetched()
    dog.rebalanced(3)
    clock.advance(10 * STALL)
    assert dog.check(wanted=True) is None
