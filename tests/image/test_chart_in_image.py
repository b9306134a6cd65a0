"""The link between the Helm chart and the image: the Ferry container the chart renders (its args,
environment, ports and volume mounts) runs as it is in the built image (read-only root, the
image's user, each volume a directory of its own, an emptyDir's world-writable root), and
answers its rendered probes the way the kubelet would send them: gRPC health on the rendered
port and service names, or the rendered exec command inside the container. It then stops on
SIGTERM within the rendered grace period.

Runs as root when $FERRY_IMAGE names a built image (`make image-test` and `make test` set it)."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from sidecar.config import Settings
from sidecar.wal.store import DB_NAME
from testkit.certs import CertificateAuthority
from testkit.chart import (
    CHART_DIR,
    CI_VALUES,
    Chart,
    env_values,
    ferry_container,
    pod_spec,
    volume,
)
from testkit.image_container import ImageContainer, uid_gid
from testkit.kafka_read import read_topic
from testkit.ports import HOST, free_port
from testkit.publishing import event, publish
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

IMAGE = os.environ.get("FERRY_IMAGE", "")
SERVING = health_pb2.HealthCheckResponse.SERVING
#: The longest a test waits for the startup probe (the rendered one allows minutes).
STARTUP_WAIT_S = 90.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not IMAGE, reason="$FERRY_IMAGE is unset: make image builds it, make image-test runs this"
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="running the image (buildah, its mounts) needs root"
    ),
]


class RenderedFerry:
    """The chart's Ferry container and pod spec, run in the image as the pod would run it."""

    def __init__(
        self, spec: dict[str, Any], work: Path, secrets: dict[str, dict[str, bytes]] | None = None
    ) -> None:
        self.spec = spec
        self.ferry = ferry_container(spec)
        self.work = work
        self.secrets = secrets or {}
        self.volumes: dict[str, Path] = {}
        self.container = ImageContainer(IMAGE, work / "volume", work / "ferry.log")

    def start(self) -> RenderedFerry:
        env = env_values(self.ferry)
        assert len(env) == len(self.ferry["env"]), "every variable has a value in this render"
        command = [*self.container.config["Entrypoint"], *self.ferry.get("args", [])]
        mounts = {}
        for volume_mount in self.ferry["volumeMounts"]:
            name = volume_mount["name"]
            directory = self.work / name
            directory.mkdir()
            source = volume(self.spec, name)
            if "secret" in source:
                self._project_secret(source["secret"], directory)
            else:
                assert "emptyDir" in source, f"{name}: the test emulates emptyDirs and Secrets"
                directory.chmod(0o777)  # an emptyDir's root: Ferry must not write the log there
            self.volumes[name] = directory
            mounts[directory] = volume_mount["mountPath"]
        self.container.launch(command, env, mounts)
        return self

    def _project_secret(self, secret: dict[str, Any], directory: Path) -> None:
        """The files of a Secret as the kubelet projects them: owned by root, group fsGroup,
        mode defaultMode."""
        group = self.spec["securityContext"]["fsGroup"]
        for key, content in self.secrets[secret["secretName"]].items():
            path = directory / key
            path.write_bytes(content)
            os.chown(path, 0, group)
            path.chmod(secret["defaultMode"])

    def grpc_port(self) -> int:
        [port] = [p["containerPort"] for p in self.ferry["ports"] if p["name"] == "ferry-grpc"]
        return int(port)

    def probe(self, kind: str) -> bool:
        """One probe of `kind` (startup, readiness, liveness) as the kubelet sends it."""
        probe = self.ferry[f"{kind}Probe"]
        if "grpc" in probe:
            return _grpc_probe(probe["grpc"]["port"], probe["grpc"]["service"], probe)
        done = self.container.exec(probe["exec"]["command"], timeout=60)
        return done.returncode == 0

    def wait_started(self) -> None:
        def started() -> bool:
            assert self.container.alive(), f"Ferry exited:\n{self.log_tail()}"
            return self.probe("startup")

        wait_for(started, STARTUP_WAIT_S, interval=0.5, what="the rendered startup probe")

    def log_tail(self) -> str:
        return "\n".join(self.container.log_path.read_text().splitlines()[-30:])

    def close(self) -> None:
        self.container.close()


def _grpc_probe(port: int, service: str, probe: dict[str, Any]) -> bool:
    """The kubelet's gRPC probe: a plaintext Health/Check to the pod's address."""
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=probe["timeoutSeconds"]
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == SERVING)


@pytest.fixture
def rendered(tmp_path: Path) -> Iterator[list[RenderedFerry]]:
    started: list[RenderedFerry] = []
    yield started
    for ferry in started:
        ferry.close()


