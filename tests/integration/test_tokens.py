"""Ferry with bearer tokens: calls without an accepted token are UNAUTHENTICATED, health stays
open, reflection needs a token, token files are read again when they change, and no token ever
appears in Ferry's log (kept at debug level; the `secret_log` fixture checks)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.client_access import ClientAccess
from testkit.ferry_process import FerryProcess
from testkit.grpc_errors import error_reason
from testkit.log_secrets import SecretLog
from testkit.publishing import event
from testkit.stream_client import StreamClient
from testkit.subscribe_calls import open_request, unique_subscription
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle


def _publish(ferry: FerryProcess, token: str | None, topic: str, event_id: str) -> None:
    with ferry.new_channel(ClientAccess(token=token)) as channel:
        publisher_pb2_grpc.PublisherStub(channel).Publish(
            pb.PublishRequest(event=event(topic, event_id)), timeout=30
        )


def _refused(ferry: FerryProcess, token: str | None, topic: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _publish(ferry, token, topic, "refused")
    return info.value


def _grpcurl(binary: Path, ferry: FerryProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "-plaintext", *args[:-1], ferry.address, args[-1]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_tokens_guard_every_call_but_health(
    kafka: KafkaHandle, tmp_path: Path, grpcurl: Path, secret_log: SecretLog
) -> None:
    file_token, env_token, rotated = (secrets.token_urlsafe(32) for _ in range(3))
    secret_log.add(file_token, env_token, rotated)
    token_file = tmp_path / "tokens" / "orders"
    token_file.parent.mkdir()
    token_file.write_text(f"# the orders service\n{file_token}\n")
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap, "--token-file", str(token_file),
        env={"FERRY_TOKENS": env_token}, access=ClientAccess(token=file_token),
    )  # fmt: skip
    secret_log.watch(ferry)
    topic = kafka.topic("tokens", partitions=1)
    try:
        ferry.start()
        _publish(ferry, file_token, topic, "with-file-token")
        _publish(ferry, env_token, topic, "with-env-token")
        for wrong in (None, rotated, file_token[:-1]):
            error = _refused(ferry, wrong, topic)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error_reason(error) == "UNAUTHENTICATED"
            assert error.details() == "missing or invalid credentials"

        with ferry.new_channel(ClientAccess()) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stream = StreamClient(channel, open_request(unique_subscription(), [topic])).start()
            assert stream.wait_closed(30)
            assert stream.code() == grpc.StatusCode.UNAUTHENTICATED

        anonymous = _grpcurl(grpcurl, ferry, "list")
        assert anonymous.returncode != 0
        assert "Unauthenticated" in anonymous.stderr
        listed = _grpcurl(grpcurl, ferry, "-H", f"authorization: Bearer {file_token}", "list")
        assert listed.returncode == 0, listed.stderr
        assert "ferry.v1.Publisher" in listed.stdout.split()

        token_file.write_text(f"{rotated}\n")  # rotation: the old token goes, a new one comes
        wait_for(lambda: _accepted(ferry, rotated, topic), 15, what="the rotated token")
        assert _refused(ferry, file_token, topic).code() == grpc.StatusCode.UNAUTHENTICATED
        _publish(ferry, env_token, topic, "env-token-still-valid")
    finally:
        ferry.kill()
    log = ferry.log_path.read_text()
    assert '"call_refused"' in log
    assert '"token_file_reloaded"' in log


def _accepted(ferry: FerryProcess, token: str, topic: str) -> bool:
    try:
        _publish(ferry, token, topic, "after-rotation")
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
        return False
    return True


def test_reflection_can_be_turned_off(kafka: KafkaHandle, tmp_path: Path, grpcurl: Path) -> None:
    ferry = FerryProcess(tmp_path / "wal", kafka.bootstrap, "--reflection=false")
    try:
        ferry.start()
        listed = _grpcurl(grpcurl, ferry, "list")
        assert listed.returncode != 0
        assert "does not support the reflection API" in listed.stderr
    finally:
        ferry.kill()
