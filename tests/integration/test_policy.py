"""Ferry with an authorisation policy: callers named by token or by client certificate may
publish to their topics and open their subscriptions, and get PERMISSION_DENIED for anything
else, with nothing written. Ferry logs at debug level, and no token or private key is in its log
(`secret_log`)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc, subscriber_pb2_grpc
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from testkit.certs import CertificateAuthority
from testkit.client_access import ClientAccess
from testkit.ferry_process import FerryProcess
from testkit.grpc_errors import error_reason
from testkit.kafka_read import read_topic
from testkit.log_secrets import SecretLog
from testkit.publishing import event
from testkit.stream_client import StreamClient
from testkit.subscribe_calls import open_request
from tests.conftest import KafkaHandle


def _denied(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value
    assert error_reason(info.value) == "PERMISSION_DENIED"
    return info.value


def test_token_principals(kafka: KafkaHandle, tmp_path: Path, secret_log: SecretLog) -> None:
    mine, theirs = kafka.topic("pol-mine", 1), kafka.topic("pol-theirs", 1)
    orders_token, other_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    secret_log.add(orders_token, other_token)
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{orders_token}\n{other_token}\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""principals:
  - name: orders
    token_sha256: {hashlib.sha256(orders_token.encode()).hexdigest()}
    publish: [{mine}]
    subscriptions: ["audit-*"]
    read: [{mine}]
"""
    )
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--token-file", str(token_file), "--policy-file", str(policy),
        access=ClientAccess(token=orders_token),
    )  # fmt: skip
    secret_log.watch(ferry)
    try:
        ferry.start()
        publisher = ferry.publisher()
        subscriber = ferry.subscriber()
        publisher.Publish(pb.PublishRequest(event=event(mine, "ok-1")), timeout=30)
        _denied(
            lambda: publisher.Publish(pb.PublishRequest(event=event(theirs, "no-1")), timeout=30)
        )
        batch = pb.PublishBatchRequest(events=[event(mine, "no-2"), event(theirs, "no-3")])
        _denied(lambda: publisher.PublishBatch(batch, timeout=30))

        # A stream: the refused request gets its error, the stream goes on.
        requests = [
            pb.PublishStreamRequest(request_id=1, events=[event(theirs, "no-4")]),
            pb.PublishStreamRequest(request_id=2, events=[event(mine, "ok-2")]),
        ]
        answers = [
            a for r in publisher.PublishStream(iter(requests), timeout=30) for a in r.answers
        ]
        by_id = {a.request_id: a for a in answers}
        assert by_id[1].error.reason == "PERMISSION_DENIED"
        assert by_id[1].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert not by_id[2].HasField("error")

        # A caller with an accepted token but no principal may do nothing.
        with ferry.new_channel(ClientAccess(token=other_token)) as channel:
            stranger = publisher_pb2_grpc.PublisherStub(channel)
            _denied(
                lambda: stranger.Publish(pb.PublishRequest(event=event(mine, "no-5")), timeout=30)
            )

        stream = StreamClient(ferry.channel(), open_request("audit-1", [mine])).open()
        [first, _] = stream.take(timeout=60, at_least=2)
        for name, topics in (("billing-1", [mine]), ("audit-2", [mine, theirs])):
            refused = StreamClient(ferry.channel(), open_request(name, topics)).start()
            assert refused.wait_closed(30)
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        _denied(
            lambda: subscriber.Ack(
                spb.AckRequest(subscription="billing-1", ack_ids=[first.ack_id]), timeout=10
            )
        )
        acked = subscriber.Ack(
            spb.AckRequest(subscription="audit-1", ack_ids=[first.ack_id]), timeout=10
        )
        assert acked.results[0].status == spb.ACK_ID_STATUS_APPLIED
        stream.cancel()
        ferry.wait_drained()
    finally:
        ferry.kill()
    assert read_topic(kafka.bootstrap, theirs, quiet=2) == []
    assert {r.event_id for r in read_topic(kafka.bootstrap, mine, expect=2, quiet=1)} == {
        "ok-1",
        "ok-2",
    }


def test_certificate_principals(kafka: KafkaHandle, tmp_path: Path, secret_log: SecretLog) -> None:
    topic = kafka.topic("pol-cert", 1)
    ca = CertificateAuthority.create("Ferry Test CA")
    server = ca.issue_server()
    cert, key = server.write(tmp_path / "tls", "server")
    billing = ca.issue_client("billing", uris=("spiffe://acme/billing",))
    auditor = ca.issue_client("auditor")
    intruder = ca.issue_client("intruder")
    for issued in (server, billing, auditor, intruder):
        secret_log.add_pem_key(issued.key_pem)
    policy = tmp_path / "policy.json"
    policy.write_text(
        '{"principals": ['
        f'{{"name": "billing", "cert_san": "spiffe://acme/billing", "publish": ["{topic}"]}},'
        f'{{"name": "auditor", "cert_subject": "CN=auditor,O=Ferry Test", "publish": ["{topic}"]}}'
        "]}"
    )
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--tls-cert", str(cert), "--tls-key", str(key),
        "--tls-client-ca", str(ca.write(tmp_path / "tls")), "--policy-file", str(policy),
        access=ClientAccess(root_ca=ca.cert_pem, client=billing),
    )  # fmt: skip
    secret_log.watch(ferry)
    try:
        ferry.start()
        for name, client in (("billing", billing), ("auditor", auditor)):
            with ferry.new_channel(ClientAccess(root_ca=ca.cert_pem, client=client)) as channel:
                publisher_pb2_grpc.PublisherStub(channel).Publish(
                    pb.PublishRequest(event=event(topic, f"by-{name}")), timeout=30
                )
        with ferry.new_channel(ClientAccess(root_ca=ca.cert_pem, client=intruder)) as channel:
            stub = publisher_pb2_grpc.PublisherStub(channel)
            _denied(lambda: stub.Publish(pb.PublishRequest(event=event(topic, "no")), timeout=30))
            subscriber = subscriber_pb2_grpc.SubscriberStub(channel)
            _denied(
                lambda: subscriber.Ack(spb.AckRequest(subscription="s", ack_ids=["a"]), timeout=10)
            )
    finally:
        ferry.kill()
