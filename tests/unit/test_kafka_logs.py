"""librdkafka's log lines and error reports: structured, rate-limited per condition, masked."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Producer
from structlog.testing import capture_logs

from sidecar.clock import ManualClock
from sidecar.observability.kafka_logs import KafkaClientLog
from sidecar.observability.repeats import RepeatLimiter

REFUSED = (
    "[thrd:127.0.0.1:9092/bootstrap]: 127.0.0.1:9092/bootstrap: Connect to "
    "ipv4#127.0.0.1:9092 failed: Connection refused (after {ms}ms in state CONNECT)"
)


# -- librdkafka --------------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client_log(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> KafkaClientLog:
    caplog.set_level(logging.DEBUG)  # the client's logger starts at the root logger's level
    config = {"bootstrap.servers": "b:1", "sasl.password": "hunter2secret"}
    return KafkaClientLog("consumer", config, group="orders", limiter=RepeatLimiter(30.0, clock))


def _rdkafka(client_log: KafkaClientLog, level: int, fac: str, text: str) -> None:
    """What confluent-kafka does with each librdkafka line (src/confluent_kafka.c, log_cb)."""
    client_log.logger.log(level, "%s [%s] %s", fac, "ferry-orders#consumer-1", text)


class FakeError:
    def __init__(self, name: str, text: str, fatal: bool = False) -> None:
        self._name, self._text, self._fatal = name, text, fatal

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._text

    def fatal(self) -> bool:
        return self._fatal


def test_a_librdkafka_line_becomes_structured_fields(client_log: KafkaClientLog) -> None:
    with capture_logs() as logs:
        _rdkafka(client_log, logging.ERROR, "FAIL", REFUSED.format(ms=0))
    assert logs == [
        {
            "event": "librdkafka",
            "log_level": "error",
            "client": "consumer",
            "group": "orders",
            "instance": "ferry-orders#consumer-1",
            "fac": "FAIL",
            "severity": 3,
            "thread": "127.0.0.1:9092/bootstrap",
            "message": REFUSED.format(ms=0).split("]: ", 1)[1],
        }
    ]


def test_repeats_of_a_condition_are_one_line_per_interval_with_the_count(
    client_log: KafkaClientLog, clock: ManualClock
) -> None:
    with capture_logs() as logs:
        for i in range(60):  # one failure every 0.5 s, each reported as a line and an error
            text = REFUSED.format(ms=i)
            _rdkafka(client_log, logging.ERROR, "FAIL", text)
            client_log.on_error(FakeError("_TRANSPORT", text.split("]: ", 1)[1]))
            clock.advance(0.5)
        # librdkafka's own count of what it suppressed does not make another condition
        again = REFUSED.format(ms=3)[:-1] + ", 5 identical error(s) suppressed)"
        _rdkafka(client_log, logging.ERROR, "FAIL", again)
    assert [(e["event"], e.get("repeated")) for e in logs] == [
        ("librdkafka", None),
        ("librdkafka", 60 * 2 - 1),  # 60 failures in 30 s, each twice, less the first line
    ]


def test_other_conditions_and_fatal_errors_get_through(
    client_log: KafkaClientLog, clock: ManualClock
) -> None:
    with capture_logs() as logs:
        _rdkafka(client_log, logging.ERROR, "FAIL", REFUSED.format(ms=0))
        client_log.on_error(FakeError("_ALL_BROKERS_DOWN", "1/1 brokers are down"))
        client_log.on_error(FakeError("_ALL_BROKERS_DOWN", "1/1 brokers are down"))
        client_log.on_error(FakeError("_FENCED", "producer fenced", fatal=True))
        client_log.on_error(FakeError("_FENCED", "producer fenced", fatal=True))
        _rdkafka(client_log, logging.DEBUG, "BROKER", "sent ApiVersionRequest")
        _rdkafka(client_log, logging.DEBUG, "BROKER", "sent ApiVersionRequest")
    assert [(e["event"], e["log_level"], e.get("code")) for e in logs] == [
        ("librdkafka", "error", None),
        ("kafka_error", "warning", "_ALL_BROKERS_DOWN"),
        ("kafka_error", "error", "_FENCED"),
        ("kafka_error", "error", "_FENCED"),
        ("librdkafka", "debug", None),
        ("librdkafka", "debug", None),
    ]


def test_config_lines_and_secret_values_are_masked(client_log: KafkaClientLog) -> None:
    with capture_logs() as logs:
        _rdkafka(client_log, logging.DEBUG, "CONF", "[thrd:app]:   sasl.password = plaintext")
        _rdkafka(client_log, logging.DEBUG, "CONF", "[thrd:app]:   sasl.password = [redacted]")
        _rdkafka(client_log, logging.DEBUG, "CONF", "[thrd:app]:   ssl.keystore.password = x")
        _rdkafka(client_log, logging.DEBUG, "CONF", "[thrd:app]:   bootstrap.servers = b:1")
        _rdkafka(client_log, logging.ERROR, "SASL", "auth failed with hunter2secret")
    assert [e["message"] for e in logs] == [
        "sasl.password = ***",
        "sasl.password = [redacted]",
        "ssl.keystore.password = ***",
        "bootstrap.servers = b:1",
        "auth failed with ***",
    ]


def test_a_real_client_hands_its_lines_to_the_logger_at_poll(
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = {"bootstrap.servers": "127.0.0.1:1", "client.id": "unit-json-logs"}
    client_log = KafkaClientLog("producer", config, limiter=RepeatLimiter(30.0, ManualClock()))
    producer = Producer({**config, "logger": client_log.logger, "error_cb": client_log.on_error})
    try:
        with capture_logs() as logs:
            deadline = time.monotonic() + 10
            while not any(e["event"] == "librdkafka" for e in logs):
                assert time.monotonic() < deadline, f"no librdkafka line: {logs}"
                producer.poll(0.1)
    finally:
        del producer
    line = next(e for e in logs if e["event"] == "librdkafka")
    assert line["fac"] == "FAIL"
    assert line["instance"].startswith("unit-json-logs#producer-")
    assert "Connection refused" in line["message"]
    assert "%3|" not in capfd.readouterr().err


def test_an_error_report_that_cannot_be_read_is_logged_not_raised(
    client_log: KafkaClientLog,
) -> None:
    with capture_logs() as logs:
        client_log.on_error(object())  # raising here would stop the client's poll()
    assert [e["event"] for e in logs] == ["kafka_error_not_logged"]
