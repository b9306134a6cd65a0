"""Observations outside Ferry: what Kafka holds, what the log holds, how the process behaves."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil
from confluent_kafka import Consumer, TopicPartition

from chaos.checker import KafkaRecord
from testkit import kafka_local

KafkaCluster = kafka_local.KafkaCluster
EVENT_ID_HEADER = "ferry-event-id"
T = TypeVar("T")


def off_main(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` on a helper thread. kafka_local starts JVMs with a preexec_fn (Python code
    between fork and exec) when called from the main thread; in a process that runs gRPC
    threads, that child can abort ("Fatal Python error: Aborted" in threading._after_fork)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="kafka-control")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def ensure_up(cluster: KafkaCluster) -> None:
    """Every node of `cluster` resumed and running."""
    for node in cluster.nodes:
        cluster.resume(node)
        if not node.alive():
            off_main(cluster.restart, node)


def read_all(bootstrap: str, topics: Sequence[str], timeout: float = 120.0) -> list[KafkaRecord]:
    """Every record of `topics` from the start up to the high watermarks at call time."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"chaos-reader-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 0,
    })  # fmt: skip
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
                tp = (msg.topic(), msg.partition())
                headers = dict(msg.headers() or [])
                raw = headers.get(EVENT_ID_HEADER)
                records.append(KafkaRecord(
                    msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                    raw.decode() if raw is not None else None,
                ))  # fmt: skip
                if msg.offset() + 1 >= wanted.get(tp, 0):
                    done.add(tp)
        return records
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int


def sample(pid: int) -> Sample | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return Sample(time.monotonic(), proc.memory_info().rss / 2**20, proc.num_fds(),
                          proc.num_threads())  # fmt: skip
    except psutil.Error:
        return None


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / var
