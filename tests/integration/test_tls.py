"""Ferry with TLS and mutual TLS: who gets through the handshake, and a certificate rotated on
disk while a Subscribe stream stays open. Every Ferry logs at debug level, and no private key
is in its log (`secret_log`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.certs import CertificateAuthority, Issued
from testkit.client_access import ClientAccess
from testkit.ferry_process import FerryProcess
from testkit.log_secrets import SecretLog
from testkit.publishing import event
from testkit.stream_client import StreamClient
from testkit.subscribe_calls import open_request, unique_subscription
from tests.conftest import KafkaHandle


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Ferry Test CA")


@pytest.fixture(scope="module")
def other_ca() -> CertificateAuthority:
    return CertificateAuthority.create("Unrelated CA")


@pytest.fixture
def tls_ferry(
    kafka: KafkaHandle, tmp_path: Path, ca: CertificateAuthority, secret_log: SecretLog
) -> Iterator[FerryProcess]:
    server = ca.issue_server()
    secret_log.add_pem_key(server.key_pem)
    cert, key = server.write(tmp_path / "tls", "server")
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap, "--tls-cert", str(cert), "--tls-key", str(key),
        access=ClientAccess(root_ca=ca.cert_pem),
    )  # fmt: skip
    yield secret_log.watch(ferry).start()
    ferry.kill()


def _health(ferry: FerryProcess, access: ClientAccess) -> grpc.StatusCode:
    """OK if a new connection with `access` gets a health answer, else the failure's code."""
    with ferry.new_channel(access) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _publish(channel: grpc.Channel, topic: str, event_id: str) -> None:
    reply = publisher_pb2_grpc.PublisherStub(channel).Publish(
        pb.PublishRequest(event=event(topic, event_id)), timeout=30
    )
    assert reply.result.event_id == event_id


def _replace(path: Path, content: bytes) -> None:
    """Swap the file's content in one step, as a Kubernetes Secret volume does."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(content)
    os.replace(staged, path)


def test_tls_needs_the_right_ca(
    tls_ferry: FerryProcess, other_ca: CertificateAuthority, kafka: KafkaHandle
) -> None:
    topic = kafka.topic("tls", partitions=1)
    with tls_ferry.new_channel() as channel:
        _publish(channel, topic, "tls-1")
    assert _health(tls_ferry, ClientAccess(root_ca=other_ca.cert_pem)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert _health(tls_ferry, ClientAccess()) == grpc.StatusCode.UNAVAILABLE  # plaintext


def test_rotated_certificate_serves_new_connections_and_open_streams_go_on(
    tls_ferry: FerryProcess,
    ca: CertificateAuthority,
    kafka: KafkaHandle,
    tmp_path: Path,
    secret_log: SecretLog,
) -> None:
    topic = kafka.topic("rotation", partitions=1)
    subscription = unique_subscription("rotation")
    stream = StreamClient(tls_ferry.channel(), open_request(subscription, [topic])).open()
    with tls_ferry.new_channel() as channel:
        _publish(channel, topic, "before-rotation")
    [first] = stream.take(timeout=60)
    assert first.event_id == "before-rotation"

    next_ca = CertificateAuthority.create("Next CA")
    rotated: Issued = next_ca.issue_server()
    secret_log.add_pem_key(rotated.key_pem)
    _replace(tmp_path / "tls" / "server.key", rotated.key_pem)
    _replace(tmp_path / "tls" / "server.crt", rotated.cert_pem)

    new_access = ClientAccess(root_ca=next_ca.cert_pem)
    assert _health(tls_ferry, new_access) == grpc.StatusCode.OK
    assert _health(tls_ferry, ClientAccess(root_ca=ca.cert_pem)) == grpc.StatusCode.UNAVAILABLE
    with tls_ferry.new_channel(new_access) as channel:
        _publish(channel, topic, "after-rotation")

    # The stream opened under the old certificate still delivers and takes acks.
    [second] = stream.take(timeout=60)
    assert second.event_id == "after-rotation"
    [result] = stream.ack([second.ack_id])
    assert result.ack_id == second.ack_id
    assert stream.closed.is_set() is False
    assert '"tls_certificates_reloaded"' in tls_ferry.log_path.read_text()
    stream.cancel()


def test_mutual_tls_needs_a_client_certificate_of_the_client_ca(
    kafka: KafkaHandle,
    tmp_path: Path,
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    secret_log: SecretLog,
) -> None:
    server = ca.issue_server()
    cert, key = server.write(tmp_path / "tls", "server")
    client_ca = ca.write(tmp_path / "tls", "clients-ca")
    client = ca.issue_client("orders-service")
    intruder = other_ca.issue_client("intruder")
    for issued in (server, client, intruder):
        secret_log.add_pem_key(issued.key_pem)
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(client_ca),
        access=ClientAccess(root_ca=ca.cert_pem, client=client),
    )  # fmt: skip
    secret_log.watch(ferry)
    try:
        ferry.start()
        topic = kafka.topic("mtls", partitions=1)
        with ferry.new_channel() as channel:
            _publish(channel, topic, "mtls-1")
        no_cert = ClientAccess(root_ca=ca.cert_pem)
        assert _health(ferry, no_cert) == grpc.StatusCode.UNAVAILABLE
        foreign = ClientAccess(root_ca=ca.cert_pem, client=intruder)
        assert _health(ferry, foreign) == grpc.StatusCode.UNAVAILABLE
    finally:
        ferry.kill()
