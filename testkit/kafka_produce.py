"""Producing straight to Kafka with a plain producer, around Ferry (foreign records, backlogs)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

#: A record header: (name, value).
Header = tuple[str, str | bytes | None]


def produce_direct(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None, list[Header] | None]],
) -> int:
    """Produce (key, value, headers) records with a plain producer; returns how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    failures: list[Any] = []
    count = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    for key, value, headers in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, callback=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} records unsent"
    assert not failures, failures[:3]
    return count
