"""A real Ferry's operating signals: its Prometheus metrics move with publishing, forwarding
and subscribing (and pass promtool's checks), GetStatus answers over gRPC and reflection,
`ferry status` prints it (over a unix socket with a token too), and a publish's W3C trace
context travels through Kafka to the subscriber."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import admin_pb2, admin_pb2_grpc
from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.certs import CertificateAuthority
from testkit.client_access import ClientAccess
from testkit.ferry_process import Ferries, FerryProcess
from testkit.kafka_read import read_topic
from testkit.metrics import Scrape
from testkit.paths import ROOT
from testkit.ports import HOST
from testkit.publishing import event, event_headers
from testkit.stream_client import open_stream
from testkit.subscribe_calls import open_request
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _ferry_status(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_metrics_follow_publishing_forwarding_and_subscribing(
    kafka: KafkaHandle, ferries: Ferries, promtool: Path
) -> None:
    topic = kafka.topic("metrics", partitions=1)
    ferry = ferries.start()
    url = ferry.metrics_url()
    before = Scrape.of(url)
    assert before.value("ferry_wal_pending_events") == 0
    assert before.value("ferry_build_info", version="0.1.0", build=_build(before)) == 1

    publisher = ferry.publisher()
    publisher.Publish(
        pb.PublishRequest(event=event(topic, "m-0"), ack_level=pb.ACK_LEVEL_KAFKA), timeout=30
    )
    batch = [event(topic, f"m-{i}") for i in range(1, 5)]
    publisher.PublishBatch(pb.PublishBatchRequest(events=batch), timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        publisher.Publish(pb.PublishRequest(event=event("not a topic!", "m-x")), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    stream = open_stream(ferry, open_request("metrics-readers", [topic], lease_s=30))
    try:
        first = stream.take(timeout=30, at_least=5)
        assert len(first) == 5
        stream.nack([first[0].ack_id], delay_s=0.0)
        stream.ack([r.ack_id for r in first[1:]])
        [again] = stream.take(timeout=30)
        assert again.attempt == 2
        stream.ack([again.ack_id])

        def settled() -> Scrape | None:
            now = Scrape.of(url)
            sub = {"subscription": "metrics-readers"}
            done = (
                now.value("ferry_wal_pending_events") == 0
                and now.value("ferry_subscription_acks_total", **sub) == 5
                and now.has("ferry_subscription_committed_lag_records", **sub)
                and now.value("ferry_subscription_committed_lag_records", **sub) == 0
            )
            return now if done else None

        wait_for(settled, 30, what="log drained, acks counted, lag 0")
        after = Scrape.of(url)
    finally:
        stream.cancel()

    assert after.value("ferry_publish_events_total", code="OK", ack_level="kafka") == 1
    assert after.value("ferry_publish_events_total", code="OK", ack_level="durable") == 4
    assert (
        after.value("ferry_publish_events_total", code="INVALID_ARGUMENT", ack_level="durable") == 1
    )
    assert after.value("ferry_publish_duration_seconds_count", ack_level="durable") == 2
    assert after.value("ferry_forwarder_sent_events_total") >= 5
    assert after.value("ferry_forwarder_delivered_events_total") >= 5  # a resend counts again
    assert after.value("ferry_forwarder_in_flight_events") == 0
    assert after.value("ferry_kafka_reachable") == 1
    assert after.value("ferry_topic_pending_events", topic=topic) == 0
    sub = {"subscription": "metrics-readers"}
    assert after.value("ferry_subscription_streams", **sub) == 1
    assert after.value("ferry_subscription_deliveries_total", **sub) == 6
    assert after.value("ferry_subscription_redeliveries_total", **sub) == 1
    assert after.value("ferry_subscription_nacks_total", **sub) == 1
    assert after.value("ferry_subscription_outstanding_leases", **sub) == 0
    assert after.value("ferry_disk_reserve_held") == 1
    assert after.value("ferry_process_resident_memory_bytes") > 0

    checked = subprocess.run(
        [str(promtool), "check", "metrics"],
        input=after.text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "", checked.stdout  # no lint finding at all
    assert checked.stderr.strip() == "", checked.stderr


def _build(scrape: Scrape) -> str:
    [build] = [
        dict(labels)["build"] for name, labels in scrape.samples if name == "ferry_build_info"
    ]
    return build


def test_get_status_over_grpc_reflection_and_the_ferry_status_command(
    kafka: KafkaHandle, ferries: Ferries, grpcurl: Path
) -> None:
    topic = kafka.topic("status", partitions=1)
    ferry = ferries.start()
    ferry.publisher().PublishBatch(
        pb.PublishBatchRequest(events=[event(topic, f"s-{i}") for i in range(3)]), timeout=30
    )
    stream = open_stream(ferry, open_request("status-readers", [topic], lease_s=60))
    try:
        assert len(stream.take(timeout=30, at_least=3)) == 3  # leased, not acked
        admin = admin_pb2_grpc.AdminStub(ferry.channel())

        def get_status() -> admin_pb2.GetStatusResponse:
            return admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10)

        # Delivered records leave the log a moment after Kafka acknowledged them.
        wait_for(lambda: get_status().log.pending_events == 0, 30, what="the log drained")
        status = get_status()
        assert status.version == "0.1.0"
        assert "librdkafka" in status.build
        assert status.uptime.ToNanoseconds() > 0
        assert not status.draining
        assert status.forwarder.kafka_reachable
        assert status.log.max_events == 5_000_000
        [readers] = [s for s in status.subscriptions if s.name == "status-readers"]
        assert list(readers.topics) == [topic]
        assert (readers.streams, readers.outstanding_leases, readers.deliveries) == (1, 3, 3)
        assert [t.topic for t in status.topics] == [topic]
        assert status.disk.reserve_held

        listed = _grpcurl(grpcurl, ferry.address, "list")
        assert "ferry.v1.Admin" in listed.split()
        described = _grpcurl(grpcurl, ferry.address, "describe", "ferry.v1.Admin")
        assert "rpc GetStatus" in described
        answer = json.loads(_grpcurl(grpcurl, ferry.address, "ferry.v1.Admin/GetStatus"))
        assert answer["subscriptions"][0]["name"] == "status-readers"

        table = _ferry_status("--listen", ferry.address)
        assert table.returncode == 0, table.stderr
        print(table.stdout)  # the README's sample comes from here
        assert "Kafka:  reachable" in table.stdout
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line}
        assert rows[topic][1] == "0"  # nothing pending for the topic
        assert rows["status-readers"][2:5] == ["1", "3", "3"]  # streams, leases, held
        as_json = _ferry_status("--json", env={"FERRY_LISTEN": ferry.address})
        assert as_json.returncode == 0, as_json.stderr
        document = json.loads(as_json.stdout)
        assert document["subscriptions"][0]["outstanding_leases"] == "3"  # int64: a JSON string
        assert document["forwarder"]["kafka_reachable"] is True
    finally:
        stream.cancel()

    down = _ferry_status("--listen", f"{HOST}:1", "--timeout", "2")
    assert down.returncode == 1
    assert "UNAVAILABLE" in down.stderr or "DEADLINE_EXCEEDED" in down.stderr


def _grpcurl(binary: Path, address: str, *args: str) -> str:
    done = subprocess.run(
        [str(binary), "-plaintext", address, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ferry_status_over_a_unix_socket_with_a_token_and_a_policy(
    kafka: KafkaHandle, tmp_path: Path
) -> None:
    operator, app = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""principals:
  - name: operator
    token_sha256: {hashlib.sha256(operator.encode()).hexdigest()}
    status: true
  - name: app
    token_sha256: {hashlib.sha256(app.encode()).hexdigest()}
    publish: ["*"]
"""
    )
    sock = tmp_path / "ferry.sock"
    token_file = tmp_path / "operator-token"
    token_file.write_text(operator + "\n")
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap, "--policy-file", str(policy),
        env={"FERRY_TOKENS": f"{operator},{app}"},
        socket_path=sock, access=ClientAccess(token=operator),
    )  # fmt: skip
    try:
        ferry.start()
        # The same variables as the sidecar's own: the first of FERRY_TOKENS is the operator's.
        env = {"FERRY_LISTEN": f"unix://{sock}", "FERRY_TOKENS": f"{operator},{app}"}
        shown = _ferry_status(env=env)
        assert shown.returncode == 0, shown.stderr
        assert "(no subscriptions)" in shown.stdout
        from_file = _ferry_status("--token-file", str(token_file), "--json", env=env)
        assert json.loads(from_file.stdout)["version"] == "0.1.0"

        denied = _ferry_status(env={**env, "FERRY_TOKENS": app})
        assert denied.returncode == 1
        assert "PERMISSION_DENIED" in denied.stderr
        anonymous = _ferry_status(env={"FERRY_LISTEN": f"unix://{sock}"})
        assert anonymous.returncode == 1
        assert "UNAUTHENTICATED" in anonymous.stderr
        assert operator not in ferry.log_tail(200)
        assert app not in ferry.log_tail(200)
    finally:
        ferry.kill()


