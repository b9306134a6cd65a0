"""Session-wide fixtures: one real Kafka for every integration test (or $KAFKA_BOOTSTRAP), and
the Ferry processes of a test."""

from __future__ import annotations

import os
import shutil
import subprocess

# Tests fork Kafka brokers (testkit.kafka_node) from a process that has gRPC loaded; gRPC's
# fork handlers abort such a fork now and then. This must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.chart import Chart
from testkit.ferry_process import Ferries
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_env import KafkaEnv
from testkit.log_secrets import SecretLog
from testkit.paths import ROOT, cached_binary


class KafkaHandle(KafkaEnv):
    """The session's Kafka (see `KafkaEnv`), for tests."""

    def require_control(self) -> KafkaCluster:
        """The local cluster, for tests that stop or pause the broker."""
        if self.cluster is None:
            pytest.skip("needs a Kafka this session controls; $KAFKA_BOOTSTRAP is external")
        return self.cluster


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    handle = KafkaHandle.from_environment(tmp_path_factory.mktemp("kafka") / "kafka")
    yield handle
    handle.close()


def _go_tool(name: str) -> Path:
    """A Go tool built by tools/install_go_tools.sh (once; then cached)."""
    if shutil.which("go") is None:
        pytest.skip(f"`go` is not installed: cannot build {name} (tools/install_go_tools.sh)")
    subprocess.run(
        [str(ROOT / "tools" / "install_go_tools.sh"), name],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    binary = cached_binary(name)
    assert binary.is_file(), f"install_go_tools.sh did not produce {binary}"
    return binary


@pytest.fixture(scope="session")
def grpcurl() -> Path:
    """The grpcurl binary, built by tools/install_go_tools.sh."""
    return _go_tool("grpcurl")


@pytest.fixture(scope="session")
def promtool() -> Path:
    """Prometheus' promtool (`promtool check metrics`), built by tools/install_go_tools.sh."""
    return _go_tool("promtool")


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm binary, built by tools/install_go_tools.sh."""
    if shutil.which("go") is None:
        pytest.skip("`go` is not installed: cannot build helm (tools/install_go_tools.sh)")
    subprocess.run(
        [str(ROOT / "tools" / "install_go_tools.sh"), "helm"],
        check=True,
        capture_output=True,
        timeout=900,
    )
    binary = cached_binary("helm")
    assert binary.is_file(), f"install_go_tools.sh did not produce {binary}"
    return binary


@pytest.fixture(scope="session")
def chart(helm: Path) -> Chart:
    """Ferry's Helm chart, rendered with that helm (testkit.chart)."""
    return Chart(helm)


@pytest.fixture
def ferries(kafka: KafkaHandle, tmp_path: Path) -> Iterator[Ferries]:
    """Ferry processes of one test, each with its own data dir; all killed at the end."""
    fleet = Ferries(tmp_path, kafka.bootstrap)
    yield fleet
    fleet.close()


@pytest.fixture
def secret_log() -> Iterator[SecretLog]:
    """The secrets a test gives Ferry and the Ferries it watches (testkit.log_secrets): at the
    end of the test, every watched log holds debug lines and none of the secrets."""
    log = SecretLog()
    yield log
    log.assert_clean()


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
