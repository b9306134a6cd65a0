"""Settlement backlog: whole settlements per commit within a budget, merged watermarks."""

from __future__ import annotations

from sidecar.model import Parked, PendingEvent, Settlement
from sidecar.wal.backlog import RetireBacklog, RetireRequest


def settlement(marks: dict[str, int], *client_ids: int, parked: int = 0) -> RetireRequest:
    ids = [(f"e{s}", 0, s) for s in client_ids]
    refused = [
        Parked(PendingEvent(s, f"p{s}", "t", None, b"x", (), 0), "too large") for s in range(parked)
    ]
    return RetireRequest(Settlement(marks, ids, refused))


def test_whole_settlements_are_taken_within_the_budget_in_order() -> None:
    backlog = RetireBacklog()
    big = settlement({"a": 7}, *range(1, 8))  # costs 8 rows: a watermark and 7 client ids
    small = settlement({"a": 9, "b": 2}, 8)  # costs 3
    backlog.add(big)
    backlog.add(small)
    assert backlog.rows == 11
    first = backlog.take(3)
    # The oldest settlement goes whole even past the budget: it cannot be split.
    assert first.requests == [big]
    assert first.settled_to == {"a": 7}
    assert [i for i, _, _ in first.delivered_ids] == [f"e{s}" for s in range(1, 8)]
    assert backlog.committed(first) == [big]
    assert backlog.rows == 3
    second = backlog.take(5)
    assert second.settled_to == {"a": 9, "b": 2}
    assert backlog.committed(second) == [small]
    assert not backlog
    assert backlog.rows == 0


def test_watermarks_of_several_settlements_merge_to_the_highest() -> None:
    backlog = RetireBacklog()
    backlog.add(settlement({"a": 5}))
    backlog.add(settlement({"a": 3, "b": 1}))  # a lower mark never moves a watermark back
    backlog.add(settlement({"a": 9}, parked=2))
    taken = backlog.take(100)
    assert taken.settled_to == {"a": 9, "b": 1}
    assert len(taken.parked) == 2
    assert len(taken.requests) == 3


def test_the_budget_stops_before_a_settlement_that_does_not_fit() -> None:
    backlog = RetireBacklog()
    first, second = settlement({"a": 1}, 1), settlement({"a": 2}, 2, 3)
    backlog.add(first)
    backlog.add(second)
    assert backlog.take(3).requests == [first]
    assert backlog.take(5).requests == [first, second]


def test_an_uncommitted_take_is_taken_again() -> None:
    backlog = RetireBacklog()
    backlog.add(settlement({"a": 3}, 1, 2, 3))
    taken = backlog.take(2)
    again = backlog.take(2)  # the first commit failed and nothing was recorded
    assert taken == again


def test_dropping_gives_up_on_the_taken_requests_only() -> None:
    backlog = RetireBacklog()
    first, second = settlement({"a": 2}, 1, 2), settlement({"a": 3}, 3)
    backlog.add(first)
    backlog.add(second)
    assert backlog.drop(backlog.take(1)) == [first]
    assert backlog.rows == 2
    assert backlog.take(10).requests == [second]


def test_an_empty_settlement_finishes_with_the_next_commit() -> None:
    backlog = RetireBacklog()
    empty = RetireRequest(Settlement({}, [], []))
    backlog.add(empty)
    taken = backlog.take(10)
    assert not taken.empty
    assert backlog.committed(taken) == [empty]
