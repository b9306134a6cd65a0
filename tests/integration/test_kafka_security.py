"""Ferry against a secured Kafka: mutual TLS, SASL_SSL with SCRAM, and what happens when Kafka
refuses Ferry's password or certificate (publishes are kept and delivered after a restart with
the right secret; ferry.kafka is NOT_SERVING meanwhile; a kafka_auth_failed line says why).

One secured broker for the module (its own, beside the session's): SSL with client
certificates required, SASL_SSL with a SCRAM user. Every Ferry here logs at debug level, with
librdkafka's configuration dump (debug=conf) on too, and no secret (password, key password,
private key) may appear in its log (`secret_log`). What these Ferries delivered is read back
through the broker's PLAINTEXT listener.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from testkit.ferry_log import json_entries
from testkit.ferry_process import Ferries, FerryProcess
from testkit.kafka_admin import unique_topic
from testkit.kafka_certs import KafkaCerts, make_kafka_certs
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_env import local_cluster
from testkit.kafka_node import SecuredListeners
from testkit.kafka_read import read_to_end, read_topic
from testkit.log_secrets import SecretLog
from testkit.publishing import FAST_RETRY, event, publish, publish_through_ferry
from testkit.stream_client import open_stream
from testkit.subscribe_calls import open_request, unique_subscription
from testkit.waiting import wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
USER = "alice"
PASSWORD = "alice-Scram-Secret-4471"
WRONG_PASSWORD = "not-Alices-Secret-0093"
#: Debug output everywhere: Ferry's own, and librdkafka's dump of each client's configuration.
VERBOSE = ("--log-level", "debug", "--kafka-options", "debug=conf", "--drain-grace-s", "1")


@dataclass(frozen=True)
class SecuredKafka:
    cluster: KafkaCluster
    certs: KafkaCerts
    password_file: Path
    wrong_password_file: Path
    key_password_file: Path

    def topic(self, prefix: str) -> str:
        name = unique_topic(prefix)
        self.cluster.create_topic(name, partitions=2)
        return name

    def tls_args(self, ca: Path | None = None) -> list[str]:
        """Mutual TLS: Ferry's client certificate, its encrypted key and the key's password."""
        return [
            "--kafka-security-protocol", "SSL",
            "--kafka-ssl-ca", str(ca or self.certs.ca),
            "--kafka-ssl-cert", str(self.certs.client_cert),
            "--kafka-ssl-key", str(self.certs.client_key),
            "--kafka-ssl-key-password-file", str(self.key_password_file),
        ]  # fmt: skip

    def scram_args(self, mechanism: str, password_file: Path | None = None) -> list[str]:
        return [
            "--kafka-security-protocol", "SASL_SSL",
            "--kafka-ssl-ca", str(self.certs.ca),
            "--kafka-sasl-mechanism", mechanism,
            "--kafka-sasl-username", USER,
            "--kafka-sasl-password-file", str(password_file or self.password_file),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    root = tmp_path_factory.mktemp("secured-kafka")
    certs = make_kafka_certs(root / "certs")
    cluster = local_cluster(root / "kafka", secured=SecuredListeners(certs, {USER: PASSWORD}))
    files = {
        "password": PASSWORD + "\n",
        "wrong-password": WRONG_PASSWORD,
        "key-password": certs.client_key_password,
    }
    for name, content in files.items():
        (root / name).write_text(content)
    try:
        yield SecuredKafka(
            cluster,
            certs,
            root / "password",
            root / "wrong-password",
            root / "key-password",
        )
    finally:
        cluster.stop()


@pytest.fixture
def ferries(secured: SecuredKafka, tmp_path: Path, secret_log: SecretLog) -> Iterator[Ferries]:
    """Ferries of one test, on the secured broker's SASL_SSL listener unless told otherwise;
    none may log a secret of the secured broker's."""
    secret_log.add(PASSWORD, WRONG_PASSWORD, secured.certs.client_key_password)
    secret_log.add_file(secured.certs.client_key)
    fleet = Ferries(tmp_path, secured.cluster.sasl_ssl_bootstrap)
    yield fleet
    fleet.close()
    for ferry in fleet.started:
        secret_log.watch(ferry)


def kafka_health(ferry: FerryProcess) -> int:
    request = health_pb2.HealthCheckRequest(service="ferry.kafka")
    return int(ferry.health().Check(request, timeout=5).status)


def auth_failures(ferry: FerryProcess, kind: str) -> list[dict[str, object]]:
    return [e for e in json_entries(ferry.log_path, "kafka_auth_failed") if e["kind"] == kind]


def round_trip(ferry: FerryProcess, secured: SecuredKafka, topic: str) -> None:
    """Publish through Ferry, find the events in Kafka, and get them through Subscribe."""
    wait_for(lambda: kafka_health(ferry) == SERVING, 60, 0.2, "ferry.kafka SERVING")
    ids = publish_through_ferry(ferry, topic, 20)
    records = read_topic(secured.cluster.bootstrap, topic, expect=20, quiet=0.5)
    assert sorted(r.event_id for r in records) == sorted(ids)
    stream = open_stream(ferry, open_request(unique_subscription("secured"), [topic]))
    try:
        assert stream.wait_received(20, 60), f"{stream.received_count()} of 20 delivered"
        assert sorted(r.event_id for r in stream.received) == sorted(ids)
    finally:
        stream.cancel()