def test_trace_context_travels_from_publish_through_kafka_to_delivery(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("trace", partitions=1)
    ferry = ferries.start()
    publisher = ferry.publisher()
    metadata = (("traceparent", TRACEPARENT), ("tracestate", "vendor=abc"))
    first = publisher.Publish(
        pb.PublishRequest(event=event(topic, "t-1", headers={"app": "x"})),
        metadata=metadata,
        timeout=30,
    )
    assert not first.result.duplicate
    # A retry under another span is the same event, not a conflicting one.
    retry_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
    retried = publisher.Publish(
        pb.PublishRequest(event=event(topic, "t-1", headers={"app": "x"})),
        metadata=(("traceparent", retry_parent),),
        timeout=30,
    )
    assert retried.result.duplicate
    # An event that carries its own traceparent keeps it; a call without one adds none.
    own = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-00"
    publisher.Publish(
        pb.PublishRequest(event=event(topic, "t-2", headers={"traceparent": own})),
        metadata=metadata,
        timeout=30,
    )
    publisher.Publish(pb.PublishRequest(event=event(topic, "t-3")), timeout=30)

    records = {r.event_id: r for r in read_topic(kafka.bootstrap, topic, expect=3, quiet=1)}
    assert records["t-1"].user_headers == [
        ("app", b"x"),
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"vendor=abc"),
    ]
    assert records["t-2"].user_headers == [("traceparent", own.encode())]
    assert records["t-3"].user_headers == []

    stream = open_stream(ferry, open_request("trace-readers", [topic], lease_s=30))
    try:
        delivered = {r.event_id: r for r in stream.take(timeout=30, at_least=3)}
    finally:
        stream.cancel()
    assert event_headers(delivered["t-1"].delivery.event) == records["t-1"].user_headers
    assert event_headers(delivered["t-2"].delivery.event) == [("traceparent", own.encode())]


