"""Reading topics back with a plain consumer, the ground truth of what Kafka holds, as
`KafkaRecord`s.

`read_topic` reads one topic until an expected count arrived (or nothing new came for a
while); `read_to_end` reads topics up to the end offsets they had when it was called.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from sidecar.model import EVENT_ID_HEADER, PUBLISH_TIME_HEADER

FERRY_HEADERS = frozenset({EVENT_ID_HEADER, PUBLISH_TIME_HEADER})


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record as a plain consumer read it (header values: None read as b"")."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes]
    #: Every header in order, repeats and null values kept.
    header_list: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def user_headers(self) -> list[tuple[str, bytes | None]]:
        """The headers but the ones Ferry adds (event id, publish time)."""
        return [(k, v) for k, v in self.header_list if k not in FERRY_HEADERS]

    @property
    def event_id(self) -> str | None:
        """The event id Ferry put in the record's header; None when it has none."""
        raw = self.headers.get(EVENT_ID_HEADER)
        return raw.decode() if raw is not None else None


def _consumer(bootstrap: str, group_prefix: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{group_prefix}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "log_level": 0,
    })  # fmt: skip


def _record(msg: Any) -> KafkaRecord:
    header_list = tuple(msg.headers() or ())
    return KafkaRecord(
        msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
        {k: (v or b"") for k, v in header_list}, header_list,
    )  # fmt: skip


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 60.0,
    quiet: float = 3.0,
) -> list[KafkaRecord]:
    """Everything in `topic` from the start: until `expect` records arrived (then `quiet` s more
    to catch extra duplicates), or until nothing new arrived for `quiet` seconds. A consumer
    error other than reaching a partition's end is raised."""
    consumer = _consumer(bootstrap, "reader")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        records: list[KafkaRecord] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.2)
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(error)
                records.append(_record(msg))
            if batch:
                last_new = time.monotonic()
            enough = expect is not None and len(records) >= expect
            if (enough or expect is None) and time.monotonic() - last_new >= quiet:
                break
        return records
    finally:
        consumer.close()


def read_to_end(bootstrap: str, topics: Sequence[str], timeout: float = 120.0) -> list[KafkaRecord]:
    """Every record of `topics` from the start up to the high watermarks at call time
    (messages that carry a consumer error are skipped); TimeoutError when some partition is
    not read to its end within `timeout`."""
    consumer = _consumer(bootstrap, "chaos-reader")
    try:
        metadata = consumer.list_topics(timeout=20)
        wanted: dict[tuple[str, int], int] = {}
        for topic in topics:
            for p in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)
                if high > low:
                    wanted[(topic, p)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in wanted])
        records: list[KafkaRecord] = []
        done: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(records)} records; partitions unfinished: "
                                   f"{sorted(set(wanted) - done)}")  # fmt: skip
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    continue
                record = _record(msg)
                records.append(record)
                if record.offset + 1 >= wanted.get((record.topic, record.partition), 0):
                    done.add((record.topic, record.partition))
        return records
    finally:
        consumer.close()
