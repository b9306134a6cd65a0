"""Kafka for the test session: an existing cluster from ``$KAFKA_BOOTSTRAP``, or a real local
1-broker KRaft cluster (``testkit.kafka_local``) started under a temporary dir.

Typical use from ``tests/conftest.py``::

    @pytest.fixture(scope="session")
    def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        bootstrap, cluster = kafka_for_session(tmp_path_factory.mktemp("kafka"))
        yield bootstrap
        if cluster is not None:
            cluster.stop()
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from testkit import kafka_local
from testkit.kafka_local import KafkaCluster

__all__ = ["KafkaCluster", "create_topic", "kafka_for_session", "unique_topic"]


def kafka_for_session(
    tmp_root: Path, brokers: int = 1, fast_start: bool = True
) -> tuple[str, KafkaCluster | None]:
    """``($KAFKA_BOOTSTRAP, None)`` when that variable is set (reuse that cluster), else start
    a local cluster under ``tmp_root`` and return ``(bootstrap, cluster)``; the caller stops it
    (it is also stopped when the interpreter exits). ``fast_start``: C1-only JIT, which starts
    a broker with ~45% less CPU (pass False for benchmarks)."""
    env = os.environ.get("KAFKA_BOOTSTRAP", "").strip()
    if env:
        return env, None
    cluster = KafkaCluster(
        Path(tmp_root) / "kafka",
        brokers=brokers,
        jvm_opts=kafka_local.FAST_START_JVM_OPTS if fast_start else (),
    )
    cluster.start()
    return cluster.bootstrap, cluster


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
    """Create ``name`` (replication -1: the cluster's default.replication.factor), wait until
    every partition has a leader, and return the name."""
    kafka_local.create_topic(bootstrap, name, partitions, replication, config, timeout)
    return name
