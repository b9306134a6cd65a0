"""When a consumer group's commits count as having reached the end of every partition."""

from __future__ import annotations

from testkit.consumer_offsets import NO_COMMIT, uncommitted_partitions


def test_a_commit_at_the_high_watermark_has_reached_the_end() -> None:
    assert uncommitted_partitions({0: (0, 3000), 1: (0, 12)}, {0: 3000, 1: 12}) == {}


def test_no_commit_on_an_empty_partition_has_reached_the_end() -> None:
    marks = {0: (0, 3000), 1: (0, 0), 2: (40, 40)}
    assert uncommitted_partitions(marks, {0: 3000, 1: NO_COMMIT, 2: NO_COMMIT}) == {}


def test_no_commit_on_a_partition_with_records_is_behind() -> None:
    assert uncommitted_partitions({0: (0, 5), 1: (7, 9)}, {0: 5, 1: NO_COMMIT}) == {
        1: (NO_COMMIT, 9)
    }


def test_a_commit_short_of_the_end_is_behind_even_on_a_partition_emptied_by_retention() -> None:
    assert uncommitted_partitions({0: (10, 10)}, {0: 4}) == {0: (4, 10)}


def test_a_partition_missing_from_the_commits_counts_as_not_committed() -> None:
    assert uncommitted_partitions({0: (0, 0), 1: (0, 1)}, {}) == {1: (NO_COMMIT, 1)}