def _metrics_exposition(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


def test_rendered_container_runs_in_the_image_and_passes_its_grpc_probes(
    chart: Chart, kafka: KafkaHandle, tmp_path: Path, rendered: list[RenderedFerry]
) -> None:
    grpc_port = free_port()
    metrics_port = free_port()
    manifests = chart.render(
        values={
            "kafka.bootstrap": kafka.bootstrap,
            "listen.port": grpc_port,
            "metrics.port": metrics_port,
        }
    )
    spec = pod_spec(manifests)
    ferry = RenderedFerry(spec, tmp_path)
    rendered.append(ferry)
    uid, gid = uid_gid(ferry.container.config["User"])
    context = ferry.ferry["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), "the image's own user"
    ferry.start()
    assert ferry.grpc_port() == grpc_port
    ferry.wait_started()
    assert ferry.probe("readiness"), "readiness on ferry.v1.Publisher"
    assert ferry.probe("liveness")

    # The application dials FERRY_ADDR from its own rendered environment.
    address = env_values(spec["containers"][0])["FERRY_ADDR"]
    topic = kafka.topic("chart", partitions=1)
    with grpc.insecure_channel(address) as channel:
        publish(
            publisher_pb2_grpc.PublisherStub(channel),
            event(topic, "through-the-chart", payload=b"rendered"),
            ack_level=pb.ACK_LEVEL_KAFKA,
            timeout=60,
        )
    [record] = read_topic(kafka.bootstrap, topic, expect=1)
    assert record.event_id == "through-the-chart"
    # The log is in the subdirectory the chart names, not in the world-writable volume root.
    wal_mount = ferry.volumes["ferry-wal"]
    data_dir = env_values(ferry.ferry)["FERRY_DATA_DIR"]
    mount_path = next(m for m in ferry.ferry["volumeMounts"] if m["name"] == "ferry-wal")
    relative = Path(data_dir).relative_to(mount_path["mountPath"])
    assert (wal_mount / relative / DB_NAME).is_file()
    assert (wal_mount / relative).stat().st_mode & 0o777 == 0o700

    grace = spec["terminationGracePeriodSeconds"]
    assert ferry.container.terminate(timeout=grace) == 0, ferry.log_tail()


def test_rendered_metrics_port_serves_the_metrics_the_dashboard_reads(
    chart: Chart, kafka: KafkaHandle, tmp_path: Path, rendered: list[RenderedFerry]
) -> None:
    if "metrics_listen" not in Settings.model_fields:
        pytest.skip("this Ferry has no metrics listener (no metrics_listen setting) yet")
    metrics_port = free_port()
    manifests = chart.render(
        values={
            "kafka.bootstrap": kafka.bootstrap,
            "listen.port": free_port(),
            "metrics.port": metrics_port,
        }
    )
    ferry = RenderedFerry(pod_spec(manifests), tmp_path).start()
    rendered.append(ferry)
    ferry.wait_started()
    exposition = _metrics_exposition(metrics_port)
    names = yaml.safe_load((CHART_DIR / "files" / "metrics.yaml").read_text()).values()
    for name in names:
        # A counter's TYPE line names it without _total, or with it while it has no series yet
        # (a per-subscription counter before any subscription): prometheus-client's format.
        typed = {f"# TYPE {name.removesuffix('_total')} ", f"# TYPE {name} "}
        assert any(t in exposition for t in typed), name


def test_rendered_unix_socket_container_passes_its_exec_probes(
    chart: Chart, kafka: KafkaHandle, tmp_path: Path, rendered: list[RenderedFerry]
) -> None:
    manifests = chart.render(
        [CI_VALUES / "unix-socket-values.yaml"], {"kafka.bootstrap": kafka.bootstrap}
    )
    spec = pod_spec(manifests)
    ferry = RenderedFerry(spec, tmp_path).start()
    rendered.append(ferry)
    ferry.wait_started()
    assert ferry.probe("readiness")
    assert ferry.probe("liveness")
    socket = ferry.volumes["ferry-socket"] / Path(env_values(ferry.ferry)["FERRY_LISTEN"]).name
    assert socket.is_socket()
    assert socket.stat().st_mode & 0o777 == 0o660
    assert ferry.container.terminate(timeout=spec["terminationGracePeriodSeconds"]) == 0
    assert not ferry.probe("liveness"), "the exec probe fails once Ferry is gone"


def test_rendered_mutual_tls_container_passes_its_exec_probes(
    chart: Chart, kafka: KafkaHandle, tmp_path: Path, rendered: list[RenderedFerry]
) -> None:
    values_file = CI_VALUES / "tls-values.yaml"
    tls = yaml.safe_load(values_file.read_text())["tls"]
    ca = CertificateAuthority.create("Ferry Test CA")
    # Issued for the service name only: the probe must check that name, not the address.
    server = ca.issue_server(dns=(tls["serverName"],), ips=())
    probe_client = ca.issue_client("kubelet-probe")
    secrets = {
        tls["secretName"]: {
            "tls.crt": server.cert_pem,
            "tls.key": server.key_pem,
            "ca.crt": ca.cert_pem,
        },
        tls["probeClientSecretName"]: {
            "tls.crt": probe_client.cert_pem,
            "tls.key": probe_client.key_pem,
        },
    }
    manifests = chart.render(
        [values_file],
        {"kafka.bootstrap": kafka.bootstrap, "listen.port": free_port(), "metrics.enabled": False},
    )
    spec = pod_spec(manifests)
    ferry = RenderedFerry(spec, tmp_path, secrets).start()
    rendered.append(ferry)
    ferry.wait_started()
    assert ferry.probe("readiness")
    assert ferry.probe("liveness")
    # The same check without the client certificate gets no connection: mutual TLS holds.
    command = ferry.ferry["readinessProbe"]["exec"]["command"]
    refused = ferry.container.exec(command[:-2], timeout=60)
    assert refused.returncode != 0
    assert "UNAVAILABLE" in refused.stderr, refused.stderr
    assert ferry.container.terminate(timeout=spec["terminationGracePeriodSeconds"]) == 0
