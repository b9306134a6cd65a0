"""Every `ferry serve` setting can be set through the chart's values: those the chart manages
through values of their own (listen, TLS, secrets, Kafka connection...), every other one through
`config`, typed by values.schema.json. The list comes from Settings.model_fields, so a setting
Ferry gains that the chart cannot reach fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.config import Settings
from testkit.chart import CHART_DIR, Chart, env_entry, env_values, ferry_container, pod_spec
from tools.chart_schema import SCHEMA, managed_settings, schema_with_config

#: A managed setting -> values that set it, and the FERRY_* value it then has in the container
#: (None: it comes from a Secret through valueFrom, never as a value).
TLS = {"secretName": "ferry-tls", "serverName": "ferry.shop.svc"}
MANAGED: dict[str, tuple[dict[str, Any], str | None]] = {
    "listen": ({"listen": {"port": 6001}}, "0.0.0.0:6001"),
    "listen_socket_mode": ({"listen": {"mode": "unix", "socketMode": "0600"}}, "0600"),
    "insecure_bind_all": ({}, "true"),
    "tls_cert": ({"tls": TLS}, "/etc/ferry/tls/tls.crt"),
    "tls_key": ({"tls": TLS}, "/etc/ferry/tls/tls.key"),
    "tls_client_ca": (
        {"tls": {**TLS, "clientAuth": True, "probeClientSecretName": "p"}},
        "/etc/ferry/tls/ca.crt",
    ),
    "token_file": (
        {"tokens": {"files": [{"secretName": "t", "key": "k"}]}},
        "/etc/ferry/tokens/0/k",
    ),
    "tokens": ({"tokens": {"secretName": "t", "key": "k"}}, None),
    "policy_file": ({"policy": {"configMapName": "p"}}, "/etc/ferry/policy/policy.yaml"),
    "data_dir": ({"wal": {"mountPath": "/data"}}, "/data/wal"),
    "metrics_listen": ({"metrics": {"port": 9100}}, "0.0.0.0:9100"),
    "drain_grace_s": ({"drainGraceSeconds": 25}, "25"),
    "kafka_bootstrap": ({"kafka": {"bootstrap": "k1:9093,k2:9093"}}, "k1:9093,k2:9093"),
    "kafka_security_protocol": ({"kafka": {"securityProtocol": "SSL"}}, "SSL"),
    "kafka_sasl_mechanism": ({"kafka": {"sasl": {"mechanism": "PLAIN"}}}, "PLAIN"),
    "kafka_sasl_username": ({"kafka": {"sasl": {"username": "u"}}}, "u"),
    "kafka_sasl_password_file": (
        {"kafka": {"sasl": {"username": "u", "passwordSecret": {"name": "s", "key": "pw"}}}},
        "/etc/ferry/kafka/sasl/pw",
    ),
    "kafka_oauth_client_id": ({"kafka": {"oauth": {"clientId": "c"}}}, "c"),
    "kafka_oauth_client_secret_file": (
        {"kafka": {"oauth": {"clientSecretSecret": {"name": "s", "key": "cs"}}}},
        "/etc/ferry/kafka/oauth/cs",
    ),
    "kafka_oauth_token_endpoint": (
        {"kafka": {"oauth": {"tokenEndpoint": "https://idp/token"}}},
        "https://idp/token",
    ),
    "kafka_oauth_scope": ({"kafka": {"oauth": {"scope": "kafka"}}}, "kafka"),
    "kafka_ssl_ca": (
        {"kafka": {"tls": {"caSecret": {"name": "ca", "key": "ca.pem"}}}},
        "/etc/ferry/kafka/ca/ca.pem",
    ),
    "kafka_ssl_cert": (
        {"kafka": {"tls": {"clientCertSecretName": "c"}}},
        "/etc/ferry/kafka/client/tls.crt",
    ),
    "kafka_ssl_key": (
        {"kafka": {"tls": {"clientCertSecretName": "c"}}},
        "/etc/ferry/kafka/client/tls.key",
    ),
    "kafka_ssl_key_password_file": (
        {"kafka": {"tls": {"keyPasswordSecret": {"name": "k", "key": "kp"}}}},
        "/etc/ferry/kafka/key-password/kp",
    ),
    "kafka_ssl_verify": ({"kafka": {"tls": {"verifyHostname": False}}}, "false"),
}
#: A value of each JSON type for `config` (within every setting's bounds), and how its FERRY_*
#: variable reads.
SAMPLES: dict[str, tuple[Any, str]] = {
    "boolean": (False, "false"),
    "integer": (1048576, "1048576"),
    "number": (0.5, "0.5"),
    "string": ("warning", "warning"),
    "array": (["orders", "payments"], "orders,payments"),
    "object": ({"linger.ms": 5, "compression.type": "zstd"}, "compression.type=zstd,linger.ms=5"),
}
#: Settings the chart manages that Ferry is about to have (the metrics listener).
UPCOMING = {"metrics_listen"}


def _sample(schema: dict[str, Any]) -> tuple[Any, str]:
    if "enum" in schema:
        return schema["enum"][-1], schema["enum"][-1]
    kind = schema["type"]
    return SAMPLES[kind[0] if isinstance(kind, list) else kind]


def _config_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())["properties"]["config"]
    return schema


def test_every_setting_is_managed_or_in_config() -> None:
    managed = set(managed_settings())
    in_config = set(_config_schema()["properties"])
    fields = set(Settings.model_fields)
    assert not managed & in_config
    assert fields <= managed | in_config, f"unreachable settings: {fields - managed - in_config}"
    assert managed <= fields | UPCOMING, f"managed names Ferry lacks: {managed - fields}"


def test_the_committed_schema_has_the_config_section_derived_from_settings() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == schema_with_config(committed), (
        "helm/ferry/values.schema.json is stale: run python tools/chart_schema.py"
    )


@pytest.mark.parametrize("name", sorted(set(Settings.model_fields) - set(managed_settings())))
def test_setting_reaches_ferry_through_config(chart: Chart, name: str) -> None:
    value, expected = _sample(_config_schema()["properties"][name])
    ferry = ferry_container(pod_spec(chart.render(values={f"config.{name}": value})))
    assert env_values(ferry)[f"FERRY_{name.upper()}"] == expected


@pytest.mark.parametrize("name", sorted(set(Settings.model_fields) & set(managed_settings())))
def test_managed_setting_reaches_ferry_through_its_values(chart: Chart, name: str) -> None:
    assert name in MANAGED, f"tests/chart: say how {name} is set through the chart's values"
    values, expected = MANAGED[name]
    ferry = ferry_container(pod_spec(chart.render(values=values)))
    variable = f"FERRY_{name.upper()}"
    if expected is None:
        assert "valueFrom" in env_entry(ferry, variable)
    else:
        assert env_values(ferry)[variable] == expected


def test_metrics_listen_is_set_for_the_metrics_port(chart: Chart) -> None:
    values, expected = MANAGED["metrics_listen"]
    ferry = ferry_container(pod_spec(chart.render(values=values)))
    assert env_values(ferry)["FERRY_METRICS_LISTEN"] == expected
    off = ferry_container(pod_spec(chart.render(values={"metrics": {"enabled": False}})))
    assert env_values(off)["FERRY_METRICS_LISTEN"] == "", "empty turns the listener off"
    assert "ferry-metrics" not in [p["name"] for p in off["ports"]]


@pytest.mark.parametrize("name", sorted(managed_settings()))
def test_config_refuses_a_managed_setting(chart: Chart, name: str) -> None:
    assert f"'{name}' not allowed" in chart.render_error(values={f"config.{name}": "x"})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"listen.port": "50051"}, "/listen/port"),
        ({"listen.port": 70000}, "/listen/port"),
        ({"listen.mode": "tcp6"}, "/listen/mode"),
        ({"nativeSidecar": "yes"}, "/nativeSidecar"),
        ({"drainGraceSeconds": "ten"}, "/drainGraceSeconds"),
        ({"kafka.securityProtocol": "TLS"}, "/kafka/securityProtocol"),
        ({"probes.readiness.periodSeconds": 0}, "/probes/readiness/periodSeconds"),
        ({"wal.emptyDir.sizeLimit": "lots"}, "/wal/emptyDir/sizeLimit"),
        ({"config.wal_max_bytes": "1GiB"}, "/config/wal_max_bytes"),
        ({"config.wal_topic_share": "half"}, "/config/wal_topic_share"),
        ({"config.wal_topic_share": 1.5}, "/config/wal_topic_share"),
        ({"config.reflection": "off"}, "/config/reflection"),
        ({"config.no_such_setting": 1}, "/config"),
        (
            {"workload.terminationGracePeriodSeconds": "60"},
            "/workload/terminationGracePeriodSeconds",
        ),
        ({"typo": True}, "typo"),
    ],
)
def test_schema_rejects_wrong_types(chart: Chart, values: dict[str, Any], where: str) -> None:
    error = chart.render_error(values=values)
    assert "don't meet the specifications of the schema" in error
    assert where in error


def test_image_tag_is_the_chart_app_version_and_ferrys_version() -> None:
    import tomllib

    chart_yaml = (CHART_DIR / "Chart.yaml").read_text()
    values = (CHART_DIR / "values.yaml").read_text()
    with open(CHART_DIR.parents[1] / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert f'appVersion: "{version}"' in chart_yaml
    assert f'  tag: "{version}"' in values.split("\napp:")[0]
