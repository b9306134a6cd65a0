"""`ferry status`: asks a running Ferry for `ferry.v1.Admin/GetStatus` and prints it as tables
(or `--json`), for an operator inside the pod (`kubectl exec ... -- ferry status`).

It reaches Ferry the way `ferry serve` listens, from the same FERRY_* variables: the address
(`FERRY_LISTEN`; a wildcard host is reached on loopback), a unix socket, TLS (the server's own
`FERRY_TLS_CERT` is trusted unless `--tls-ca` names the CA), a client certificate for mutual
TLS, and a bearer token (the first of `FERRY_TOKEN_FILE`'s files, or of `FERRY_TOKENS`).
Exit codes: 0 answered, 1 the call failed (the reason on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import duration_pb2, json_format

from sidecar._gen.ferry.v1 import admin_pb2 as pb
from sidecar._gen.ferry.v1 import admin_pb2_grpc

DEFAULT_LISTEN = "127.0.0.1:50051"
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}  # noqa: S104


@dataclass(frozen=True)
class Target:
    """Where and how to reach Ferry."""

    address: str
    tls_ca: Path | None = None
    server_name: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--listen",
        default=env("FERRY_LISTEN", DEFAULT_LISTEN),
        help="Ferry's address, as `ferry serve --listen` takes it: host:port or "
        f"unix:///path (env FERRY_LISTEN, default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=_path(env("FERRY_TLS_CA") or env("FERRY_TLS_CERT")),
        help="PEM CA certificates to verify Ferry's certificate with; turns TLS on (env "
        "FERRY_TLS_CA, else FERRY_TLS_CERT: the server's own chain)",
    )
    parser.add_argument(
        "--tls-server-name",
        default=env("FERRY_TLS_SERVER_NAME") or None,
        help="the name Ferry's certificate must carry, when it is not the address's host "
        "(env FERRY_TLS_SERVER_NAME)",
    )
    parser.add_argument(
        "--tls-client-cert",
        type=Path,
        default=_path(env("FERRY_TLS_CLIENT_CERT")),
        help="PEM client certificate for mutual TLS (env FERRY_TLS_CLIENT_CERT)",
    )
    parser.add_argument(
        "--tls-client-key",
        type=Path,
        default=_path(env("FERRY_TLS_CLIENT_KEY")),
        help="its private key (env FERRY_TLS_CLIENT_KEY)",
    )
    parser.add_argument(
        "--token-file",
        default=env("FERRY_TOKEN_FILE", ""),
        help="file whose first line is the bearer token to send; with several, separated by "
        "commas, the first (env FERRY_TOKEN_FILE; else the first of FERRY_TOKENS)",
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the answer (default 10)"
    )


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def target_of(args: argparse.Namespace, tokens_env: str = "") -> Target:
    """The target the arguments name; ValueError (a message for the operator) if unusable."""
    return Target(
        address=dial_address(args.listen),
        tls_ca=args.tls_ca,
        server_name=args.tls_server_name,
        client_cert=args.tls_client_cert,
        client_key=args.tls_client_key,
        token=_token(args.token_file, tokens_env),
    )


def dial_address(listen: str) -> str:
    """The address to connect to for a listen address: a wildcard host becomes loopback."""
    if listen.startswith("unix:"):
        return listen
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--listen: expected host:port or unix:///path, got {listen!r}")
    return f"{WILDCARD_HOSTS.get(host, host)}:{port}"


def _token(token_files: str, tokens_env: str) -> str | None:
    files = [f.strip() for f in token_files.split(",") if f.strip()]
    if files:
        try:
            lines = Path(files[0]).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"--token-file: cannot read {files[0]}: {exc.strerror}") from None
        tokens = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not tokens:
            raise ValueError(f"--token-file: {files[0]} holds no token")
        return tokens[0]
    tokens = [t.strip() for t in tokens_env.split(",") if t.strip()]
    return tokens[0] if tokens else None


def channel(target: Target) -> grpc.Channel:
    if target.tls_ca is None:
        if target.client_cert is not None:
            raise ValueError("--tls-client-cert needs TLS: give --tls-ca (or FERRY_TLS_CERT)")
        return grpc.insecure_channel(target.address)
    try:
        credentials = grpc.ssl_channel_credentials(
            target.tls_ca.read_bytes(),
            target.client_key.read_bytes() if target.client_key else None,
            target.client_cert.read_bytes() if target.client_cert else None,
        )
    except OSError as exc:
        raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from None
    options = []
    if target.server_name:
        options.append(("grpc.ssl_target_name_override", target.server_name))
    return grpc.secure_channel(target.address, credentials, options=options)


def get_status(target: Target, timeout: float) -> pb.GetStatusResponse:
    metadata = (("authorization", f"Bearer {target.token}"),) if target.token else None
    with channel(target) as chan:
        stub = admin_pb2_grpc.AdminStub(chan)
        response: pb.GetStatusResponse = stub.GetStatus(
            pb.GetStatusRequest(), timeout=timeout, metadata=metadata
        )
        return response


def run(args: argparse.Namespace) -> int:
    try:
        target = target_of(args, os.environ.get("FERRY_TOKENS", ""))
        status = get_status(target, args.timeout)
    except ValueError as exc:
        print(f"ferry status: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        print(f"ferry status: {args.listen}: {code}: {details}", file=sys.stderr)
        return 1
    if args.json:
        print(json_format.MessageToJson(status, preserving_proto_field_name=True))
    else:
        print(render(status))
    return 0


# -- the tables ------------------------------------------------------------------------------


def render(s: pb.GetStatusResponse) -> str:
    """The status as an operator reads it: a summary, then a table of topics and one of
    subscriptions."""
    state = "DRAINING" if s.draining else "serving"
    kafka = "reachable" if s.forwarder.kafka_reachable else "UNREACHABLE"
    log = s.log
    oldest = _age(log.oldest_pending_age) if log.HasField("oldest_pending_age") else "-"
    lines = [
        f"Ferry {s.version} ({s.build}), {state}, up {_age(s.uptime)}",
        f"Kafka:  {kafka}; {s.forwarder.in_flight_events} events in flight, "
        f"{s.forwarder.delivered_events} delivered, {s.forwarder.resent_events} resent",
        f"Log:    {log.pending_events} events pending ({_bytes(log.pending_bytes)}), oldest "
        f"{oldest}; {log.cap_used:.1%} of the cap ({log.max_events} events, "
        f"{_bytes(log.max_bytes)}); {log.parked_events} parked",
        f"Disk:   {_bytes(s.disk.free_bytes)} free; reserve "
        + (
            "disabled"
            if not s.disk.reserve_bytes
            else f"{_bytes(s.disk.reserve_bytes)} "
            + ("held" if s.disk.reserve_held else "RELEASED (disk full: publishes refused)")
        ),
        "",
    ]
    topic_rows = [
        [
            t.topic,
            str(t.pending_events),
            _bytes(t.pending_bytes),
            _age(t.oldest_pending_age) if t.HasField("oldest_pending_age") else "-",
            str(t.in_flight_events),
            _lane_state(t),
            t.last_error,
        ]
        for t in s.topics
    ]
    header = ["TOPIC", "PENDING", "BYTES", "OLDEST", "IN FLIGHT", "STATE", "LAST ERROR"]
    lines += _table(header, topic_rows) if topic_rows else ["(no topics)"]
    lines.append("")
    sub_rows = [
        [
            sub.name,
            ",".join(sub.topics),
            str(sub.streams),
            str(sub.outstanding_leases),
            str(sub.held_records),
            str(sub.committed_lag) if sub.HasField("committed_lag") else "-",
            str(sub.deliveries),
            str(sub.redeliveries),
            str(sub.acks),
            str(sub.nacks),
            str(sub.lease_expiries),
            str(sub.dead_lettered),
            _subscription_state(sub),
        ]
        for sub in s.subscriptions
    ]
    header = [
        "SUBSCRIPTION", "TOPICS", "STREAMS", "LEASES", "HELD", "LAG", "DELIVERED",
        "REDELIVERED", "ACKED", "NACKED", "EXPIRED", "DEAD", "STATE",
    ]  # fmt: skip
    lines += _table(header, sub_rows) if sub_rows else ["(no subscriptions)"]
    return "\n".join(lines)


def _lane_state(t: pb.TopicStatus) -> str:
    if not t.backing_off:
        return "ok"
    retry = _age(t.retry_in) if t.HasField("retry_in") else "now"
    return f"BACKING OFF ({t.failures} failures, retry in {retry})"


def _subscription_state(sub: pb.SubscriptionStatus) -> str:
    states = []
    if sub.streams == 0:
        states.append("lingering")
    if sub.paused:
        states.append("PAUSED (holds its limit)")
    if sub.consumer_replacements:
        states.append(f"consumer replaced {sub.consumer_replacements}x")
    return ", ".join(states) or "ok"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _age(duration: duration_pb2.Duration) -> str:
    return _seconds(duration.ToTimedelta().total_seconds())


def _seconds(total: float) -> str:
    if total < 60:
        return f"{total:.1f}s"
    minutes, seconds = divmod(int(total), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB
