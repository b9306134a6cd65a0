"""Ferry's container image (`make image`), checked as built and run for real with buildah
(`testkit.image_container`): its config (exec-form entrypoint, fixed non-root user, the write-ahead
log volume as the default data dir, no bytecode writes, OCI labels), what it leaves out (pip,
compilers), and a run with a read-only root filesystem: as the non-root user, SERVING, publishing
into the suite's Kafka, and draining to exit 0 on SIGTERM.

Runs as root when $FERRY_IMAGE names a built image (`make image-test` and `make test` set it)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from sidecar.wal.store import DB_NAME
from testkit.ferry_log import json_entries
from testkit.image_container import ImageContainer, image_config, image_env, image_root
from testkit.kafka_read import read_topic
from testkit.paths import ROOT
from testkit.publishing import event, publish
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

IMAGE = os.environ.get("FERRY_IMAGE", "")
USER_ID = 10001
VOLUME = "/var/lib/ferry"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not IMAGE, reason="$FERRY_IMAGE is unset: make image builds it, make image-test runs this"
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="running the image (buildah, its mounts) needs root"
    ),
]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return image_config(IMAGE)


@pytest.fixture(scope="module")
def container(
    kafka: KafkaHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageContainer]:
    """One container of the image for the checks that only look at it while it runs."""
    work = tmp_path_factory.mktemp("image")
    running = ImageContainer(IMAGE, work / "volume", work / "container.log")
    try:
        yield running.start("--kafka-bootstrap", kafka.bootstrap)
    finally:
        running.close()


def _channel(container: ImageContainer) -> grpc.Channel:
    return grpc.insecure_channel(container.address)


def _mounts(pid: int) -> dict[str, set[str]]:
    """Mount point -> its per-mount options, as process `pid` sees them (the last mount of
    each point, the one on top)."""
    mounts: dict[str, set[str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts[fields[4]] = set(fields[5].split(","))
    return mounts


# -- the image as built -----------------------------------------------------------------------


def test_entrypoint_is_ferry_serve_in_exec_form_as_a_fixed_non_root_user(
    config: dict[str, Any],
) -> None:
    assert config["Entrypoint"] == ["ferry", "serve"]
    assert config["User"] == f"{USER_ID}:{USER_ID}"
    assert config.get("StopSignal", "SIGTERM") == "SIGTERM"


def test_write_ahead_log_volume_is_the_default_data_dir_and_no_bytecode_is_written(
    config: dict[str, Any],
) -> None:
    env = image_env(config)
    assert list(config["Volumes"]) == [VOLUME]
    assert env["FERRY_DATA_DIR"] == VOLUME
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["FERRY_LISTEN"] == "127.0.0.1:50051"


def test_oci_labels_name_the_version_and_revision(config: dict[str, Any]) -> None:
    labels = config["Labels"]
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert labels["org.opencontainers.image.title"] == "Ferry"
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    for name in ("description", "revision", "created"):
        assert labels[f"org.opencontainers.image.{name}"] not in ("", "unknown"), name


def test_image_holds_the_compiled_venv_without_pip_compilers_or_caches() -> None:
    with image_root(IMAGE) as root:
        venv = root / "opt/ferry"
        assert (venv / "bin/ferry").is_file()
        assert not list(venv.glob("bin/pip*")), "pip stays in the builder stage"
        assert not list(venv.glob("lib/python3*/site-packages/pip")), "pip stays in the builder"
        [site] = venv.glob("lib/python3*/site-packages")
        assert list((site / "sidecar/__pycache__").glob("cli.*.pyc")), "bytecode compiled"
        for tool in ("gcc", "cc", "g++", "make", "git"):
            found = [d / tool for d in ("usr/bin", "usr/local/bin") if (root / d / tool).exists()]
            assert not found, f"build tool in the image: {found}"
        assert not (root / "root/.cache/pip").exists(), "pip cache in the image"
        volume = (root / VOLUME.lstrip("/")).stat()
        assert (volume.st_uid, volume.st_gid, volume.st_mode & 0o777) == (USER_ID, USER_ID, 0o700)


# -- the image running ----------------------------------------------------------------------


def test_ferry_runs_as_the_non_root_user(container: ImageContainer) -> None:
    ferry = container.ferry_process()
    assert set(ferry.uids()) == {USER_ID}
    assert set(ferry.gids()) == {USER_ID}


def test_root_filesystem_is_read_only_and_the_log_is_in_the_volume(
    container: ImageContainer,
) -> None:
    mounts = _mounts(container.ferry_process().pid)
    assert "ro" in mounts["/"]
    assert "rw" in mounts[VOLUME]
    assert (container.volume_dir / DB_NAME).is_file()


def test_answers_health_serving(container: ImageContainer) -> None:
    with _channel(container) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return int(reply.status)

        assert status("") == health_pb2.HealthCheckResponse.SERVING
        assert status("ferry.v1.Publisher") == health_pb2.HealthCheckResponse.SERVING
        wait_for(
            lambda: status("ferry.kafka") == health_pb2.HealthCheckResponse.SERVING,
            60,
            what="ferry.kafka SERVING",
        )


def test_published_event_is_read_back_from_kafka(
    container: ImageContainer, kafka: KafkaHandle
) -> None:
    topic = kafka.topic("image", partitions=1)
    with _channel(container) as channel:
        answer = publish(
            publisher_pb2_grpc.PublisherStub(channel),
            event(topic, "from-the-image", payload=b"hello"),
            ack_level=pb.ACK_LEVEL_KAFKA,
            timeout=60,
        )
    assert not answer.result.duplicate
    [record] = read_topic(kafka.bootstrap, topic, expect=1)
    assert (record.event_id, record.value) == ("from-the-image", b"hello")


def test_sigterm_drains_and_exits_0(kafka: KafkaHandle, tmp_path: Path) -> None:
    topic = kafka.topic("image-drain", partitions=1)
    container = ImageContainer(IMAGE, tmp_path / "volume", tmp_path / "container.log")
    try:
        container.start("--kafka-bootstrap", kafka.bootstrap)
        with _channel(container) as channel:
            publish(
                publisher_pb2_grpc.PublisherStub(channel),
                event(topic, "before-sigterm", payload=b"durable"),
            )
        assert container.terminate() == 0
        assert list(json_entries(container.log_path, "drain_finished"))
    finally:
        container.close()
    [record] = read_topic(kafka.bootstrap, topic, expect=1)
    assert record.event_id == "before-sigterm"
