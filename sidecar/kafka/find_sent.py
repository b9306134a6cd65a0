"""Finds, in Kafka, events a previous run of the forwarder sent: read once, at its start.

A kill -9 leaves rows in the log that Kafka acknowledged but the log had not retired yet.
Sent again, each would be a second copy in Kafka. So before its first send the forwarder asks
for the ids of the rows it is about to send, and this reads every partition of their topics
from the first record stamped at or after `since_ms`, up to the end each partition had when the
read began, collecting the records whose event id and publish time headers are wanted.

Only a find changes anything: a record this misses (the time was up, the broker refused the
read, the record's timestamp is older than the row, as after a wall clock stepped back) is
sent again, a duplicate at worst. No offsets are committed and no group is joined: partitions
are assigned by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition

from sidecar.kafka.ports import FoundAt, SentBefore, SentEvent
from sidecar.model import EVENT_ID_HEADER, PUBLISH_TIME_HEADER
from sidecar.observability.kafka_logs import KafkaClientLog

log = structlog.get_logger(__name__)

CLIENT_ID = "ferry-resend-check"
BATCH = 1000
POLL_S = 0.1


class KafkaSentFinder:
    """The `SentFinder` port over a confluent-kafka consumer made for each call."""

    def __init__(
        self,
        bootstrap: str,
        extra: Mapping[str, str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": CLIENT_ID,
            **extra,
            # Assigned by hand and never committed; librdkafka wants a group id all the same.
            "group.id": CLIENT_ID,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
        }
        self._clock = clock

    def find(
        self, wanted: dict[str, SentBefore], timeout_s: float
    ) -> dict[str, dict[SentEvent, FoundAt]]:
        deadline = self._clock() + timeout_s
        logs = KafkaClientLog("resend-check", self._config)
        consumer = Consumer({**self._config, "logger": logs.logger, "error_cb": logs.on_error})
        try:
            ends = self._assign(consumer, wanted, deadline)
            return self._read(consumer, wanted, ends, deadline)
        finally:
            consumer.close()

    def _left(self, deadline: float) -> float:
        return max(0.001, deadline - self._clock())

    def _assign(
        self, consumer: Any, wanted: dict[str, SentBefore], deadline: float
    ) -> dict[tuple[str, int], int]:
        """Assign each partition from its first record stamped at or after the topic's
        `since_ms`; return where each one's reading ends (its end offset, exclusive)."""
        starts: list[TopicPartition] = []
        for topic, before in wanted.items():
            meta = consumer.list_topics(topic, timeout=self._left(deadline)).topics.get(topic)
            if meta is None or meta.error is not None:
                continue  # no such topic: nothing of it was ever delivered
            starts += [TopicPartition(topic, p, before.since_ms) for p in sorted(meta.partitions)]
        if not starts:
            return {}
        ends: dict[tuple[str, int], int] = {}
        assign: list[TopicPartition] = []
        for tp in consumer.offsets_for_times(starts, timeout=self._left(deadline)):
            if tp.error is not None:
                # Not authorised to read it, no leader, ...: its records are sent again.
                log.warning(
                    "resend_check_partition_failed",
                    topic=tp.topic,
                    partition=tp.partition,
                    error=str(tp.error),
                )
                continue
            if tp.offset < 0:
                continue  # no record stamped that late: none of the wanted is there
            _, end = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=self._left(deadline)
            )
            if end > tp.offset:
                ends[(tp.topic, tp.partition)] = end
                assign.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        if assign:
            consumer.assign(assign)
        return ends

    def _read(
        self,
        consumer: Any,
        wanted: dict[str, SentBefore],
        ends: dict[tuple[str, int], int],
        deadline: float,
    ) -> dict[str, dict[SentEvent, FoundAt]]:
        found: dict[str, dict[SentEvent, FoundAt]] = {topic: {} for topic in wanted}
        while ends and self._clock() < deadline:
            batch = consumer.consume(BATCH, timeout=min(POLL_S, self._left(deadline)))
            if not batch:
                # Nothing came: a partition may end in records no consumer is given (the
                # markers of transactions), so ask where each one's reading stands.
                for tp in consumer.position([TopicPartition(t, p) for t, p in ends]):
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        del ends[(tp.topic, tp.partition)]
            for msg in batch:
                if msg.error() is not None:
                    continue  # a partition's fetch error: its records stay unfound
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                event = _sent_event(msg.headers())
                if event is not None and event in wanted[topic].events:
                    found[topic][event] = (partition, offset)
                if offset + 1 >= ends.get((topic, partition), 0):
                    ends.pop((topic, partition), None)
        return found


def _sent_event(headers: list[tuple[str, bytes | None]] | None) -> SentEvent | None:
    """The record's (event id, publish time) headers, if it has both."""
    event_id = publish_time = None
    for key, value in headers or ():
        if value is None:
            continue
        if key == EVENT_ID_HEADER:
            event_id = value.decode("utf-8", "replace")
        elif key == PUBLISH_TIME_HEADER:
            publish_time = value.decode("ascii", "replace")
    if event_id is None or publish_time is None:
        return None
    return event_id, publish_time