def test_mutual_tls_publishes_and_subscribes(secured: SecuredKafka, ferries: Ferries) -> None:
    topic = secured.topic("tls")
    args = [*secured.tls_args(), *VERBOSE]
    ferry = ferries.start(*args, bootstrap=secured.cluster.ssl_bootstrap)
    round_trip(ferry, secured, topic)
    assert ferry.terminate() == 0


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_with_scram_publishes_and_subscribes(
    secured: SecuredKafka, ferries: Ferries, mechanism: str
) -> None:
    topic = secured.topic("scram")
    args = [*secured.scram_args(mechanism), *VERBOSE]
    ferry = ferries.start(*args)
    round_trip(ferry, secured, topic)
    assert ferry.terminate() == 0


def publish_while_refused(
    ferry: FerryProcess, secured: SecuredKafka, topic: str, kind: str, count: int = 10
) -> list[str]:
    """Publish `count` events while Kafka refuses Ferry: each is answered OK and kept in the
    log, a kafka_auth_failed line of `kind` says why, ferry.kafka is NOT_SERVING, and nothing
    reaches Kafka."""
    ids = [f"{topic}-{i}" for i in range(count)]
    for event_id in ids:
        publish(ferry.publisher(), event(topic, event_id))  # answered OK: logged
    wait_for(lambda: auth_failures(ferry, kind), 60, 0.2, f"a kafka_auth_failed ({kind}) line")
    assert kafka_health(ferry) == NOT_SERVING
    wait_for(lambda: list(json_entries(ferry.log_path, "kafka_unreachable")), 30, 0.2, "probe")
    assert kafka_health(ferry) == NOT_SERVING  # the probe cannot succeed either
    assert ferry.pending_rows() == count
    assert read_to_end(secured.cluster.bootstrap, [topic]) == []
    return ids


def restart_with(ferry: FerryProcess, args: list[str]) -> None:
    assert ferry.terminate() == 0
    ferry.args = args
    ferry.start()


def delivered_ids(secured: SecuredKafka, topic: str, count: int) -> list[str]:
    records = read_topic(secured.cluster.bootstrap, topic, expect=count, quiet=0.5)
    return sorted(str(r.event_id) for r in records)


def test_a_wrong_password_keeps_events_until_a_restart_with_the_right_one(
    secured: SecuredKafka, ferries: Ferries
) -> None:
    topic = secured.topic("wrong-password")
    wrong = [*secured.scram_args("SCRAM-SHA-256", secured.wrong_password_file), *VERBOSE]
    ferry = ferries.start(*wrong, *FAST_RETRY)
    ids = publish_while_refused(ferry, secured, topic, "authentication")
    failure = auth_failures(ferry, "authentication")[0]
    assert failure["code"] == "_AUTHENTICATION"
    assert "invalid credentials" in str(failure["error"])
    assert "--kafka-sasl-password-file" in str(failure["hint"])
    # librdkafka retries the login every second or so; the log says it once per 30 s.
    assert len(auth_failures(ferry, "authentication")) <= 2

    restart_with(ferry, [*secured.scram_args("SCRAM-SHA-256"), *VERBOSE])
    ferry.wait_drained(60)
    assert delivered_ids(secured, topic, len(ids)) == sorted(ids)
    wait_for(lambda: kafka_health(ferry) == SERVING, 30, 0.2, "ferry.kafka SERVING")
    assert ferry.terminate() == 0


def test_a_broker_certificate_from_another_ca_is_refused(
    secured: SecuredKafka, ferries: Ferries
) -> None:
    topic = secured.topic("other-ca")
    untrusting = [*secured.tls_args(ca=secured.certs.other_ca), *VERBOSE, *FAST_RETRY]
    ferry = ferries.start(*untrusting, bootstrap=secured.cluster.ssl_bootstrap)
    ids = publish_while_refused(ferry, secured, topic, "tls")
    failure = auth_failures(ferry, "tls")[0]
    assert failure["code"] == "_SSL"
    assert "certificate verify failed" in str(failure["error"])

    restart_with(ferry, [*secured.tls_args(), *VERBOSE])
    ferry.wait_drained(60)
    assert delivered_ids(secured, topic, len(ids)) == sorted(ids)
    assert ferry.terminate() == 0


def test_host_names_are_verified_unless_turned_off(secured: SecuredKafka, ferries: Ferries) -> None:
    """The broker's certificate names 127.0.0.1 only: reached as localhost, it is refused,
    unless --kafka-ssl-verify=false (which logs a warning)."""
    topic = secured.topic("host-name")
    port = secured.cluster.nodes[0].sasl_ssl_port
    args = [*secured.scram_args("SCRAM-SHA-512"), *VERBOSE]
    ferry = ferries.start(*args, bootstrap=f"localhost:{port}")
    assert not list(json_entries(ferry.log_path, "kafka_ssl_verify_off"))
    ids = publish_while_refused(ferry, secured, topic, "tls", count=3)
    assert "certificate verify failed" in str(auth_failures(ferry, "tls")[0]["error"])

    restart_with(ferry, [*args, "--kafka-ssl-verify=false"])
    warnings = list(json_entries(ferry.log_path, "kafka_ssl_verify_off"))
    assert [w["level"] for w in warnings] == ["warning"]
    ferry.wait_drained(60)
    assert delivered_ids(secured, topic, len(ids)) == sorted(ids)
    assert ferry.terminate() == 0


def test_a_missing_password_file_stops_ferry_at_start(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    missing = tmp_path / "no-password"
    args = [*secured.scram_args("SCRAM-SHA-256", missing), *VERBOSE]
    ferry = FerryProcess(tmp_path / "wal", secured.cluster.sasl_ssl_bootstrap, *args)
    with pytest.raises(RuntimeError, match="exited with 2"):
        ferry.start(timeout=30)
    refusals = list(json_entries(ferry.log_path, "invalid_configuration"))
    assert len(refusals) == 1
    assert str(refusals[0]["error"]).startswith("--kafka-sasl-password-file: cannot read")
