"""Baselines with the raw confluent-kafka client, and Kafka helpers for the harness.

The raw producer uses exactly the settings of Ferry's forwarder (`producer_config`:
idempotent, acks=all, linger, lz4), the raw consumer exactly those of Ferry's consumer
(`consumer_config`: no auto commit, no auto offset store), so that a ratio compares
Ferry's own overhead, not different client tuning.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from sidecar.kafka.consumer import consumer_config
from sidecar.kafka.producer import producer_config
from sidecar.model import EVENT_ID_HEADER

#: Ferry adds its event id header (a 36-character UUID) to each record: so do we.
EVENT_ID: tuple[str, str | bytes | None] = (EVENT_ID_HEADER, "0190b0c4-7a4e-7cc2-9a7e-0123456789ab")
QUIET = {"log_level": 0}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _producer(bootstrap: str) -> Producer:
    config = producer_config(bootstrap, {})
    return Producer({**config, "client.id": "bench-raw-producer", **QUIET})


def produce_job(job: dict[str, Any]) -> dict[str, Any]:
    """Produce as fast as possible from `start_at`; count deliveries in the measured window."""
    producer = _producer(job["bootstrap"])
    payload, topic = os.urandom(job["payload"]), job["topic"]
    headers = [EVENT_ID]
    delivered = [0, 0]  # ok, failed

    def on_delivery(err: Any, _msg: Any) -> None:
        delivered[1 if err is not None else 0] += 1

    start = job["start_at"]
    w0, w1 = start + job["warmup"], start + job["warmup"] + job["duration"]
    time.sleep(max(0.0, start - time.time()))
    marks: dict[str, tuple[float, int, float]] = {}
    sent = 0
    while True:
        now = time.time()
        if "w0" not in marks and now >= w0:
            marks["w0"] = (now, delivered[0], _cpu())
        if now >= w1:
            marks["w1"] = (now, delivered[0], _cpu())
            break
        for _ in range(1000):
            try:
                producer.produce(topic, payload, headers=headers, on_delivery=on_delivery)
                sent += 1
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    left = producer.flush(30)
    (t0, d0, c0), (t1, d1, c1) = marks["w0"], marks["w1"]
    return {
        "ok": d1 - d0,
        "window": [t0, t1],
        "rate": (d1 - d0) / (t1 - t0),
        "client_cpu": (c1 - c0) / (t1 - t0),
        "sent": sent,
        "failed": delivered[1],
        "unflushed": left,
    }


def consume_job(job: dict[str, Any]) -> dict[str, Any]:
    """Read `expected` records from the start with a new group: store each offset, commit often."""
    config = consumer_config(job["bootstrap"], job["group"], False, {})
    consumer = Consumer({**config, "client.id": "bench-raw-consumer", **QUIET})
    consumer.subscribe([job["topic"]])
    expected, deadline = job["expected"], time.time() + job["timeout"]
    t_open, first, done, count, last_commit, size = time.time(), 0.0, 0.0, 0, 0.0, 0
    cpu0 = 0.0
    try:
        while count < expected and time.time() < deadline:
            messages = consumer.consume(500, timeout=0.05)
            for message in messages:
                if message.error() is not None:
                    continue
                size += len(message.value() or b"")
                consumer.store_offsets(message)
                count += 1
            now = time.time()
            if messages and not first:
                first, cpu0 = now, _cpu()
            if now - last_commit >= 0.5:
                last_commit = now
                consumer.commit(asynchronous=True)
        done = time.time()
        cpu1 = _cpu()
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    span = max(done - first, 1e-9) if first else 0.0
    return {
        "ok": count,
        "window": [first, done],
        "rate": count / span if span else 0.0,
        "join_s": (first - t_open) if first else None,
        "client_cpu": (cpu1 - cpu0) / span if span else 0.0,
        "bytes": size,
    }


def prefill(bootstrap: str, topic: str, count: int, payload_size: int) -> float:
    """Put `count` records (with distinct event id headers) into `topic`; return seconds."""
    t0 = time.monotonic()
    producer = _producer(bootstrap)
    payload = os.urandom(payload_size)
    failed = [0]

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    for i in range(count):
        headers: list[tuple[str, str | bytes | None]] = [
            (EVENT_ID_HEADER, f"bench-prefill-{i:012d}")
        ]
        while True:
            try:
                producer.produce(topic, payload, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) or failed[0]:
        raise RuntimeError(f"prefill of {topic} failed ({failed[0]} failed deliveries)")
    return time.monotonic() - t0


class Watermarks:
    """Sum of the high watermarks of a topic: how many records Kafka holds."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench-watermarks", **QUIET}
        )

    def total(self, topic: str) -> int:
        meta = self._consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in meta.topics[topic].partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            total += high
        return total

    def close(self) -> None:
        self._consumer.close()
