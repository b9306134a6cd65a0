"""Topics: fresh names, creation that waits for leaders, and who leads a partition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from testkit.kafka_jars import KafkaError

QUIET = {"log_level": 0}  # no librdkafka connection noise from helper clients


def unique_topic(prefix: str = "test") -> str:
    """A topic name no other test (or earlier run on a reused cluster) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    replication: int = -1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create `name` with AdminClient (replication -1: the cluster's default.replication.factor),
    wait until every partition has a leader, and return the name. Raises
    ``confluent_kafka.KafkaException`` if the creation fails."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    new = NewTopic(
        name, num_partitions=partitions, replication_factor=replication, config=dict(config or {})
    )
    admin.create_topics([new], operation_timeout=timeout)[name].result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            t is not None
            and t.error is None
            and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        ):
            return name
        time.sleep(0.2)
    raise KafkaError(f"topic {name} has no leaders after {timeout}s")


def partition_leader(bootstrap: str, topic: str, partition: int = 0) -> int:
    """Broker id leading ``topic``/``partition`` (-1: none)."""
    md = AdminClient({"bootstrap.servers": bootstrap, **QUIET}).list_topics(topic, timeout=10)
    return int(md.topics[topic].partitions[partition].leader)
