"""Read topics back with a plain confluent-kafka consumer: the ground truth of what Kafka holds."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

FERRY_HEADERS = frozenset({"ferry-event-id", "ferry-publish-time"})


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    #: Every header in order, repeats and null values kept.
    header_list: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def event_id(self) -> str:
        return self.headers["ferry-event-id"].decode()

    @property
    def user_headers(self) -> list[tuple[str, bytes | None]]:
        """The headers but the ones Ferry adds (event id, publish time)."""
        return [(k, v) for k, v in self.header_list if k not in FERRY_HEADERS]


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 60.0,
    quiet: float = 3.0,
) -> list[Record]:
    """Everything in `topic` from the start: until `expect` records arrived (then `quiet` s more
    to catch extra duplicates), or until nothing new arrived for `quiet` seconds."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.2)
            for msg in batch:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(msg.error())
                header_list = tuple(msg.headers() or ())
                records.append(Record(
                    msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                    {k: (v or b"") for k, v in header_list}, header_list,
                ))  # fmt: skip
            if batch:
                last_new = time.monotonic()
            enough = expect is not None and len(records) >= expect
            if (enough or expect is None) and time.monotonic() - last_new >= quiet:
                break
        return records
    finally:
        consumer.close()
