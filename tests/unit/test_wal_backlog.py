"""Retirement backlog: bounded slices per commit, futures resolved only when fully retired."""

from __future__ import annotations

from sidecar.model import Delivered, KafkaPosition
from sidecar.wal.backlog import RetireBacklog, RetireRequest


def delivered(*seqs: int) -> list[Delivered]:
    return [Delivered(s, f"e{s}", KafkaPosition(0, s)) for s in seqs]


def test_slices_never_exceed_the_budget_and_keep_order() -> None:
    backlog = RetireBacklog()
    big, small = RetireRequest(delivered(*range(1, 8))), RetireRequest(delivered(8, 9))
    backlog.add(big)
    backlog.add(small)
    assert backlog.rows == 9
    first = backlog.take(3)
    assert [d.sequence for d in first.rows] == [1, 2, 3]
    assert backlog.committed(first) == []
    assert not big.future.done()
    assert backlog.rows == 6
    second = backlog.take(5)
    assert [d.sequence for d in second.rows] == [4, 5, 6, 7, 8]
    assert backlog.committed(second) == [big]
    third = backlog.take(5)
    assert [d.sequence for d in third.rows] == [9]
    assert backlog.committed(third) == [small]
    assert not backlog
    assert backlog.rows == 0


def test_an_uncommitted_slice_is_taken_again() -> None:
    backlog = RetireBacklog()
    backlog.add(RetireRequest(delivered(1, 2, 3)))
    taken = backlog.take(2)
    again = backlog.take(2)  # the first commit failed and nothing was recorded
    assert taken.rows == again.rows


def test_dropping_a_slice_gives_up_on_its_requests_only() -> None:
    backlog = RetireBacklog()
    first, second = RetireRequest(delivered(1, 2)), RetireRequest(delivered(3))
    backlog.add(first)
    backlog.add(second)
    assert backlog.drop(backlog.take(1)) == [first]
    assert backlog.rows == 1
    assert [d.sequence for d in backlog.take(10).rows] == [3]


def test_an_empty_request_finishes_with_the_next_commit() -> None:
    backlog = RetireBacklog()
    empty = RetireRequest([])
    backlog.add(empty)
    assert backlog.committed(backlog.take(10)) == [empty]
