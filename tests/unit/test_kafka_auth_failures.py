"""Kafka refusing Ferry's credentials, certificates or permissions: recognised from librdkafka's
error reports, logged as kafka_auth_failed once per interval, secrets masked."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError
from structlog.testing import capture_logs

from sidecar.clock import ManualClock
from sidecar.kafka.auth_failures import AUTHENTICATION, AUTHORIZATION, TLS, auth_failure
from sidecar.observability.kafka_logs import KafkaClientLog
from sidecar.observability.repeats import RepeatLimiter

PASSWORD = "alice-Secret-991"
# librdkafka's texts, as a wrong password, a broker certificate from another CA and a client
# certificate the broker refuses produce them.
WRONG_PASSWORD = (
    "sasl_ssl://127.0.0.1:30333/bootstrap: SASL authentication error: Authentication failed "
    "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256 "
    "(after {ms}ms in state AUTH_REQ)"
)
UNTRUSTED_BROKER = (
    "ssl://127.0.0.1:32482/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
    "certificate verify failed: broker certificate could not be verified (after 7ms in state "
    "SSL_HANDSHAKE)"
)
CLIENT_CERT_REFUSED = (
    "ssl://127.0.0.1:32482/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls "
    "alert bad certificate: SSL alert number 42 (after 7ms in state APIVERSION_QUERY)"
)


def error(code: int, text: str, fatal: bool = False) -> KafkaError:
    return KafkaError(code, text, fatal=fatal)


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (error(KafkaError._AUTHENTICATION, WRONG_PASSWORD.format(ms=3)), AUTHENTICATION),
        (error(KafkaError.SASL_AUTHENTICATION_FAILED, "bad credentials"), AUTHENTICATION),
        (error(KafkaError._SSL, UNTRUSTED_BROKER), TLS),
        (error(KafkaError._TRANSPORT, CLIENT_CERT_REFUSED), TLS),
        (error(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed"), AUTHORIZATION),
        (error(KafkaError.GROUP_AUTHORIZATION_FAILED, "Group authorization failed"), AUTHORIZATION),
        (error(KafkaError.CLUSTER_AUTHORIZATION_FAILED, "Cluster authz failed"), AUTHORIZATION),
    ],
)  # fmt: skip
def test_refusals_are_recognised(err: KafkaError, kind: str) -> None:
    refused = auth_failure(err)
    assert refused is not None
    assert refused.kind == kind
    assert refused.code == err.name()
    assert refused.error == err.str()
    assert "--kafka" in refused.hint or "ACL" in refused.hint


@pytest.mark.parametrize(
    "err",
    [
        error(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:9092 failed: Connection refused"),
        error(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
        error(KafkaError._MSG_TIMED_OUT, "Local: Message timed out"),
        error(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large"),
    ],
)
def test_other_errors_are_not_refusals(err: KafkaError) -> None:
    assert auth_failure(err) is None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client_log(clock: ManualClock) -> KafkaClientLog:
    config = {"bootstrap.servers": "b:1", "sasl.password": PASSWORD}
    return KafkaClientLog("producer", config, limiter=RepeatLimiter(30.0, clock))


def test_a_refusal_is_one_error_line_per_interval_with_a_hint(
    client_log: KafkaClientLog, clock: ManualClock
) -> None:
    with capture_logs() as logs:
        for i in range(100):  # librdkafka retries every 0.1-1 s; 100 retries over 50 s
            client_log.on_error(error(KafkaError._AUTHENTICATION, WRONG_PASSWORD.format(ms=i)))
            clock.advance(0.5)
    assert [(e["event"], e.get("repeated")) for e in logs] == [
        ("kafka_auth_failed", None),
        ("kafka_auth_failed", 59),  # the one after 30 s, counting the ones dropped meanwhile
    ]
    first = logs[0]
    assert first["log_level"] == "error"
    assert first["kind"] == AUTHENTICATION
    assert first["code"] == "_AUTHENTICATION"
    assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in first["error"]
    assert "--kafka-sasl-password-file" in first["hint"]


def test_librdkafkas_line_of_the_same_text_does_not_swallow_the_refusal(
    client_log: KafkaClientLog,
) -> None:
    text = WRONG_PASSWORD.format(ms=312)
    with capture_logs() as logs:
        # What librdkafka hands over for one failed login: a FAIL line, then the error report.
        client_log.line(logging.ERROR, "FAIL", "ferry-forwarder#producer-1", text)
        client_log.on_error(error(KafkaError._AUTHENTICATION, text))
    assert [e["event"] for e in logs] == ["librdkafka", "kafka_auth_failed"]


def test_a_secret_in_a_refusal_text_is_masked(client_log: KafkaClientLog) -> None:
    with capture_logs() as logs:
        client_log.on_error(error(KafkaError._AUTHENTICATION, f"refused {PASSWORD}"))
    assert logs[0]["error"] == "refused ***"
    assert PASSWORD not in repr(logs)


def test_other_errors_stay_kafka_error_warnings(client_log: KafkaClientLog) -> None:
    with capture_logs() as logs:
        client_log.on_error(error(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert [(e["event"], e["log_level"]) for e in logs] == [("kafka_error", "warning")]
    assert "hint" not in logs[0]
