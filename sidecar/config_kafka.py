"""Ferry's settings for reaching a secured Kafka: protocol, SASL, OAUTHBEARER and TLS files.

`Settings` inherits these fields; they are flags and FERRY_* variables like any other. They
hold the paths of secret files, never the secrets: sidecar/kafka/security.py reads the files at
start into the clients' settings. The rules below tell which settings need which protocol and
which go together; each problem names the flag to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
#: The Kafka security settings besides the protocol, grouped by what they need.
KAFKA_SASL_FIELDS = (
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password_file",
    "kafka_oauth_client_id",
    "kafka_oauth_client_secret_file",
    "kafka_oauth_token_endpoint",
    "kafka_oauth_scope",
)
KAFKA_PASSWORD_FIELDS = ("kafka_sasl_username", "kafka_sasl_password_file")
KAFKA_OAUTH_FIELDS = (
    "kafka_oauth_client_id",
    "kafka_oauth_client_secret_file",
    "kafka_oauth_token_endpoint",
    "kafka_oauth_scope",
)
KAFKA_SSL_FIELDS = (
    "kafka_ssl_ca",
    "kafka_ssl_cert",
    "kafka_ssl_key",
    "kafka_ssl_key_password_file",
)
#: librdkafka options the security settings own, and the flag to use instead: with
#: --kafka-security-protocol given, --kafka-options may not set them.
KAFKA_SECURITY_OPTIONS = {
    "security.protocol": "--kafka-security-protocol",
    "sasl.mechanism": "--kafka-sasl-mechanism",
    "sasl.mechanisms": "--kafka-sasl-mechanism",
    "sasl.username": "--kafka-sasl-username",
    "sasl.password": "--kafka-sasl-password-file",
    "sasl.oauthbearer.method": "--kafka-sasl-mechanism OAUTHBEARER",
    "sasl.oauthbearer.client.id": "--kafka-oauth-client-id",
    "sasl.oauthbearer.client.secret": "--kafka-oauth-client-secret-file",
    "sasl.oauthbearer.token.endpoint.url": "--kafka-oauth-token-endpoint",
    "sasl.oauthbearer.scope": "--kafka-oauth-scope",
    "ssl.ca.location": "--kafka-ssl-ca",
    "ssl.ca.pem": "--kafka-ssl-ca",
    "ssl.certificate.location": "--kafka-ssl-cert",
    "ssl.certificate.pem": "--kafka-ssl-cert",
    "ssl.key.location": "--kafka-ssl-key",
    "ssl.key.pem": "--kafka-ssl-key",
    "ssl.key.password": "--kafka-ssl-key-password-file",
    "ssl.endpoint.identification.algorithm": "--kafka-ssl-verify",
    "enable.ssl.certificate.verification": "--kafka-ssl-verify",
}


class KafkaSecuritySettings(BaseModel):
    """The Kafka security fields of `Settings`."""

    kafka_security_protocol: KafkaSecurityProtocol | None = Field(
        None,
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; the other --kafka-ssl-*, "
        "--kafka-sasl-* and --kafka-oauth-* settings need it (unset: PLAINTEXT, or what "
        "--kafka-options says)",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        None,
        description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (OIDC client "
        "credentials); needs a SASL_* protocol",
    )
    kafka_sasl_username: str | None = Field(
        None, description="SASL username (PLAIN, SCRAM); needs --kafka-sasl-password-file"
    )
    kafka_sasl_password_file: Path | None = Field(
        None, description="file holding the SASL password (PLAIN, SCRAM), read at start"
    )
    kafka_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: OIDC client id")
    kafka_oauth_client_secret_file: Path | None = Field(
        None, description="OAUTHBEARER: file holding the OIDC client secret, read at start"
    )
    kafka_oauth_token_endpoint: str | None = Field(
        None, description="OAUTHBEARER: the OIDC token endpoint URL (https://...)"
    )
    kafka_oauth_scope: str | None = Field(
        None, description="OAUTHBEARER: scope to request (optional)"
    )
    kafka_ssl_ca: Path | None = Field(
        None,
        description="PEM file of the CA certificates that sign the brokers' certificates "
        "(unset: the system's)",
    )
    kafka_ssl_cert: Path | None = Field(
        None, description="PEM file of Ferry's client certificate (mutual TLS)"
    )
    kafka_ssl_key: Path | None = Field(
        None, description="PEM file of the private key of --kafka-ssl-cert"
    )
    kafka_ssl_key_password_file: Path | None = Field(
        None, description="file holding the password of an encrypted --kafka-ssl-key"
    )
    kafka_ssl_verify: bool = Field(
        True,
        description="check that the broker's certificate names the host Ferry connects to "
        "(the certificate chain is always checked); false logs a warning at start",
    )

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_or_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().upper() or None
        return value

    @field_validator(*KAFKA_SASL_FIELDS[1:], *KAFKA_SSL_FIELDS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty environment variable (a Kubernetes manifest's placeholder) means unset.
        if isinstance(value, str) and not value.strip():
            return None
        return value


def flag(name: str) -> str:
    """The command-line flag of a setting: `kafka_ssl_ca` → `--kafka-ssl-ca`."""
    return "--" + name.replace("_", "-")


def kafka_security_problems(
    s: KafkaSecuritySettings, kafka_options: Mapping[str, object]
) -> list[str]:
    """What is wrong with the combination of Kafka security settings, each naming its flag."""
    given = [n for n in (*KAFKA_SASL_FIELDS, *KAFKA_SSL_FIELDS) if getattr(s, n) is not None]
    if not s.kafka_ssl_verify:
        given.append("kafka_ssl_verify")
    protocol = s.kafka_security_protocol
    if protocol is None:
        return [f"{flag(n)} needs --kafka-security-protocol" for n in given]
    problems: list[str] = []
    sasl, ssl = protocol.startswith("SASL_"), protocol.endswith("SSL")
    mechanism = s.kafka_sasl_mechanism
    for name in given:
        if not sasl and name in KAFKA_SASL_FIELDS:
            problems.append(
                f"{flag(name)} needs --kafka-security-protocol SASL_PLAINTEXT or SASL_SSL"
            )
        if not ssl and (name in KAFKA_SSL_FIELDS or name == "kafka_ssl_verify"):
            problems.append(f"{flag(name)} needs --kafka-security-protocol SSL or SASL_SSL")
    if sasl and mechanism is None:
        problems.append(
            f"--kafka-security-protocol {protocol} needs --kafka-sasl-mechanism "
            "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)"
        )
    if mechanism == "OAUTHBEARER":
        problems += [
            f"{flag(n)} is for PLAIN and SCRAM; OAUTHBEARER takes --kafka-oauth-*"
            for n in KAFKA_PASSWORD_FIELDS
            if n in given
        ]
        problems += [
            f"--kafka-sasl-mechanism OAUTHBEARER needs {flag(n)}"
            for n in KAFKA_OAUTH_FIELDS[:3]
            if n not in given
        ]
        endpoint = s.kafka_oauth_token_endpoint
        if endpoint is not None and not endpoint.lower().startswith(("https://", "http://")):
            problems.append("--kafka-oauth-token-endpoint: expected an https:// URL")
    elif mechanism is not None:
        problems += [
            f"{flag(n)} needs --kafka-sasl-mechanism OAUTHBEARER"
            for n in KAFKA_OAUTH_FIELDS
            if n in given
        ]
        problems += [
            f"--kafka-sasl-mechanism {mechanism} needs {flag(n)}"
            for n in KAFKA_PASSWORD_FIELDS
            if n not in given
        ]
    if ssl and (s.kafka_ssl_cert is None) != (s.kafka_ssl_key is None):
        problems.append("--kafka-ssl-cert and --kafka-ssl-key go together")
    if ssl and s.kafka_ssl_key_password_file is not None and s.kafka_ssl_key is None:
        problems.append("--kafka-ssl-key-password-file needs --kafka-ssl-key")
    problems += [
        f"kafka_options may not set {key} when --kafka-security-protocol is given; use {use}"
        for key, use in KAFKA_SECURITY_OPTIONS.items()
        if key in kafka_options
    ]
    return problems
