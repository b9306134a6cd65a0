"""The librdkafka settings of Ferry's Kafka security flags, shared by every Kafka client.

`kafka_client_options(settings)` is the one place that turns `--kafka-options` and the
`--kafka-security-protocol`, `--kafka-sasl-*`, `--kafka-oauth-*` and `--kafka-ssl-*` settings
into the options every producer and consumer Ferry builds gets. It runs once, at start: it
reads the secret files (a password, an OIDC client secret, a key's password), checks that the
certificate files are readable and that librdkafka accepts them (a wrong key password, a file
that is no PEM), and raises `ConfigError` naming the flag otherwise. The settings only ever
hold the files' paths; the secrets live in the returned dict alone, which goes into Kafka
clients and never into a log line (the CLI registers its sensitive values for masking, as a
second guard).

Which combinations are valid is decided with the rest of the settings (sidecar/config.py);
here they are taken as valid.

Certificate checks: the broker's certificate chain is always verified, against
`--kafka-ssl-ca` or the system's CA certificates; `--kafka-ssl-verify` (default true) also
checks that the certificate names the host Ferry connects to (librdkafka's
`ssl.endpoint.identification.algorithm=https`). Turning that off logs a warning at start.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from confluent_kafka import KafkaException, Producer

from sidecar.config import Settings
from sidecar.config_kafka import KAFKA_SECURITY_OPTIONS, flag
from sidecar.errors import ConfigError

log = structlog.get_logger(__name__)

SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def kafka_client_options(settings: Settings) -> dict[str, str]:
    """`--kafka-options` and the security settings as librdkafka options, secrets revealed:
    for Kafka clients only, never for logs. ConfigError naming the flag when a file cannot be
    read or librdkafka refuses the TLS files."""
    options = {**settings.librdkafka_options(), **security_options(settings)}
    if options.get("security.protocol", "").upper() in SSL_PROTOCOLS and any(
        key in options for key in ("ssl.ca.location", "ssl.certificate.location")
    ):
        _check_tls_files(options)
    return options


def security_options(settings: Settings) -> dict[str, str]:
    """The librdkafka options of the security settings alone (empty without a protocol)."""
    protocol = settings.kafka_security_protocol
    if protocol is None:
        return {}
    options: dict[str, str] = {"security.protocol": protocol}
    if protocol in SSL_PROTOCOLS:
        options.update(_ssl_options(settings))
    if protocol in SASL_PROTOCOLS:
        options.update(_sasl_options(settings))
    return options


def log_security_warnings(settings: Settings) -> None:
    """Warn at start about settings that weaken Kafka's security."""
    protocol = settings.kafka_security_protocol
    if protocol in SSL_PROTOCOLS and not settings.kafka_ssl_verify:
        log.warning(
            "kafka_ssl_verify_off",
            hint="--kafka-ssl-verify=false: Kafka brokers' certificates are not checked against "
            "their host names, so any certificate the CA signed is taken for any broker",
        )
    if protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN":
        log.warning(
            "kafka_password_sent_in_clear",
            hint="SASL PLAIN over SASL_PLAINTEXT sends the password unencrypted; use SASL_SSL",
        )
    endpoint = settings.kafka_oauth_token_endpoint
    if endpoint is not None and endpoint.lower().startswith("http://"):
        log.warning(
            "kafka_oauth_token_endpoint_unencrypted",
            hint="--kafka-oauth-token-endpoint is http://: the client secret travels unencrypted",
        )


def _ssl_options(settings: Settings) -> dict[str, str]:
    options = {
        "enable.ssl.certificate.verification": "true",
        "ssl.endpoint.identification.algorithm": "https" if settings.kafka_ssl_verify else "none",
    }
    if settings.kafka_ssl_ca is not None:
        options["ssl.ca.location"] = _readable(settings.kafka_ssl_ca, "kafka_ssl_ca")
    if settings.kafka_ssl_cert is not None and settings.kafka_ssl_key is not None:
        options["ssl.certificate.location"] = _readable(settings.kafka_ssl_cert, "kafka_ssl_cert")
        options["ssl.key.location"] = _readable(settings.kafka_ssl_key, "kafka_ssl_key")
    if settings.kafka_ssl_key_password_file is not None:
        options["ssl.key.password"] = read_secret(
            settings.kafka_ssl_key_password_file, "kafka_ssl_key_password_file"
        )
    return options


def _sasl_options(settings: Settings) -> dict[str, str]:
    mechanism = settings.kafka_sasl_mechanism
    if mechanism is None:
        return {}
    options: dict[str, str] = {"sasl.mechanism": mechanism}
    if mechanism == "OAUTHBEARER":
        options["sasl.oauthbearer.method"] = "oidc"
        if settings.kafka_oauth_client_id is not None:
            options["sasl.oauthbearer.client.id"] = settings.kafka_oauth_client_id
        if settings.kafka_oauth_client_secret_file is not None:
            options["sasl.oauthbearer.client.secret"] = read_secret(
                settings.kafka_oauth_client_secret_file, "kafka_oauth_client_secret_file"
            )
        if settings.kafka_oauth_token_endpoint is not None:
            options["sasl.oauthbearer.token.endpoint.url"] = settings.kafka_oauth_token_endpoint
        if settings.kafka_oauth_scope is not None:
            options["sasl.oauthbearer.scope"] = settings.kafka_oauth_scope
        return options
    if settings.kafka_sasl_username is not None:
        options["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password_file is not None:
        options["sasl.password"] = read_secret(
            settings.kafka_sasl_password_file, "kafka_sasl_password_file"
        )
    return options


def read_secret(path: Path, setting: str) -> str:
    """The secret in `path` without its trailing line break (a file written with echo)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag(setting)}: cannot read {path}: {_why(exc)}") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{flag(setting)}: {path} is empty")
    return secret


def _readable(path: Path, setting: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{flag(setting)}: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag(setting)}: cannot read {path}: permission denied")
    return str(path)


def _check_tls_files(options: dict[str, str]) -> None:
    """Let librdkafka load the CA, certificate and key now (it does so when a client is made,
    without connecting), so that a bad file or key password stops Ferry at start."""
    tls = {k: v for k, v in options.items() if k.startswith(("ssl.", "enable.ssl."))}
    try:
        Producer({**tls, "security.protocol": "SSL", "log_level": 0})
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        message = _name_flags(str(error.str()) if hasattr(error, "str") else str(error))
        if "ssl.key.location" in message and "ssl.key.password" in options:
            message += " (is --kafka-ssl-key-password-file the key's password?)"
        raise ConfigError(f"Kafka TLS settings refused: {message}") from None


def _name_flags(message: str) -> str:
    """librdkafka's message with each option it names followed by the flag that set it."""
    message = message.removeprefix("Failed to create producer: ")
    for option in ("ssl.key.location", "ssl.certificate.location", "ssl.ca.location"):
        message = message.replace(option, f"{option} ({KAFKA_SECURITY_OPTIONS[option]})")
    return message


def _why(exc: BaseException) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else "not UTF-8 text"
