"""PartitionAckTracker: the commit position never passes an unacked record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.subscribe.ackcodec import decode, encode
from sidecar.subscribe.acktracker import PartitionAckTracker


def test_nothing_to_commit_without_start_or_records() -> None:
    tracker = PartitionAckTracker(start_offset=None)
    assert tracker.committable() is None
    assert tracker.sparse_acks() == frozenset()
    assert tracker.outstanding() == 0


def test_resumed_partition_commits_its_start_until_records_arrive() -> None:
    assert PartitionAckTracker(start_offset=42).committable() == 42


def test_first_record_without_start_is_held_until_acked() -> None:
    tracker = PartitionAckTracker(start_offset=None)
    assert tracker.track(7)
    assert tracker.committable() == 7
    assert tracker.ack(7)
    assert tracker.committable() == 8


def test_commit_stops_at_the_first_unacked_offset() -> None:
    tracker = PartitionAckTracker(start_offset=0)
    for offset in range(5):
        tracker.track(offset)
    tracker.ack(0)
    tracker.ack(2)
    tracker.ack(3)
    assert tracker.committable() == 1
    assert tracker.sparse_acks() == {2, 3}
    assert tracker.outstanding() == 2
    tracker.ack(1)
    assert tracker.committable() == 4
    assert tracker.sparse_acks() == frozenset()


def test_gaps_in_offsets_are_crossed_once_everything_is_acked() -> None:
    tracker = PartitionAckTracker(start_offset=3)
    for offset in (3, 7, 9):
        tracker.track(offset)
    tracker.ack(9)
    tracker.ack(7)
    assert tracker.committable() == 3
    tracker.ack(3)
    assert tracker.committable() == 10


def test_offsets_must_be_tracked_in_increasing_order() -> None:
    tracker = PartitionAckTracker(start_offset=0)
    tracker.track(5)
    with pytest.raises(ValueError, match="tracked after"):
        tracker.track(5)
    with pytest.raises(ValueError, match="tracked after"):
        tracker.track(4)


def test_offset_below_start_is_rejected() -> None:
    with pytest.raises(ValueError, match="below start"):
        PartitionAckTracker(start_offset=10).track(9)


def test_double_ack_and_ack_below_commit_change_nothing() -> None:
    tracker = PartitionAckTracker(start_offset=0)
    tracker.track(0)
    tracker.track(1)
    tracker.track(2)
    assert tracker.ack(2)
    assert not tracker.ack(2)
    assert tracker.ack(0)
    assert not tracker.ack(0)
    assert tracker.committable() == 1
    assert tracker.outstanding() == 1


def test_ack_of_an_untracked_offset_is_a_bug() -> None:
    tracker = PartitionAckTracker(start_offset=0)
    tracker.track(0)
    tracker.track(5)
    with pytest.raises(ValueError, match="never tracked"):
        tracker.ack(3)
    with pytest.raises(ValueError, match="never tracked"):
        tracker.ack(6)


def test_acked_prefix_is_forgotten() -> None:
    tracker = PartitionAckTracker(start_offset=0)
    for offset in range(10_000):
        tracker.track(offset)
        tracker.ack(offset)
    tracker.track(10_000)
    tracker.track(10_001)
    tracker.ack(10_001)
    # Memory must follow the unacked window, not the partition's history.
    assert list(tracker._window) == [10_000, 10_001]
    assert tracker._acked == {10_001}


def test_restored_acks_are_skipped_and_count_as_acked() -> None:
    tracker = PartitionAckTracker(start_offset=10, already_acked={11, 13})
    assert tracker.should_skip(11)
    assert tracker.should_skip(13)
    assert not tracker.should_skip(10)
    assert not tracker.should_skip(12)
    assert tracker.committable() == 10
    assert tracker.sparse_acks() == {11, 13}

    assert tracker.track(10)
    assert not tracker.track(11)
    assert tracker.track(12)
    assert tracker.outstanding() == 2
    tracker.ack(10)
    assert tracker.committable() == 12
    tracker.ack(12)
    # 13 is acked but not fetched yet: only the metadata keeps it.
    assert tracker.committable() == 13
    assert tracker.sparse_acks() == {13}
    assert not tracker.track(13)
    assert tracker.committable() == 14
    assert tracker.sparse_acks() == frozenset()


def test_restored_ack_at_the_start_offset_is_kept_until_fetched() -> None:
    tracker = PartitionAckTracker(start_offset=10, already_acked={10})
    assert tracker.committable() == 10
    assert tracker.sparse_acks() == {10}
    assert not tracker.track(10)
    assert tracker.committable() == 11


def test_restored_acks_that_left_the_log_are_dropped() -> None:
    tracker = PartitionAckTracker(start_offset=10, already_acked={11, 12})
    tracker.track(10)
    tracker.track(13)  # 11 and 12 were compacted away after the restart
    assert not tracker.should_skip(11)
    assert tracker.sparse_acks() == frozenset()
    assert tracker.committable() == 10


def test_restored_acks_need_a_start_at_or_below_them() -> None:
    with pytest.raises(ValueError, match="without a start"):
        PartitionAckTracker(start_offset=None, already_acked={3})
    with pytest.raises(ValueError, match="below start"):
        PartitionAckTracker(start_offset=5, already_acked={4, 6})


@st.composite
def fetched_and_acked(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    start = draw(st.integers(0, 1_000))
    gaps = draw(st.lists(st.integers(0, 3), max_size=40))
    offsets: list[int] = []
    position = start
    for gap in gaps:
        position += gap
        offsets.append(position)
        position += 1
    acks = draw(st.permutations(offsets))
    acked_count = draw(st.integers(0, len(acks)))
    return start, offsets, list(acks[:acked_count])


@settings(max_examples=200)
@given(fetched_and_acked())
def test_commit_position_matches_a_naive_model(case: tuple[int, list[int], list[int]]) -> None:
    start, offsets, acks = case
    tracker = PartitionAckTracker(start_offset=start)
    for offset in offsets:
        tracker.track(offset)
    acked: set[int] = set()
    for offset in acks:
        tracker.ack(offset)
        acked.add(offset)
        unacked = [o for o in offsets if o not in acked]
        expected = min(unacked) if unacked else offsets[-1] + 1
        assert tracker.committable() == expected
        assert tracker.sparse_acks() == {o for o in acked if o > expected}
        assert tracker.outstanding() == len(unacked)


@settings(max_examples=200)
@given(fetched_and_acked(), st.integers(10, 200))
def test_restart_redelivers_every_unacked_record(
    case: tuple[int, list[int], list[int]], max_length: int
) -> None:
    start, offsets, acks = case
    before = PartitionAckTracker(start_offset=start)
    for offset in offsets:
        before.track(offset)
    for offset in acks:
        before.ack(offset)
    committed = before.committable()
    assert committed is not None
    metadata = encode(before.sparse_acks(), committed, max_length)

    after = PartitionAckTracker(committed, decode(metadata, committed))
    redelivered = {offset for offset in offsets if offset >= committed and after.track(offset)}
    assert set(offsets) - set(acks) <= redelivered
    if metadata == encode(before.sparse_acks(), committed):  # nothing was cut to fit
        assert redelivered == {o for o in offsets if o >= committed} - set(acks)
