"""End to end through a running Ferry (FERRY_ADDR) and its Kafka (KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Any, cast

import grpc
import pytest
from confluent_kafka import Consumer

from ferry_client import (
    AckLevel,
    Event,
    FerryError,
    FerryPublisher,
    FerryStreamPublisher,
    Message,
    PublishResult,
    Subscriber,
)
from tests.conftest import Env

COUNT = 100
KEYS = 8


def read_kafka(
    bootstrap: str, topic: str, want: set[str], timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Every record of `topic` in partition-offset order, until all `want` ids were seen."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"python-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        consumer.subscribe([topic])
        end = time.monotonic() + timeout
        while not want <= seen and time.monotonic() < end:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event_id = cast(bytes, dict(msg.headers() or [])["ferry-event-id"]).decode()
            seen.add(event_id)
            records.append(
                {
                    "id": event_id,
                    "key": msg.key(),
                    "value": msg.value(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                }
            )
    finally:
        consumer.close()
    return records


def test_publish_subscribe_and_read_back_from_kafka(env: Env, name: str) -> None:
    topic, subscription = f"{name}-t", f"{name}-s"
    with FerryPublisher(env.ferry_addr) as publisher:
        ids = [
            publisher.publish(
                topic, f"payload-{i}", key=f"k{i % KEYS}", headers=[("i", str(i))]
            ).event_id
            for i in range(COUNT // 2)
        ]
        batch = [
            Event(topic, f"payload-{i}", key=f"k{i % KEYS}", headers=[("i", str(i))])
            for i in range(COUNT // 2, COUNT)
        ]
        for result in publisher.publish_batch(batch):
            assert not isinstance(result, FerryError)
            ids.append(result.event_id)
    assert len(set(ids)) == COUNT
    failing = ids[37]

    lock = threading.Lock()
    attempts: dict[str, list[int]] = defaultdict(list)
    done = threading.Event()
    wrong: list[Message] = []

    def handler(message: Message) -> None:
        with lock:
            attempts[message.event_id].append(message.delivery_attempt)
            if message.payload != f"payload-{ids.index(message.event_id)}".encode():
                wrong.append(message)
            if len(attempts) == COUNT and len(attempts[failing]) >= 2:
                done.set()
        if message.event_id == failing and message.delivery_attempt == 1:
            raise RuntimeError("failing once on purpose")

    with Subscriber(handler, subscription, [topic], addr=env.ferry_addr, nack_delay=0.1):
        assert done.wait(60), f"handled {len(attempts)} of {COUNT}"
    assert not wrong
    assert attempts[failing][:2] == [1, 2]
    assert set(attempts) == set(ids)

    records = read_kafka(env.kafka_bootstrap, topic, set(ids))
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        first.setdefault(record["id"], record)
    assert set(first) == set(ids)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in sorted(first.values(), key=lambda r: (r["partition"], r["offset"])):
        i = int(record["value"].removeprefix(b"payload-"))
        assert record["key"] == f"k{i % KEYS}".encode()
        by_key[record["key"]].append(i)
    assert len(by_key) == KEYS
    for key, order in by_key.items():
        assert order == sorted(order), f"key {key!r} out of order in Kafka"


def test_stream_publisher_keeps_each_keys_order_in_kafka(env: Env, name: str) -> None:
    count = 400
    # A small window: the publisher also has to wait for answers and keep the stream going.
    with FerryStreamPublisher(env.ferry_addr, max_outstanding=64) as publisher:
        futures = [
            publisher.publish(name, f"payload-{i}", key=f"k{i % KEYS}", event_id=f"{name}-{i}")
            for i in range(count - 50)
        ]
        batch = publisher.publish_batch(
            [
                Event(name, f"payload-{i}", key=f"k{i % KEYS}", event_id=f"{name}-{i}")
                for i in range(count - 50, count)
            ]
        )
        results = [f.result(60) for f in futures] + batch.result(60)
        again = publisher.publish(name, b"payload-0", key="k0", event_id=f"{name}-0").result(60)
    ids = [f"{name}-{i}" for i in range(count)]
    accepted = [r for r in results if isinstance(r, PublishResult)]
    assert [r.event_id for r in accepted] == ids
    assert (again.duplicate, again.sequence) == (True, accepted[0].sequence)

    records = read_kafka(env.kafka_bootstrap, name, set(ids))
    first: dict[str, dict[str, Any]] = {}
    for record in records:
        first.setdefault(record["id"], record)
    assert set(first) == set(ids)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in sorted(first.values(), key=lambda r: (r["partition"], r["offset"])):
        i = int(record["value"].removeprefix(b"payload-"))
        assert record["key"] == f"k{i % KEYS}".encode()
        by_key[record["key"]].append(i)
    assert len(by_key) == KEYS
    for key, order in by_key.items():
        assert order == sorted(order), f"key {key!r} out of order in Kafka"


def test_kafka_ack_level_and_duplicates(env: Env, name: str) -> None:
    with FerryPublisher(env.ferry_addr) as publisher:
        first = publisher.publish(name, b"x", ack_level=AckLevel.KAFKA, event_id=f"{name}-1")
        again = publisher.publish(name, b"x", event_id=f"{name}-1")
    assert first.kafka_position is not None
    assert first.kafka_position.offset >= 0
    assert first.publish_time is not None
    assert (again.duplicate, again.sequence) == (True, first.sequence)


def test_errors_carry_code_and_reason(env: Env, name: str) -> None:
    with FerryPublisher(env.ferry_addr) as publisher:
        publisher.publish(name, b"one", event_id=f"{name}-c")
        with pytest.raises(FerryError) as conflict:
            publisher.publish(name, b"two", event_id=f"{name}-c")
        with pytest.raises(FerryError) as invalid:
            publisher.publish("not a topic!", b"x")
    assert (conflict.value.code, conflict.value.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "EVENT_ID_CONFLICT",
    )
    assert (invalid.value.code, invalid.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    assert invalid.value.bad_request is not None
    assert invalid.value.bad_request.field_violations[0].field == "event.topic"


def test_subscribe_settings_conflict_is_surfaced(env: Env, name: str) -> None:
    def handler(message: Message) -> None:
        pass

    # Same subscription, other topics: whichever opens second is refused, and stops.
    first = Subscriber(handler, name, [f"{name}-a"], addr=env.ferry_addr).start()
    second = Subscriber(handler, name, [f"{name}-b"], addr=env.ferry_addr).start()
    try:
        end = time.monotonic() + 30
        while first.error is None and second.error is None and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        first.stop()
        second.stop()
    errors = [e for e in (first.error, second.error) if e is not None]
    assert len(errors) == 1
    assert errors[0].code is grpc.StatusCode.FAILED_PRECONDITION
    assert errors[0].reason == "SUBSCRIPTION_SETTINGS_CONFLICT"
