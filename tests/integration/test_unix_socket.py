"""Ferry on a unix domain socket: publish (with a token), health and reflection over it, the
socket file's mode, a stale socket file left by a killed run, and a second Ferry refused on a
live socket. The token is never in Ferry's debug log (`secret_log`)."""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
from pathlib import Path

from grpc_health.v1 import health_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.client_access import ClientAccess
from testkit.ferry_process import FerryProcess
from testkit.kafka_read import read_topic
from testkit.log_secrets import SecretLog
from testkit.publishing import event
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _grpcurl(
    binary: Path, socket: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    # With -unix, grpcurl's address argument is the socket's path; flags come before it.
    header = ["-H", f"authorization: Bearer {token}"] if token else []
    return subprocess.run(
        [str(binary), "-plaintext", *header, "-unix", str(socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_publish_health_and_grpcurl_over_a_socket(
    kafka: KafkaHandle, tmp_path: Path, grpcurl: Path, secret_log: SecretLog
) -> None:
    topic = kafka.topic("uds", partitions=1)
    socket = tmp_path / "ferry.sock"
    token = secrets.token_urlsafe(32)
    secret_log.add(token)
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap, env={"FERRY_TOKENS": token},
        socket_path=socket, access=ClientAccess(token=token),
    )  # fmt: skip
    secret_log.watch(ferry)
    try:
        ferry.start()
        assert stat.S_ISSOCK(socket.lstat().st_mode)
        assert _mode(socket) == 0o600
        reply = ferry.publisher().Publish(
            pb.PublishRequest(event=event(topic, "uds-1"), ack_level=pb.ACK_LEVEL_KAFKA),
            timeout=30,
        )
        assert reply.result.event_id == "uds-1"
        health = ferry.health().Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        assert _grpcurl(grpcurl, socket, "list").returncode != 0  # no token
        listed = _grpcurl(grpcurl, socket, "list", token=token)
        assert listed.returncode == 0, listed.stderr
        assert "ferry.v1.Publisher" in listed.stdout.split()
        checked = _grpcurl(grpcurl, socket, "grpc.health.v1.Health/Check", token=token)
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)["status"] == "SERVING"
        assert ferry.terminate() == 0
        assert not socket.exists(), "the socket file is removed when Ferry stops"
    finally:
        ferry.kill()
    [record] = read_topic(kafka.bootstrap, topic, expect=1, quiet=1)
    assert record.event_id == "uds-1"


def test_socket_mode_stale_file_and_live_socket(kafka: KafkaHandle, tmp_path: Path) -> None:
    socket = tmp_path / "ferry.sock"
    first = FerryProcess(
        tmp_path / "a", kafka.bootstrap, "--listen-socket-mode", "0660", socket_path=socket
    )
    second = FerryProcess(tmp_path / "b", kafka.bootstrap, socket_path=socket)
    try:
        first.start()
        assert _mode(socket) == 0o660

        # A second Ferry must not take over a live socket (gRPC alone would replace it).
        second.proc = subprocess.Popen(second.command(), stdout=subprocess.PIPE, text=True)
        out, _ = second.proc.communicate(timeout=60)
        assert second.proc.returncode == 2, out
        assert "another process serves on" in out
        first.health().Check(health_pb2.HealthCheckRequest(), timeout=5)

        first.kill()  # SIGKILL leaves the socket file behind
        assert stat.S_ISSOCK(socket.lstat().st_mode)
        first.args = []  # default mode again
        first.start()
        assert _mode(socket) == 0o600
        wait_for(lambda: '"stale_socket_removed"' in first.log_path.read_text(), 10)
    finally:
        first.kill()
        second.kill()
