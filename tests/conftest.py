"""Session-wide fixtures: one real Kafka for every integration test (or $KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import os

# Tests fork Kafka brokers (testkit.kafka_local) from a process that has gRPC loaded; gRPC's
# fork handlers abort such a fork now and then. This must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_fixture import KafkaCluster, create_topic, kafka_for_session, unique_topic


class KafkaHandle:
    """The session's Kafka: its bootstrap, and the cluster when this session started it."""

    def __init__(self, bootstrap: str, cluster: KafkaCluster | None) -> None:
        self.bootstrap = bootstrap
        self.cluster = cluster

    def require_control(self) -> KafkaCluster:
        """The local cluster, for tests that stop or pause the broker."""
        if self.cluster is None:
            pytest.skip("needs a Kafka this session controls; $KAFKA_BOOTSTRAP is external")
        return self.cluster

    def topic(self, prefix: str = "t", partitions: int = 3) -> str:
        return create_topic(self.bootstrap, unique_topic(prefix), partitions)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    bootstrap, cluster = kafka_for_session(tmp_path_factory.mktemp("kafka"))
    yield KafkaHandle(bootstrap, cluster)
    if cluster is not None:
        cluster.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/integration need Kafka; slow ones run only with -m slow (make chaos)."""
    selected_markers = config.getoption("-m") or ""
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("slow") and "slow" not in selected_markers:
            item.add_marker(pytest.mark.skip(reason="slow: run with make chaos (-m slow)"))
