"""The Kafka a run uses: an existing cluster named by ``$KAFKA_BOOTSTRAP``, or a local KRaft
cluster (`testkit.kafka_cluster`) started under a work dir and stopped by `close()`.

    kafka = KafkaEnv.from_environment(tmp / "kafka")
    topic = kafka.topic("orders", partitions=3)
    ...
    kafka.close()
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from testkit.kafka_admin import create_topic, unique_topic
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_node import FAST_START_JVM_OPTS, SecuredListeners


def local_cluster(
    work: Path,
    *,
    brokers: int = 1,
    fast_start: bool = True,
    heap: str = "512m",
    config: Mapping[str, object] | None = None,
    secured: SecuredListeners | None = None,
) -> KafkaCluster:
    """Start a local cluster under `work` (stopped at interpreter exit at the latest).
    `fast_start`: C1-only JIT, which starts a broker with ~45% less CPU (slower at steady
    state: pass False for benchmarks). `secured`: SSL and SASL_SSL client listeners too."""
    cluster = KafkaCluster(
        work,
        brokers=brokers,
        heap=heap,
        config=config,
        jvm_opts=FAST_START_JVM_OPTS if fast_start else (),
        secured=secured,
    )
    cluster.start()
    return cluster


class KafkaEnv:
    """A bootstrap address, and the local cluster behind it when this process started it
    (`cluster` is None for ``$KAFKA_BOOTSTRAP``: it cannot be stopped or paused)."""

    def __init__(self, bootstrap: str, cluster: KafkaCluster | None) -> None:
        self.bootstrap = bootstrap
        self.cluster = cluster

    @classmethod
    def from_environment(
        cls,
        work: Path,
        *,
        fast_start: bool = True,
        heap: str = "512m",
        config: Mapping[str, object] | None = None,
    ) -> KafkaEnv:
        """``$KAFKA_BOOTSTRAP`` when set (reused, never stopped), else a 1-broker local
        cluster under `work` (see `local_cluster`)."""
        external = os.environ.get("KAFKA_BOOTSTRAP", "").strip()
        if external:
            return cls(external, None)
        cluster = local_cluster(work, fast_start=fast_start, heap=heap, config=config)
        return cls(cluster.bootstrap, cluster)

    @property
    def controllable(self) -> bool:
        return self.cluster is not None

    def pid(self) -> int | None:
        """The first broker's JVM, when it runs here."""
        return self.cluster.nodes[0].pid if self.cluster else None

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        *,
        attempts: int = 1,
        retry_delay_s: float = 3.0,
    ) -> str:
        """Create `name` (see `kafka_admin.create_topic`), up to `attempts` times; a topic
        that already exists on a later attempt was created by an earlier one."""
        for attempt in range(1, attempts + 1):
            try:
                return create_topic(self.bootstrap, name, partitions, -1, config)
            except Exception as exc:
                if attempt > 1 and "already exists" in str(exc).lower():
                    return name
                if attempt == attempts:
                    raise
                time.sleep(retry_delay_s)
        return name

    def topic(self, prefix: str = "t", partitions: int = 3) -> str:
        """A new topic with a unique name starting with `prefix`."""
        return self.create_topic(unique_topic(prefix), partitions)

    def stop(self) -> None:
        """Stop the local cluster (it keeps its ports and data for `start`)."""
        assert self.cluster is not None, "an external Kafka cannot be stopped"
        self.cluster.stop()

    def start(self) -> None:
        """Start the local cluster again after `stop`."""
        assert self.cluster is not None, "an external Kafka cannot be started"
        self.cluster.start()

    def close(self) -> None:
        """Stop the local cluster, if this process started one."""
        if self.cluster is not None:
            self.cluster.stop()
