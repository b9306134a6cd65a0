"""The resend check's Kafka side, against the real broker: it finds records by the two headers
Ferry gives them, only from the time it is given, and nowhere else."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from sidecar.kafka.find_sent import KafkaSentFinder
from sidecar.kafka.ports import SentBefore
from sidecar.model import EVENT_ID_HEADER, PUBLISH_TIME_HEADER
from tests.conftest import KafkaHandle


def _produce(
    bootstrap: str, topic: str, records: list[tuple[str, str, int]]
) -> dict[str, tuple[int, int]]:
    """Send (event id, publish time header, record timestamp) records; where each landed."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    placed: dict[str, tuple[int, int]] = {}
    errors: list[object] = []

    def reporter(event_id: str) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                placed[event_id] = (msg.partition(), msg.offset())

        return report

    for n, (event_id, published, stamp) in enumerate(records):
        producer.produce(
            topic,
            f"payload {n}".encode(),
            f"k{n}".encode(),
            headers=[(EVENT_ID_HEADER, event_id), (PUBLISH_TIME_HEADER, published)],
            timestamp=stamp,
            on_delivery=reporter(event_id),
        )
    assert producer.flush(30) == 0
    assert not errors, errors
    return placed


def test_it_finds_the_records_named_by_both_headers_from_the_given_time(
    kafka: KafkaHandle,
) -> None:
    topic = kafka.topic("find-sent", partitions=3)
    now = int(time.time() * 1000)
    placed = _produce(
        kafka.bootstrap,
        topic,
        [
            ("old", "100", now - 600_000),  # stamped before the time asked from
            *[(f"e{i}", str(now), now) for i in range(30)],
            ("other-time", str(now + 1), now),  # its id is wanted, with another publish time
        ],
    )
    wanted = {
        ("old", "100"),
        *{(f"e{i}", str(now)) for i in range(0, 30, 2)},
        ("other-time", str(now)),
        ("never-sent", str(now)),
    }
    found = KafkaSentFinder(kafka.bootstrap, {}).find(
        {topic: SentBefore(now - 60_000, frozenset(wanted))}, timeout_s=20
    )
    assert found == {topic: {(f"e{i}", str(now)): placed[f"e{i}"] for i in range(0, 30, 2)}}


def test_a_missing_topic_or_nothing_recent_finds_nothing(kafka: KafkaHandle) -> None:
    topic = kafka.topic("find-sent-old", partitions=2)
    now = int(time.time() * 1000)
    _produce(kafka.bootstrap, topic, [("a", "1", now - 600_000)])
    wanted = SentBefore(now - 60_000, frozenset({("a", "1")}))
    started = time.monotonic()
    found = KafkaSentFinder(kafka.bootstrap, {}).find(
        {topic: wanted, "find-sent-no-such-topic": wanted}, timeout_s=20
    )
    assert found == {topic: {}, "find-sent-no-such-topic": {}}
    assert time.monotonic() - started < 10, "waited for records that cannot come"
