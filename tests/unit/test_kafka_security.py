"""Kafka security settings: the librdkafka options they make, every invalid combination refused
naming its flag, secrets read from files and never shown, warnings at start."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar.cli import _parser, main
from sidecar.config import Settings, load_settings
from sidecar.config_kafka import KAFKA_SECURITY_OPTIONS
from sidecar.errors import ConfigError
from sidecar.kafka.security import (
    kafka_client_options,
    log_security_warnings,
    read_secret,
    security_options,
)
from testkit.kafka_certs import KafkaCerts, make_kafka_certs

PASSWORD = "sasl-Pw-8842"  # values that must never appear in a rendering of the settings
CLIENT_SECRET = "oidc-Secret-5531"
VERIFY = {"enable.ssl.certificate.verification": "true"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FERRY_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> KafkaCerts:
    return make_kafka_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    files = {
        "password": tmp_path / "password",
        "client_secret": tmp_path / "client-secret",
        "empty": tmp_path / "empty",
    }
    files["password"].write_text(PASSWORD + "\n")  # as `echo` writes it
    files["client_secret"].write_text(CLIENT_SECRET)
    files["empty"].write_text("\n")
    return files


def config_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as info:
        kafka_client_options(load_settings(**overrides))
    return str(info.value)


def scram(secrets: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "ferry",
        "kafka_sasl_password_file": secrets["password"],
        **more,
    }


def oauth(secrets: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "OAUTHBEARER",
        "kafka_oauth_client_id": "ferry-client",
        "kafka_oauth_client_secret_file": secrets["client_secret"],
        "kafka_oauth_token_endpoint": "https://idp.example/oauth2/token",
        **more,
    }


# -- the options they make ---------------------------------------------------------------------


def test_without_a_protocol_only_kafka_options_are_passed() -> None:
    s = load_settings(kafka_options="sasl.username=u,security.protocol=SASL_SSL,linger.ms=5")
    assert security_options(s) == {}
    assert kafka_client_options(s) == s.librdkafka_options()
    assert kafka_client_options(load_settings()) == {}


def test_plaintext() -> None:
    s = load_settings(kafka_security_protocol="PLAINTEXT")
    assert kafka_client_options(s) == {"security.protocol": "PLAINTEXT"}


def test_ssl_with_the_system_cas_verifies_host_names() -> None:
    options = kafka_client_options(load_settings(kafka_security_protocol="SSL"))
    assert options == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
        **VERIFY,
    }


def test_ssl_with_ca_and_client_certificate(certs: KafkaCerts, tmp_path: Path) -> None:
    key_password = tmp_path / "key-password"
    key_password.write_text(certs.client_key_password)
    s = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca=certs.ca,
        kafka_ssl_cert=certs.client_cert,
        kafka_ssl_key=certs.client_key,
        kafka_ssl_key_password_file=key_password,
    )
    assert kafka_client_options(s) == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
        **VERIFY,
        "ssl.ca.location": str(certs.ca),
        "ssl.certificate.location": str(certs.client_cert),
        "ssl.key.location": str(certs.client_key),
        "ssl.key.password": certs.client_key_password,
    }


def test_ssl_verify_off_checks_the_chain_but_not_host_names(certs: KafkaCerts) -> None:
    s = load_settings(kafka_security_protocol="SSL", kafka_ssl_ca=certs.ca, kafka_ssl_verify=False)
    options = kafka_client_options(s)
    assert options["ssl.endpoint.identification.algorithm"] == "none"
    assert options["enable.ssl.certificate.verification"] == "true"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_with_a_password(secrets: dict[str, Path], protocol: str, mechanism: str) -> None:
    overrides = scram(secrets, kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism)
    s = load_settings(**overrides)
    expected = {
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.username": "ferry",
        "sasl.password": PASSWORD,  # without the file's line break
    }
    if protocol == "SASL_SSL":
        expected |= {"ssl.endpoint.identification.algorithm": "https", **VERIFY}
    assert kafka_client_options(s) == expected


@pytest.mark.parametrize("scope", [None, "kafka.produce kafka.consume"])
def test_oauthbearer_uses_oidc_client_credentials(
    secrets: dict[str, Path], scope: str | None
) -> None:
    s = load_settings(**oauth(secrets, kafka_oauth_scope=scope))
    expected = {
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "https",
        **VERIFY,
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "ferry-client",
        "sasl.oauthbearer.client.secret": CLIENT_SECRET,
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/oauth2/token",
    }
    if scope is not None:
        expected["sasl.oauthbearer.scope"] = scope
    assert kafka_client_options(s) == expected


def test_kafka_options_are_kept_beside_the_security_options(secrets: dict[str, Path]) -> None:
    s = load_settings(**scram(secrets), kafka_options="linger.ms=7,ssl.cipher.suites=HIGH")
    options = kafka_client_options(s)
    assert options["linger.ms"] == "7"
    assert options["ssl.cipher.suites"] == "HIGH"
    assert options["sasl.password"] == PASSWORD


def test_protocol_and_mechanism_ignore_case_and_empty_values_mean_unset(
    secrets: dict[str, Path],
) -> None:
    lower = scram(
        secrets, kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism=" scram-sha-256"
    )
    s = load_settings(**lower)
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    s = load_settings(kafka_security_protocol="", kafka_ssl_ca="", kafka_sasl_username=" ")
    assert (s.kafka_security_protocol, s.kafka_ssl_ca, s.kafka_sasl_username) == (None,) * 3


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, secrets: dict[str, Path]) -> None:
    monkeypatch.setenv("FERRY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FERRY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("FERRY_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("FERRY_KAFKA_SASL_PASSWORD_FILE", str(secrets["password"]))
    monkeypatch.setenv("FERRY_KAFKA_SSL_VERIFY", "false")
    options = kafka_client_options(load_settings())
    assert options["sasl.username"] == "alice"
    assert options["sasl.password"] == PASSWORD
    assert options["ssl.endpoint.identification.algorithm"] == "none"


# -- invalid combinations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"kafka_sasl_mechanism": "PLAIN"}, "--kafka-sasl-mechanism needs --kafka-security-"),
        ({"kafka_ssl_ca": "/ca.pem"}, "--kafka-ssl-ca needs --kafka-security-protocol"),
        ({"kafka_ssl_verify": False}, "--kafka-ssl-verify needs --kafka-security-protocol"),
        ({"kafka_oauth_scope": "x"}, "--kafka-oauth-scope needs --kafka-security-protocol"),
        (
            {"kafka_security_protocol": "SSL", "kafka_sasl_mechanism": "PLAIN"},
            "--kafka-sasl-mechanism needs --kafka-security-protocol SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "PLAINTEXT", "kafka_sasl_username": "u"},
            "--kafka-sasl-username needs --kafka-security-protocol SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
             "kafka_sasl_username": "u", "kafka_sasl_password_file": "/p", "kafka_ssl_ca": "/c"},
            "--kafka-ssl-ca needs --kafka-security-protocol SSL or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_verify": False},
            "--kafka-ssl-verify needs --kafka-security-protocol SSL or SASL_SSL",
        ),
        ({"kafka_security_protocol": "SASL_SSL"}, "SASL_SSL needs --kafka-sasl-mechanism"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-256",
             "kafka_sasl_username": "u"},
            "SCRAM-SHA-256 needs --kafka-sasl-password-file",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
             "kafka_sasl_password_file": "/p"},
            "PLAIN needs --kafka-sasl-username",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
             "kafka_sasl_username": "u", "kafka_sasl_password_file": "/p",
             "kafka_oauth_client_id": "c"},
            "--kafka-oauth-client-id needs --kafka-sasl-mechanism OAUTHBEARER",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
            "OAUTHBEARER needs --kafka-oauth-client-id",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER",
             "kafka_oauth_client_id": "c", "kafka_oauth_client_secret_file": "/s"},
            "OAUTHBEARER needs --kafka-oauth-token-endpoint",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER",
             "kafka_oauth_client_id": "c", "kafka_oauth_token_endpoint": "https://i/t"},
            "OAUTHBEARER needs --kafka-oauth-client-secret-file",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER",
             "kafka_oauth_client_id": "c", "kafka_oauth_client_secret_file": "/s",
             "kafka_oauth_token_endpoint": "idp.example/token"},
            "--kafka-oauth-token-endpoint: expected an https:// URL",
        ),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER",
             "kafka_oauth_client_id": "c", "kafka_oauth_client_secret_file": "/s",
             "kafka_oauth_token_endpoint": "https://i/t", "kafka_sasl_username": "u"},
            "--kafka-sasl-username is for PLAIN and SCRAM",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cert": "/c.pem"},
            "--kafka-ssl-cert and --kafka-ssl-key go together",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key": "/k.pem"},
            "--kafka-ssl-cert and --kafka-ssl-key go together",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_password_file": "/p"},
            "--kafka-ssl-key-password-file needs --kafka-ssl-key",
        ),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"},
            "kafka_sasl_mechanism",
        ),
    ],
)  # fmt: skip
def test_invalid_combinations_are_refused_naming_the_flag(
    overrides: dict[str, Any], named: str
) -> None:
    assert named in config_error(**overrides)


@pytest.mark.parametrize("key", sorted(KAFKA_SECURITY_OPTIONS))
def test_kafka_options_may_not_set_what_a_security_flag_sets(key: str) -> None:
    message = config_error(kafka_security_protocol="PLAINTEXT", kafka_options=f"{key}=x")
    assert f"kafka_options may not set {key}" in message
    assert KAFKA_SECURITY_OPTIONS[key] in message
    # Without the security settings, --kafka-options may carry them as before.
    assert load_settings(kafka_options=f"{key}=x").librdkafka_options() == {key: "x"}


def test_every_problem_is_named_at_once() -> None:
    message = config_error(
        kafka_security_protocol="SSL", kafka_ssl_cert="/c", kafka_oauth_scope="s"
    )
    assert "--kafka-oauth-scope needs" in message
    assert "--kafka-ssl-cert and --kafka-ssl-key go together" in message


# -- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "flag"),
    [
        ("kafka_sasl_password_file", "--kafka-sasl-password-file"),
        ("kafka_oauth_client_secret_file", "--kafka-oauth-client-secret-file"),
    ],
)
def test_missing_or_empty_secret_files_are_refused(
    secrets: dict[str, Path], tmp_path: Path, setting: str, flag: str
) -> None:
    base = scram(secrets) if setting == "kafka_sasl_password_file" else oauth(secrets)
    missing = tmp_path / "no-such-file"
    message = config_error(**{**base, setting: missing})
    assert message.startswith(f"{flag}: cannot read {missing}")
    assert "No such file" in message
    assert (
        config_error(**{**base, setting: secrets["empty"]})
        == f"{flag}: {secrets['empty']} is empty"
    )
    assert f"{flag}: cannot read" in config_error(**{**base, setting: tmp_path})  # a directory


def test_secret_files_keep_inner_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(" two words \r\n")
    assert read_secret(path, "kafka_sasl_password_file") == " two words "
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"--kafka-sasl-password-file: cannot read .*UTF-8"):
        read_secret(path, "kafka_sasl_password_file")


@pytest.mark.parametrize(
    ("setting", "flag"),
    [("kafka_ssl_ca", "--kafka-ssl-ca"), ("kafka_ssl_cert", "--kafka-ssl-cert"),
     ("kafka_ssl_key", "--kafka-ssl-key"),
     ("kafka_ssl_key_password_file", "--kafka-ssl-key-password-file")],
)  # fmt: skip
def test_missing_tls_files_are_refused(
    certs: KafkaCerts, tmp_path: Path, setting: str, flag: str
) -> None:
    key_password = tmp_path / "key-password"
    key_password.write_text(certs.client_key_password)
    settings = {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_ca": certs.ca,
        "kafka_ssl_cert": certs.client_cert,
        "kafka_ssl_key": certs.client_key,
        "kafka_ssl_key_password_file": key_password,
        setting: tmp_path / "missing.pem",
    }
    assert config_error(**settings).startswith(f"{flag}: ")


def test_a_wrong_key_password_is_refused_at_start(certs: KafkaCerts, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-key-password")
    message = config_error(
        kafka_security_protocol="SSL",
        kafka_ssl_cert=certs.client_cert,
        kafka_ssl_key=certs.client_key,
        kafka_ssl_key_password_file=wrong,
    )
    assert "--kafka-ssl-key" in message
    assert "--kafka-ssl-key-password-file" in message
    assert "not-the-key-password" not in message


def test_a_ca_file_that_is_no_certificate_is_refused_at_start(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    message = config_error(kafka_security_protocol="SSL", kafka_ssl_ca=garbage)
    assert "ssl.ca.location (--kafka-ssl-ca)" in message


# -- secrets never shown -------------------------------------------------------------------------


def test_settings_hold_paths_not_secrets(secrets: dict[str, Path]) -> None:
    for overrides in (scram(secrets), oauth(secrets)):
        s = load_settings(**overrides)
        for rendering in (
            str(s),
            repr(s),
            s.model_dump_json(),
            json.dumps(s.describe(), default=str),
        ):
            assert PASSWORD not in rendering
            assert CLIENT_SECRET not in rendering


# -- warnings at start ---------------------------------------------------------------------------


def warnings_for(**overrides: Any) -> list[str]:
    with capture_logs() as logs:
        log_security_warnings(load_settings(**overrides))
    assert all(entry["log_level"] == "warning" for entry in logs)
    return [entry["event"] for entry in logs]


def test_ssl_verify_off_warns(secrets: dict[str, Path]) -> None:
    assert warnings_for(kafka_security_protocol="SSL", kafka_ssl_verify=False) == [
        "kafka_ssl_verify_off"
    ]
    assert warnings_for(**scram(secrets, kafka_ssl_verify=False)) == ["kafka_ssl_verify_off"]
    assert warnings_for(kafka_security_protocol="SSL") == []
    assert warnings_for(**scram(secrets)) == []


def test_a_password_in_clear_warns(secrets: dict[str, Path]) -> None:
    plain = scram(secrets, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN")
    assert warnings_for(**plain) == ["kafka_password_sent_in_clear"]
    assert warnings_for(**oauth(secrets, kafka_oauth_token_endpoint="http://idp/t")) == [
        "kafka_oauth_token_endpoint_unencrypted"
    ]


# -- the command line ----------------------------------------------------------------------------


def parsed(*argv: str) -> dict[str, Any]:
    args = vars(_parser().parse_args(["serve", *argv]))
    return {k: v for k, v in args.items() if k != "command" and v is not None}


def test_boolean_flags_take_an_optional_value() -> None:
    ssl = ("--kafka-security-protocol", "SSL")
    assert Settings(**parsed(*ssl, "--kafka-ssl-verify=false")).kafka_ssl_verify is False
    assert Settings(**parsed(*ssl, "--kafka-ssl-verify=FALSE")).kafka_ssl_verify is False
    assert Settings(**parsed("--kafka-ssl-verify", *ssl)).kafka_ssl_verify is True
    assert Settings(**parsed("--insecure-bind-all")).insecure_bind_all is True
    assert Settings(**parsed()).insecure_bind_all is False


def test_serve_refuses_a_missing_password_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main([
        "serve", "--data-dir", str(tmp_path / "wal"),
        "--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "SCRAM-SHA-256",
        "--kafka-sasl-username", "ferry", "--kafka-sasl-password-file", str(tmp_path / "none"),
    ])  # fmt: skip
    assert code == 2
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "invalid_configuration"
    assert line["error"].startswith("--kafka-sasl-password-file: cannot read")
    assert not (tmp_path / "wal").exists()  # nothing was started
