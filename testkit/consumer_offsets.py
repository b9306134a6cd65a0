"""A consumer group's progress as Kafka records it: watermarks, committed offsets, and waiting
until the commits reach the end of every partition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

T = TypeVar("T")
NO_COMMIT = -1001  # librdkafka's OFFSET_INVALID: the group committed nothing there


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )


def _retrying(read: Callable[[], T], timeout: float = 20.0) -> T:
    """`read()`, a read-only probe, retried for `timeout` s on Kafka errors (e.g. a stale leader:
    NOT_LEADER_FOR_PARTITION was seen on the 1-broker test cluster); a lasting error is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) watermark offsets per partition of `topic`."""

    def read() -> dict[int, tuple[int, int]]:
        consumer = _consumer(bootstrap, f"probe-{uuid.uuid4().hex}")
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            marks = {}
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                marks[p] = (low, high)
            return marks
        finally:
            consumer.close()

    return _retrying(read)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The high watermark (the offset the next record gets) per partition of `topic`."""
    return {p: high for p, (_low, high) in watermarks(bootstrap, topic).items()}


def committed(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, str]]:
    """The group's committed (offset, metadata) per partition (`NO_COMMIT`: none)."""

    def read() -> dict[int, tuple[int, str]]:
        consumer = _consumer(bootstrap, group)
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p) for p in meta.partitions]
            return {
                tp.partition: (tp.offset, tp.metadata or "")
                for tp in consumer.committed(parts, timeout=10)
            }
        finally:
            consumer.close()

    return _retrying(read)


def uncommitted_partitions(
    marks: Mapping[int, tuple[int, int]], commits: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """Partitions whose commit has not reached their end: partition -> (committed, end).

    A group commits nothing (a negative offset, -1001) on a partition it never consumed from;
    that partition has reached its end when it holds nothing to consume (end == low watermark).
    """
    behind = {}
    for partition, (low, high) in marks.items():
        offset = commits.get(partition, NO_COMMIT)
        if offset == high or (offset < 0 and high == low):
            continue
        behind[partition] = (offset, high)
    return behind


def wait_committed_to_end(
    bootstrap: str, group: str, topic: str, timeout: float = 15.0
) -> dict[int, int]:
    """Wait until the group's commits reach every partition's end; returns the ends."""
    marks = watermarks(bootstrap, topic)
    ends = {p: high for p, (_low, high) in marks.items()}
    deadline = time.monotonic() + timeout
    while True:
        got = {p: o for p, (o, _) in committed(bootstrap, group, topic).items()}
        behind = uncommitted_partitions(marks, got)
        if not behind or time.monotonic() > deadline:
            assert not behind, (
                f"committed {got} != end offsets {ends}: behind (committed, end) {behind}"
            )
            return ends
        time.sleep(0.2)
