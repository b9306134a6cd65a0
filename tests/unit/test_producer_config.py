"""The producer's settings: idempotence, acks=all and no message timeout forced, extras merged,
weakening refused."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import Producer

from sidecar.errors import ConfigError
from sidecar.kafka import producer as producer_module
from sidecar.kafka.ports import PRODUCER_MESSAGE_MAX_BYTES
from sidecar.kafka.producer import producer_config, producer_factory


def test_required_settings_are_always_present() -> None:
    config = producer_config("broker:9092", {})
    assert config["enable.idempotence"] == "true"
    assert config["acks"] == "all"
    assert config["bootstrap.servers"] == "broker:9092"
    assert config["message.timeout.ms"] == "0"  # unlimited: a timeout could reorder a key
    assert config["message.max.bytes"] == PRODUCER_MESSAGE_MAX_BYTES


def test_extras_are_merged() -> None:
    extra = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "ferry",
        "sasl.password": "s3cret",
        "linger.ms": "10",
    }
    config = producer_config("broker:9092", extra)
    for key, value in extra.items():
        assert config[key] == value
    assert config["enable.idempotence"] == "true"
    assert config["acks"] == "all"


def test_restating_the_required_values_is_fine() -> None:
    config = producer_config(
        "b:1", {"enable.idempotence": "TRUE", "acks": "all", "request.required.acks": "-1"}
    )
    assert config["enable.idempotence"] == "true"
    assert config["acks"] == "all"


@pytest.mark.parametrize(
    "extra",
    [
        {"enable.idempotence": "false"},
        {"acks": "1"},
        {"acks": "0"},
        {"request.required.acks": "1"},  # librdkafka's other name for acks
        {"message.timeout.ms": "30000"},
        {"delivery.timeout.ms": "120000"},  # librdkafka's other name for message.timeout.ms
    ],
)
def test_weakening_is_refused(extra: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(extra))):
        producer_config("b:1", extra)


def test_factory_refuses_weak_settings_before_building_any_producer() -> None:
    with pytest.raises(ConfigError):
        producer_factory("b:1", {"acks": "1"})


def test_factory_passes_the_config_logger_and_error_callback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[dict[str, Any]] = []

    class RecordingProducer:
        def __init__(self, config: dict[str, Any]) -> None:
            built.append(config)

    monkeypatch.setattr(producer_module, "Producer", RecordingProducer)
    make = producer_factory("b:1", {"sasl.password": "pw"})
    errors: list[Any] = []
    make(errors.append)
    make(errors.append)
    assert len(built) == 2
    assert built[0]["sasl.password"] == "pw"
    assert built[0]["acks"] == "all"
    assert isinstance(built[0]["logger"], logging.Logger)  # librdkafka's lines as JSON
    assert built[0]["logger"] is not built[1]["logger"]

    class FatalError:
        def name(self) -> str:
            return "_FATAL"

        def str(self) -> str:
            return "fenced"

        def fatal(self) -> bool:
            return True

    error = FatalError()
    built[0]["error_cb"](error)  # logged, then handed on
    assert errors == [error]


def test_librdkafka_accepts_the_config() -> None:
    """Every key Ferry sets is a real librdkafka property (a typo fails here, not at start)."""
    config = producer_config("127.0.0.1:1", {"client.id": "unit-test"})
    errors: list[Any] = []
    producer = Producer({**config, "error_cb": errors.append, "log_level": 0})
    try:
        assert producer.flush(0) == 0
    finally:
        del producer
