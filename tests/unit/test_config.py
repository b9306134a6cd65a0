"""Settings: defaults, FERRY_* environment, precedence, validation, secrets never shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from sidecar.cli import main
from sidecar.config import (
    KIB,
    MIB,
    Settings,
    is_env_only,
    load_settings,
)
from sidecar.errors import ConfigError
from sidecar.kafka.ports import PRODUCER_MESSAGE_MAX_BYTES

SECRET = "hunter2-Zq9"  # a value that must never appear in any rendering of the settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FERRY_"):
            monkeypatch.delenv(name)


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return str(info.value)


def test_defaults() -> None:
    s = load_settings()
    assert s.listen == "127.0.0.1:50051"
    assert s.listen_host == "127.0.0.1"
    assert s.insecure_bind_all is False
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.kafka_options == {}
    assert s.librdkafka_options() == {}
    assert s.data_dir == Path("data")
    assert s.log_level == "info"
    assert s.forwarder_mode == "process"
    assert s.max_event_bytes == 1 * MIB - 64 * KIB
    assert s.max_event_bytes <= PRODUCER_MESSAGE_MAX_BYTES - 16 * KIB
    assert s.max_batch_events == 1000
    assert s.max_headers == 64
    assert s.topic_allowlist == frozenset()
    assert s.wal_max_bytes == 1024 * MIB
    assert s.wal_max_rows == 5_000_000
    assert s.dedupe_window_s == 86_400.0
    assert s.kafka_wait_s == 30.0
    assert s.drain_grace_s == 10.0
    assert s.forwarder_max_in_flight == 20_000
    assert s.retry_max_backoff_s == 30.0


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FERRY_LISTEN", "127.0.0.1:6000")
    monkeypatch.setenv("FERRY_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("FERRY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FERRY_MAX_HEADERS", "7")
    monkeypatch.setenv("FERRY_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("FERRY_TOPIC_ALLOWLIST", " orders, payments ,,")
    monkeypatch.setenv("FERRY_KAFKA_OPTIONS", f"sasl.username=ferry, sasl.password={SECRET}=x")
    monkeypatch.setenv("FERRY_DEDUPE_WINDOW_S", "0")
    s = load_settings()
    assert s.listen == "127.0.0.1:6000"
    assert s.kafka_bootstrap == "k1:9092,k2:9092"
    assert s.data_dir == tmp_path
    assert s.max_headers == 7
    assert s.log_level == "debug"
    assert s.topic_allowlist == frozenset({"orders", "payments"})
    # Only the first "=" separates key and value.
    assert s.librdkafka_options() == {"sasl.username": "ferry", "sasl.password": f"{SECRET}=x"}
    assert s.dedupe_window_s == 0.0


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_MAX_HEADERS", "7")
    monkeypatch.setenv("FERRY_LISTEN", "127.0.0.1:6000")
    s = load_settings(max_headers=9, listen="127.0.0.1:7000")
    assert s.max_headers == 9
    assert s.listen == "127.0.0.1:7000"


def test_bad_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_MAX_HEADERS", "lots")
    assert "max_headers" in config_error()


def test_unknown_override_is_refused() -> None:
    assert "no_such_setting" in config_error(no_such_setting=1)


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.max_headers = 3


# -- listen ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host"),
    [
        ("127.0.0.1:1", "127.0.0.1"),
        ("127.9.8.7:50051", "127.9.8.7"),
        ("localhost:50051", "localhost"),
        ("[::1]:50051", "::1"),
    ],
)
def test_loopback_listen_is_accepted(listen: str, host: str) -> None:
    s = load_settings(listen=listen)
    assert s.listen_host == host


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:50051", "10.1.2.3:50051", "[::]:50051", "example.com:50051"]
)
def test_non_loopback_listen_needs_insecure_bind_all(listen: str) -> None:
    message = config_error(listen=listen)
    assert "listen" in message
    assert "insecure-bind-all" in message
    assert load_settings(listen=listen, insecure_bind_all=True).listen == listen


@pytest.mark.parametrize(
    "listen", ["127.0.0.1", ":50051", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", ""]
)
def test_malformed_listen_is_refused(listen: str) -> None:
    assert "listen" in config_error(listen=listen)


# -- kafka options and secrets -----------------------------------------------------------------


def test_kafka_options_parsing() -> None:
    s = load_settings(kafka_options=" a=1 , b = two ,, c= ")
    assert s.librdkafka_options() == {"a": "1", "b": "two", "c": ""}


@pytest.mark.parametrize("bad", ["novalue", "a=1,novalue", "=v", " =v"])
def test_malformed_kafka_options_are_refused(bad: str) -> None:
    assert "kafka_options" in config_error(kafka_options=bad)


def test_kafka_options_as_a_mapping() -> None:
    s = load_settings(kafka_options={"sasl.password": SECRET})
    assert s.librdkafka_options() == {"sasl.password": SECRET}


@pytest.mark.parametrize("key", ["enable.idempotence", "acks", "bootstrap.servers"])
def test_kafka_options_may_not_override_delivery_settings(key: str) -> None:
    message = config_error(kafka_options=f"{key}=whatever")
    assert "kafka_options" in message
    assert key in message


def secret_settings() -> Settings:
    return load_settings(
        kafka_options=f"sasl.username=ferry,sasl.password={SECRET},ssl.key.password={SECRET}2"
    )


def test_describe_masks_every_kafka_option_value() -> None:
    s = secret_settings()
    shown = s.describe()
    assert shown["kafka_options"] == {
        "sasl.username": "***",
        "sasl.password": "***",
        "ssl.key.password": "***",
    }
    rendered = json.dumps(shown)
    assert SECRET not in rendered
    assert "ferry" not in json.dumps(shown["kafka_options"])
    assert shown["listen"] == "127.0.0.1:50051"  # the rest is shown as is


def test_str_and_repr_never_show_secret_values() -> None:
    s = secret_settings()
    assert SECRET not in str(s)
    assert SECRET not in repr(s)
    assert SECRET not in str(s.kafka_options)
    assert SECRET not in s.model_dump_json()
    assert s.librdkafka_options()["sasl.password"] == SECRET  # but the producer gets it


def test_config_error_does_not_show_secret_values() -> None:
    message = config_error(kafka_options=f"sasl.password={SECRET},acks=1", max_headers=0)
    assert SECRET not in message
    assert "max_headers" in message


# -- limits --------------------------------------------------------------------------------------


def test_max_event_bytes_must_fit_into_a_produce_request() -> None:
    top = PRODUCER_MESSAGE_MAX_BYTES - 16 * KIB
    assert load_settings(max_event_bytes=top).max_event_bytes == top
    for bad in (top + 1, PRODUCER_MESSAGE_MAX_BYTES, 0, -1):
        assert "max_event_bytes" in config_error(max_event_bytes=bad)


@pytest.mark.parametrize(
    "field",
    [
        "max_batch_events",
        "max_headers",
        "wal_max_bytes",
        "wal_max_rows",
        "forwarder_max_in_flight",
    ],
)
def test_counts_must_be_positive(field: str) -> None:
    assert field in config_error(**{field: 0})
    assert field in config_error(**{field: -5})
    assert getattr(load_settings(**{field: 1}), field) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dedupe_window_s", -1.0),
        ("kafka_wait_s", 0.0),
        ("kafka_wait_s", -1.0),
        ("drain_grace_s", -0.5),
    ],
)
def test_durations_are_checked(field: str, value: float) -> None:
    assert field in config_error(**{field: value})


def test_zero_dedupe_window_and_drain_grace_are_allowed() -> None:
    s = load_settings(dedupe_window_s=0, drain_grace_s=0)
    assert s.dedupe_window_s == 0
    assert s.drain_grace_s == 0


def test_negative_retry_backoff_is_refused() -> None:
    assert "retry_max_backoff_s" in config_error(retry_max_backoff_s=-1.0)


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error"])
def test_log_levels(level: str) -> None:
    assert load_settings(log_level=level).log_level == level.lower()


def test_unknown_log_level_is_refused() -> None:
    assert "log_level" in config_error(log_level="verbose")


@pytest.mark.parametrize("mode", ["process", "THREAD", "Thread"])
def test_forwarder_modes(mode: str) -> None:
    assert load_settings(forwarder_mode=mode).forwarder_mode == mode.lower()


def test_unknown_forwarder_mode_is_refused() -> None:
    error = config_error(forwarder_mode="fork")
    assert "forwarder_mode" in error
    assert "process or thread" in error


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_topic_share_is_a_fraction(share: float) -> None:
    assert "wal_topic_share" in config_error(wal_topic_share=share)


def test_the_request_limit_follows_the_event_limits() -> None:
    s = load_settings(max_event_bytes=1000, max_batch_events=3)
    assert s.max_request_bytes >= 3 * 1000 + 3 * 377  # each event's topic and event id too
    assert s.max_request_bytes < 64 * 1024


def test_a_request_limit_over_two_gib_is_refused() -> None:
    assert "max_batch_events" in config_error(max_batch_events=100_000)


def test_serve_help_prints_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, field in Settings.model_fields.items():
        shown = f"--{name.replace('_', '-')}" in out
        assert shown is not is_env_only(field), name
    assert "25%" in out


def test_metrics_listen_is_host_port_or_empty() -> None:
    assert load_settings().metrics_listen == "127.0.0.1:9464"
    assert load_settings(metrics_listen="").metrics_listen == ""
    assert load_settings(metrics_listen=" [::]:9464 ").metrics_listen == "[::]:9464"
    with pytest.raises(ConfigError, match=r"metrics_listen: .*expected host:port"):
        load_settings(metrics_listen="9464")
    with pytest.raises(ConfigError, match="metrics_listen"):
        load_settings(metrics_listen="0.0.0.0:99999")
