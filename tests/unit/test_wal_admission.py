"""The log's cap and each topic's share of it (pure logic)."""

from __future__ import annotations

import pytest

from sidecar.errors import TopicShareFull, WalFull
from sidecar.model import OutgoingEvent
from sidecar.wal.admission import Admission, Usage


def ev(topic: str, size: int = 10) -> OutgoingEvent:
    return OutgoingEvent(f"{topic}-{size}", topic, None, b"x" * size, ())


def usage(**topics: tuple[int, int]) -> Usage:
    held = Usage()
    for topic, (rows, size) in topics.items():
        held.topics[topic] = [rows, size]
        held.rows += rows
        held.size += size
    return held


ADMISSION = Admission(max_rows=100, max_bytes=10_000, topic_share=0.5)


def test_events_within_cap_and_share_are_admitted() -> None:
    assert ADMISSION.refusal(usage(a=(40, 400)), [ev("a")] * 10) is None


@pytest.mark.parametrize(
    ("held", "events"),
    [
        (usage(a=(45, 450)), [ev("a")] * 6),  # rows: 51 > 50
        (usage(a=(10, 4_990)), [ev("a", 11)]),  # bytes: 5,001 > 5,000
    ],
)
def test_a_topic_over_its_share_is_refused_alone(held: Usage, events: list[OutgoingEvent]) -> None:
    refusal = ADMISSION.refusal(held, events)
    assert isinstance(refusal, TopicShareFull)
    assert "'a'" in str(refusal)
    assert refusal.retry_after > 0
    # Another topic still fits, with the full topic holding its share.
    assert ADMISSION.refusal(held, [ev("b")] * 6) is None


def test_the_whole_cap_still_binds() -> None:
    held = usage(a=(50, 100), b=(45, 100))
    assert isinstance(ADMISSION.refusal(held, [ev("c")] * 6), WalFull)
    assert ADMISSION.refusal(held, [ev("c")] * 5) is None


def test_a_share_of_one_is_the_whole_cap() -> None:
    whole = Admission(max_rows=100, max_bytes=10_000, topic_share=1.0)
    assert whole.refusal(usage(a=(99, 100)), [ev("a")]) is None
    assert isinstance(whole.refusal(usage(a=(100, 100)), [ev("a")]), WalFull)


def test_usage_adds_and_removes_per_topic() -> None:
    held = Usage()
    held.add("a", 5)
    held.add("a", 7)
    held.add("b", 1)
    copy = held.copy()
    held.remove("a", 5)
    assert (held.rows, held.size, held.topics) == (2, 8, {"a": [1, 7], "b": [1, 1]})
    held.remove("b", 1)
    assert "b" not in held.topics
    assert (copy.rows, copy.size, copy.topics["a"]) == (3, 13, [2, 12])  # copies stay apart
