"""One typed settings object, read from flags and FERRY_* environment variables.

Precedence: command-line flag, then environment, then default. Validation
happens here, once, at start; an invalid value stops Ferry with a clear
message. Secrets (Kafka SASL passwords in `kafka_options`) are never shown:
`Settings.describe()` masks them for logs. The Kafka security settings hold only the paths of
secret files: sidecar/kafka/security.py reads them, at start, into the clients' settings.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sidecar.config_kafka import KafkaSecuritySettings, kafka_security_problems
from sidecar.config_observability import ObservabilitySettings
from sidecar.errors import ConfigError
from sidecar.kafka.ports import PRODUCER_MESSAGE_MAX_BYTES

#: Where the forwarder runs (sidecar/forward/placement.py): its own process, or a thread of Ferry.
FORWARDER_MODES = ("process", "thread")

KIB = 1024
MIB = 1024 * KIB
#: A topic (249), an event id (128) and the framing of every field and header of one event.
REQUEST_OVERHEAD_PER_EVENT = 2 * KIB
#: The request's own fields (ack level, kafka_wait).
REQUEST_OVERHEAD = 4 * KIB
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
UNIX_SCHEME = "unix:"
#: Marks a setting read from its FERRY_* variable only, never a flag (secrets).
ENV_ONLY = "env_only"
#: Shorter bearer tokens are refused: they could be guessed.
MIN_TOKEN_LENGTH = 16
#: sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


class Settings(BaseSettings, KafkaSecuritySettings, ObservabilitySettings):
    """Ferry's configuration. Each field is also a flag: `kafka_bootstrap` → `--kafka-bootstrap`."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="forbid", frozen=True)

    listen: str = Field(
        "127.0.0.1:50051",
        description="gRPC listen address: host:port, or unix:///path/ferry.sock for a unix socket",
    )
    listen_socket_mode: str = Field(
        "0600",
        description="file mode (octal) of the unix socket; 0660 lets the socket's group connect",
    )
    insecure_bind_all: bool = Field(
        False, description="allow a non-loopback listen address without TLS"
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate chain of the gRPC server (TLS; with --tls-key); "
        "read again when it changes",
    )
    tls_key: Path | None = Field(None, description="PEM private key of --tls-cert")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA certificates that sign client certificates: clients must present "
        "one (mutual TLS)",
    )
    token_file: Annotated[tuple[Path, ...], NoDecode] = Field(
        (),
        description="files of accepted bearer tokens, one per line (repeat the flag, or "
        "separate with commas); read again when they change",
    )
    tokens: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="accepted bearer tokens, separated by commas (environment only, never a "
        "flag: command lines are visible to every user of the host)",
        json_schema_extra={ENV_ONLY: True},
    )
    policy_file: Path | None = Field(
        None,
        description="authorisation policy (YAML or JSON): which token or client certificate "
        "may publish to which topics and open which subscriptions (none: any caller, within "
        "--topic-allowlist)",
    )
    reflection: bool = Field(
        True,
        description="serve gRPC server reflection (it needs a token when tokens are set); "
        "--reflection=false turns it off",
    )
    max_concurrent_rpcs: int = Field(
        5000,
        description="most calls in progress at once, streams and health checks included; past "
        "it gRPC answers RESOURCE_EXHAUSTED",
    )
    max_connection_streams: int = Field(
        2000,
        description="most concurrent calls (HTTP/2 streams) on one client connection; past it "
        "the client waits",
    )
    min_ping_interval_s: float = Field(
        10.0,
        gt=0,
        description="shortest interval between client keepalive pings; a client pinging more "
        "often is disconnected (GOAWAY too_many_pings)",
    )
    max_connection_idle_s: float = Field(
        3600.0,
        ge=0,
        description="close a connection without calls for this long (clients reconnect); 0: never",
    )
    max_connection_age_s: float = Field(
        0.0,
        ge=0,
        description="ask clients to reconnect after this long, then end the connection's calls "
        "after --max-connection-age-grace-s (Subscribe streams too); 0: never",
    )
    max_connection_age_grace_s: float = Field(
        30.0, ge=0, description="how long calls may finish after --max-connection-age-s"
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka_options: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="extra librdkafka settings, k=v,k=v (e.g. SASL); values never logged",
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
    forwarder_mode: str = Field(
        "process",
        description="where the forwarder runs: process (an interpreter of its own: the most "
        "throughput, about 35 MB more memory) or thread (inside Ferry: less memory, and less "
        "CPU at modest rates, for pods of a core or less)",
    )
    resend_check_s: float = Field(
        5.0,
        ge=0,
        description="at start, how long the forwarder may look in Kafka for events a killed "
        "run sent but did not retire, so as not to send them again (needs read access to the "
        "topics; what is not found in time is sent again; 0: never look)",
    )
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

    @field_validator("token_file", mode="before")
    @classmethod
    def _parse_token_files(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            parts = [p for v in value for p in (v.split(",") if isinstance(v, str) else [v])]
            return tuple(Path(p.strip()) if isinstance(p, str) else p for p in parts if p)
        return value

    @field_validator("tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return value

    @field_validator("tokens")
    @classmethod
    def _check_tokens(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(t.get_secret_value()) < MIN_TOKEN_LENGTH for t in value):
            raise ValueError(f"every token must have at least {MIN_TOKEN_LENGTH} characters")
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

    @field_validator("forwarder_mode")
    @classmethod
    def _check_forwarder_mode(cls, value: str) -> str:
        if value.lower() not in FORWARDER_MODES:
            raise ValueError(f"must be {' or '.join(FORWARDER_MODES)}")
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
        "max_concurrent_rpcs",
        "max_connection_streams",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("listen_socket_mode")
    @classmethod
    def _check_socket_mode(cls, value: str) -> str:
        try:
            mode = int(value.strip().removeprefix("0o"), 8)
        except ValueError:
            raise ValueError(f"expected an octal file mode such as 0660, got {value!r}") from None
        if not 0 <= mode <= 0o777:
            raise ValueError(f"expected an octal file mode up to 0777, got {value!r}")
        return f"{mode:04o}"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.listen.startswith(UNIX_SCHEME):
            _check_socket_target(self.listen)
        else:
            _check_host_port(self.listen)
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
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        if (
            self.listen_socket is None
            and self.tls_cert is None
            and not self.insecure_bind_all
            and not _is_loopback(self.listen_host)
        ):
            raise ValueError(
                f"listen: {self.listen_host} is not a loopback address; configure TLS "
                "(--tls-cert, --tls-key) or pass --insecure-bind-all to expose it unencrypted"
            )
        for key in ("enable.idempotence", "acks", "bootstrap.servers"):
            if key in self.kafka_options:
                raise ValueError(f"kafka_options may not override {key}")
        return self

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        problems = kafka_security_problems(self, self.kafka_options)
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
    def token_auth(self) -> bool:
        """Whether calls need a bearer token (token files or FERRY_TOKENS are set)."""
        return bool(self.token_file or self.tokens)

    @property
    def listen_host(self) -> str:
        """The host of a host:port listen address ("" for a unix socket)."""
        if self.listen_socket is not None:
            return ""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_socket(self) -> Path | None:
        """The unix socket's path when `listen` is unix:///abs/path or unix:relative/path."""
        if not self.listen.startswith(UNIX_SCHEME):
            return None
        return Path(self.listen.removeprefix(UNIX_SCHEME).removeprefix("//"))

    @property
    def socket_mode(self) -> int:
        return int(self.listen_socket_mode, 8)

    def librdkafka_options(self) -> dict[str, str]:
        """The extra librdkafka settings with their secret values revealed."""
        return {k: v.get_secret_value() for k, v in self.kafka_options.items()}

    def describe(self) -> dict[str, Any]:
        """Settings for logs: every secret masked."""
        shown = self.model_dump(mode="json")
        shown["kafka_options"] = dict.fromkeys(self.kafka_options, "***")
        shown["tokens"] = f"{len(self.tokens)} tokens"
        return shown


def _check_host_port(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen: expected host:port or unix:///path/to/socket, got {listen!r}")


def _check_socket_target(listen: str) -> None:
    rest = listen.removeprefix(UNIX_SCHEME)
    if rest.startswith("//") and not rest.startswith("///"):
        raise ValueError(f"listen: a unix socket is unix:///absolute/path, got {listen!r}")
    path = rest.removeprefix("//")
    if not path or path.endswith("/"):
        raise ValueError(f"listen: expected a socket file path after unix:, got {listen!r}")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(
            f"listen: the socket path is longer than the {MAX_SOCKET_PATH_BYTES} bytes a unix "
            f"socket address holds: {path!r}"
        )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Settings whose flag may be given more than once.
REPEATABLE = frozenset({"token_file"})


def is_env_only(field: FieldInfo) -> bool:
    """Whether a setting has no flag, only its FERRY_* variable."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(ENV_ONLY))


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
