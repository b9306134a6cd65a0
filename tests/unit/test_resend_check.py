"""What the resend check looks for, and how a lane takes what it found (pure logic)."""

from __future__ import annotations

from sidecar.forward.lanes import Lane
from sidecar.forward.resend_check import CLOCK_SLACK_MS, _found, _wanted
from sidecar.model import PendingEvent


def row(sequence: int, event_id: str, publish_ms: int, *, assigned: bool = True) -> PendingEvent:
    return PendingEvent(sequence, event_id, "t", None, None, (), publish_ms, assigned)


def test_each_row_is_named_by_its_id_and_publish_time() -> None:
    wanted = _wanted([row(1, "a", 5_000), row(2, "b", 4_000)])
    assert wanted.events == {("a", "5000"), ("b", "4000")}
    assert wanted.since_ms == 4_000 - CLOCK_SLACK_MS


def test_rows_a_record_could_not_tell_apart_are_not_looked_for() -> None:
    # The same client id published twice in one commit (dedupe off), and a row of an older
    # release without a publish time: all three are sent again, whatever Kafka holds.
    wanted = _wanted([row(1, "a", 5_000), row(2, "a", 5_000), row(3, "c", 0), row(4, "d", 6_000)])
    assert wanted.events == {("d", "6000")}
    assert wanted.since_ms == 6_000 - CLOCK_SLACK_MS


def test_found_rows_settle_as_an_unbroken_run_then_wait_behind_a_missing_one() -> None:
    rows = [row(3, "a", 1), row(7, "b", 1), row(8, "c", 1, assigned=False), row(9, "d", 1)]
    found = _found(rows, {("a", "1"): (0, 10), ("b", "1"): (1, 11), ("d", "1"): (0, 12)})
    assert found.through == 7
    assert found.later == {9}
    assert found.delivered == [("a", 0, 10), ("b", 1, 11), ("d", 0, 12)]
    assert found.client_ids == []
    found = _found(rows, {("c", "1"): (2, 13)})
    assert (found.through, found.later, found.client_ids) == (0, {8}, [("c", 2, 13)])


def test_a_lane_skips_what_was_found_and_retires_it_in_order() -> None:
    lane = Lane("t", cursor=2, settled_to=2, reported_to=2)
    lane.skip_found(7, {9})
    assert (lane.cursor, lane.settled_to) == (7, 7)
    # Row 8 goes out; row 9 is skipped (the forwarder appends it to `sent` unsent).
    lane.sent.extend([8, 9])
    lane.settle(8)
    assert lane.settled_to == 9
    assert not lane.sent
    assert not lane.settled


def test_nothing_found_changes_nothing() -> None:
    lane = Lane("t", cursor=2, settled_to=2, reported_to=2)
    lane.skip_found(0, set())
    assert (lane.cursor, lane.settled_to, lane.settled) == (2, 2, set())