def test_metrics_listener_off_or_taken(kafka: KafkaHandle, tmp_path: Path) -> None:
    off = FerryProcess(tmp_path / "off", kafka.bootstrap, "--metrics-listen", "")
    try:
        off.start()
        assert "metrics_serving" not in off.log_path.read_text()
    finally:
        off.kill()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = FerryProcess(
            tmp_path / "busy", kafka.bootstrap, "--metrics-listen", f"{HOST}:{port}"
        )
        proc = subprocess.run(busy.command(), capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout
    [line] = [json.loads(x) for x in proc.stdout.splitlines() if "cannot_start" in x]
    assert line["error"].startswith(f"metrics_listen: cannot listen on {HOST}:{port}")


def test_ferry_status_over_mutual_tls(kafka: KafkaHandle, tmp_path: Path) -> None:
    ca = CertificateAuthority.create("Status Test CA")
    cert, key = ca.issue_server().write(tmp_path / "tls", "server")
    ca_file = ca.write(tmp_path / "tls")
    client_cert, client_key = ca.issue_client("operator").write(tmp_path / "tls", "operator")
    issued = ca.issue_client("probe")
    ferry = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca_file),
        access=ClientAccess(root_ca=ca.cert_pem, client=issued),
    )  # fmt: skip
    try:
        ferry.start()
        env = {"FERRY_LISTEN": ferry.address, "FERRY_TLS_CA": str(ca_file)}
        mutual = _ferry_status(
            "--tls-client-cert", str(client_cert), "--tls-client-key", str(client_key), env=env
        )
        assert mutual.returncode == 0, mutual.stderr
        assert "Kafka:" in mutual.stdout
        without_certificate = _ferry_status("--timeout", "5", env=env)
        assert without_certificate.returncode == 1
        plaintext = _ferry_status("--timeout", "5", env={"FERRY_LISTEN": ferry.address})
        assert plaintext.returncode == 1
    finally:
        ferry.kill()
