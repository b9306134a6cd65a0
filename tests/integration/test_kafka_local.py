"""The local Kafka of testkit.kafka_cluster is a real, durable, replicating Kafka."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_node import FAST_START_JVM_OPTS


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    errors: list[KafkaError] = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 40000,
        }
    )
    for value in values:
        producer.produce(
            topic, value, on_delivery=lambda err, _msg: errors.append(err) if err else None
        )
        producer.poll(0)
    assert producer.flush(45) == 0, "messages still in flight"
    assert errors == []


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error() is None:
                    value = msg.value()
                    assert isinstance(value, bytes)
                    values.append(value)
    finally:
        consumer.close()
    return values


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_single_broker_survives_sigkill(tmp_path: Path) -> None:
    values = [f"m-{i}".encode() for i in range(100)]
    with KafkaCluster(tmp_path / "kafka", brokers=1, jvm_opts=FAST_START_JVM_OPTS) as cluster:
        cluster.create_topic("durable")
        _produce(cluster.bootstrap, "durable", values)
        assert _consume(cluster.bootstrap, "durable", 100) == values

        cluster.kill(1)
        assert not cluster.nodes[0].alive()
        cluster.restart(1)  # same ports, same data dir
        assert cluster.nodes[0].alive()
        assert _consume(cluster.bootstrap, "durable", 100) == values


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_three_brokers_survive_leader_kill(tmp_path: Path) -> None:
    first = [f"a-{i}".encode() for i in range(50)]
    second = [f"b-{i}".encode() for i in range(50)]
    with KafkaCluster(tmp_path / "kafka", brokers=3, jvm_opts=FAST_START_JVM_OPTS) as cluster:
        cluster.create_topic("replicated", partitions=1)  # replication 3, min.insync 2
        _produce(cluster.bootstrap, "replicated", first)
        leader = cluster.leader_of("replicated", 0)

        cluster.kill(leader)
        _produce(cluster.bootstrap, "replicated", second)  # acks=all with 2 of 3 in sync
        new_leader = cluster.leader_of("replicated", 0)
        assert new_leader not in (leader, -1)
        assert _consume(cluster.bootstrap, "replicated", 100) == first + second
