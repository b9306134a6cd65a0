"""One typed settings object, read from flags and FERRY_* environment variables.

Precedence: command-line flag, then environment, then default. Validation
happens here, once, at start; an invalid value stops Ferry with a clear
message. Secrets (Kafka SASL passwords in `kafka_options`) are never shown:
`Settings.describe()` masks them for logs. The Kafka security settings hold only the paths of
secret files: sidecar/kafka/security.py reads them, at start, into the clients' settings.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sidecar.errors import ConfigError

KIB = 1024
MIB = 1024 * KIB
#: librdkafka's default message.max.bytes; events must fit into one produce request.
PRODUCER_MESSAGE_MAX_BYTES = 1_000_000
#: A topic (249), an event id (128) and the framing of every field and header of one event.
REQUEST_OVERHEAD_PER_EVENT = 2 * KIB
#: The request's own fields (ack level, kafka_wait).
REQUEST_OVERHEAD = 4 * KIB
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1

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


class Settings(BaseSettings):
    """Ferry's configuration. Each field is also a flag: `kafka_bootstrap` → `--kafka-bootstrap`."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="forbid", frozen=True)

    listen: str = Field("127.0.0.1:50051", description="gRPC listen address host:port")
    insecure_bind_all: bool = Field(
        False, description="allow a non-loopback listen address without TLS"
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_options: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="extra librdkafka settings, k=v,k=v (e.g. SASL); values never logged",
    )
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
    data_dir: Path = Field(Path("data"), description="directory of the write-ahead log")
    log_level: str = Field("info", description="debug, info, warning or error")

    max_event_bytes: int = Field(
        1 * MIB - 64 * KIB, description="payload + key + headers limit per event"
    )
    max_batch_events: int = Field(1000, description="most events in one PublishBatch")
    max_headers: int = Field(64, description="most headers on one event")
    topic_allowlist: Annotated[frozenset[str], NoDecode] = Field(
        default_factory=frozenset,
        description="topics that may be published to, subscribed to or used as dead-letter "
        "topics (empty: any)",
    )
    wal_max_bytes: int = Field(1024 * MIB, description="log size cap in event bytes")
    wal_max_rows: int = Field(5_000_000, description="log size cap in events")
    wal_topic_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="fraction of the log's cap one topic may hold, so that a topic whose events "
        "do not reach Kafka cannot stop the others (1: no share)",
    )
    disk_reserve_bytes: int = Field(
        8 * MIB,
        ge=0,
        description="space held back beside the log (at most 25% of the disk) so that a full "
        "disk can be recovered from; 0 disables",
    )
    dedupe_window_s: float = Field(
        86_400.0, ge=0, description="how long delivered event ids are kept"
    )
    kafka_wait_s: float = Field(30.0, gt=0, description="default wait for ACK_LEVEL_KAFKA")
    drain_grace_s: float = Field(10.0, ge=0, description="forwarder drain time on SIGTERM")
    forwarder_max_in_flight: int = Field(20_000, description="most events being sent at once")
    retry_max_backoff_s: float = Field(30.0, gt=0, description="cap of the per-topic retry backoff")
    max_streams: int = Field(1000, description="most Subscribe streams at once")
    max_subscriptions: int = Field(
        100, description="most subscriptions at once (each is a Kafka consumer)"
    )
    max_delivery_message_bytes: int = Field(
        3 * MIB,
        ge=512 * KIB,
        description="size budget of one Deliveries message (a larger record goes alone), at "
        "least 512 KiB (an AckResults message takes up to 440 KiB); keep it under the "
        "clients' receive limit (gRPC's default: 4 MiB)",
    )
    subscription_linger_s: float = Field(
        30.0, ge=0, description="how long a subscription stays joined after its last stream closes"
    )
    group_prefix: str = Field(
        "ferry.", description="prefix of the Kafka consumer group names (group = prefix + name)"
    )
    consumer_session_timeout_ms: int = Field(
        10_000, description="Kafka group session timeout: how soon a dead sidecar's partitions move"
    )

    @field_validator("kafka_options", mode="before")
    @classmethod
    def _parse_options(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [p for p in value.split(",") if p.strip()]
            parsed: dict[str, str] = {}
            for pair in pairs:
                key, sep, val = pair.partition("=")
                if not sep or not key.strip():
                    raise ValueError("expected key=value pairs separated by commas")
                parsed[key.strip()] = val.strip()
            return parsed
        return value

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

    @field_validator("topic_allowlist", mode="before")
    @classmethod
    def _parse_allowlist(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be debug, info, warning or error")
        return value.lower()

    @field_validator(
        "max_batch_events",
        "max_headers",
        "wal_max_bytes",
        "wal_max_rows",
        "forwarder_max_in_flight",
        "max_streams",
        "max_subscriptions",
        "consumer_session_timeout_ms",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"listen: expected host:port, got {self.listen!r}")
        if not (0 < self.max_event_bytes <= PRODUCER_MESSAGE_MAX_BYTES - 16 * KIB):
            raise ValueError(
                "max_event_bytes must be positive and leave room under the producer's "
                f"message.max.bytes ({PRODUCER_MESSAGE_MAX_BYTES})"
            )
        if self.max_request_bytes > MAX_GRPC_MESSAGE_BYTES:
            raise ValueError(
                "max_event_bytes x max_batch_events makes a request limit over gRPC's 2 GiB; "
                "lower either"
            )
        if not self.insecure_bind_all and not _is_loopback(host):
            raise ValueError(
                f"listen: {host} is not a loopback address; Ferry has no TLS yet, "
                "so pass --insecure-bind-all to expose it"
            )
        for key in ("enable.idempotence", "acks", "bootstrap.servers"):
            if key in self.kafka_options:
                raise ValueError(f"kafka_options may not override {key}")
        return self

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        problems = _kafka_security_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def max_request_bytes(self) -> int:
        """The gRPC receive limit: the largest PublishBatch the event limits allow.

        Per event, room for its topic, event id and protobuf framing beside the bytes that
        max_event_bytes counts. A larger request is refused by the transport itself
        (RESOURCE_EXHAUSTED without ErrorInfo): it could never be valid.
        """
        per_event = self.max_event_bytes + REQUEST_OVERHEAD_PER_EVENT
        return self.max_batch_events * per_event + REQUEST_OVERHEAD

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    def librdkafka_options(self) -> dict[str, str]:
        """The extra librdkafka settings with their secret values revealed."""
        return {k: v.get_secret_value() for k, v in self.kafka_options.items()}

    def describe(self) -> dict[str, Any]:
        """Settings for logs: every secret masked."""
        shown = self.model_dump(mode="json")
        shown["kafka_options"] = dict.fromkeys(self.kafka_options, "***")
        return shown


def flag(name: str) -> str:
    """The command-line flag of a setting: `kafka_ssl_ca` → `--kafka-ssl-ca`."""
    return "--" + name.replace("_", "-")


def _kafka_security_problems(s: Settings) -> list[str]:
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
        if key in s.kafka_options
    ]
    return problems


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: Any) -> Settings:
    """Build the settings (flags as `overrides`), turning validation errors into ConfigError."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(problems) from None
