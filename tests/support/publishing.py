"""Helpers for the publish-path integration tests: events, status details, outages, checks."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import record_pb2
from tests.kafka_fixture import KafkaCluster
from tests.support.kafka_read import Record

#: Flags for tests where Kafka goes away: a lane that failed is retried within seconds.
FAST_RETRY = ("--retry-max-backoff-s", "2")


HeaderPairs = Sequence[tuple[str, bytes | None]]


def event(
    topic: str,
    event_id: str,
    *,
    key: bytes | None = None,
    payload: bytes | None = None,
    headers: Mapping[str, str] | HeaderPairs | None = None,
) -> pb.Event:
    """An event whose payload defaults to something derived from its id; a null key unless
    `key` is given. `headers`: a mapping of text values, or (key, bytes or None) pairs."""
    message = pb.Event(
        topic=topic,
        payload=payload if payload is not None else f"payload-of-{event_id}".encode(),
        headers=[header(k, v) for k, v in header_pairs(headers)],
        event_id=event_id,
    )
    if key is not None:
        message.key = key
    return message


def header_pairs(headers: Mapping[str, str] | HeaderPairs | None) -> HeaderPairs:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return [(k, v.encode()) for k, v in headers.items()]
    return headers


def header(key: str, value: bytes | None) -> record_pb2.Header:
    return record_pb2.Header(key=key) if value is None else record_pb2.Header(key=key, value=value)


def event_headers(ev: pb.Event) -> list[tuple[str, bytes | None]]:
    return [(h.key, h.value if h.HasField("value") else None) for h in ev.headers]


def publish(
    stub: Any, ev: pb.Event, *, timeout: float = 10.0, **request: Any
) -> pb.PublishResponse:
    response: pb.PublishResponse = stub.Publish(
        pb.PublishRequest(event=ev, **request), timeout=timeout
    )
    return response


def status_details(error: grpc.RpcError) -> list[Any]:
    """The google.rpc details of a failed call, unpacked (BadRequest, RetryInfo, ...)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    unpacked: list[Any] = []
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ErrorInfo,
            pb.AssignedEventIds,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked.append(message)
    return unpacked


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    return [
        v.field
        for d in status_details(error)
        if isinstance(d, error_details_pb2.BadRequest)
        for v in d.field_violations
    ]


def error_reason(error: grpc.RpcError) -> str | None:
    """The google.rpc.ErrorInfo reason of a failed call (None: the call carried none)."""
    for d in status_details(error):
        if isinstance(d, error_details_pb2.ErrorInfo):
            assert d.domain == "ferry.v1", d
            return str(d.reason)
    return None


def retry_delay_s(error: grpc.RpcError) -> float | None:
    for d in status_details(error):
        if isinstance(d, error_details_pb2.RetryInfo):
            return float(d.retry_delay.ToNanoseconds()) / 1e9
    return None


def last_sequence(data_dir: Path) -> int:
    """The highest sequence the log ever handed out (it moves only when a row is written)."""
    db = data_dir / "wal.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def integrity_check(data_dir: Path) -> str:
    conn = sqlite3.connect(data_dir / "wal.sqlite3")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def restart_kafka(cluster: KafkaCluster, attempts: int = 3) -> None:
    """Start every stopped node again, retrying a JVM that dies at once.

    kafka_local starts the JVM with a preexec_fn, so Python must fork() the test process;
    with gRPC loaded, about 1 fork in 150 aborts in gRPC's fork handler before exec
    ("epoll_wait error: Bad file descriptor"; GRPC_ENABLE_FORK_SUPPORT=0 avoids it).
    """
    for attempt in range(1, attempts + 1):
        try:
            for node in cluster.nodes:
                if not node.alive():
                    cluster.restart(node)
            return
        except RuntimeError as exc:  # kafka_local.KafkaError
            if attempt == attempts or "exited during startup" not in str(exc):
                raise


def ensure_kafka_running(cluster: KafkaCluster) -> None:
    """Bring the session Kafka back (resumed, restarted) if a test left it down."""
    for node in cluster.nodes:
        cluster.resume(node)
    restart_kafka(cluster)


@contextlib.contextmanager
def kafka_restored(cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """Whatever happens inside, the session Kafka runs again afterwards."""
    try:
        yield cluster
    finally:
        ensure_kafka_running(cluster)


@dataclass
class Delivery:
    """What read_topic found, checked against what was published."""

    records: list[Record]
    by_id: dict[str, list[Record]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for record in self.records:
            self.by_id.setdefault(record.event_id, []).append(record)

    @property
    def duplicates(self) -> int:
        return len(self.records) - len(self.by_id)

    def missing(self, event_ids: Iterable[str]) -> list[str]:
        return [e for e in event_ids if e not in self.by_id]

    def assert_contents(self, expected: Mapping[str, pb.Event]) -> None:
        """Every expected event is there, each copy with its key, payload and headers."""
        missing = self.missing(expected)
        assert not missing, f"{len(missing)} acked events missing from Kafka, e.g. {missing[:5]}"
        for event_id, ev in expected.items():
            for record in self.by_id[event_id]:
                assert record.key == (ev.key if ev.HasField("key") else None), event_id
                assert record.value == (ev.payload if ev.HasField("payload") else None), event_id
                assert record.user_headers == event_headers(ev), event_id

    def order_violations(self, published: Mapping[bytes, Sequence[str]]) -> list[str]:
        """Keys whose first occurrences in Kafka do not follow their publish order."""
        first_seen: dict[bytes, list[str]] = {}
        seen: set[str] = set()
        # read_topic returns each partition in offset order; a key lives in one partition
        for record in sorted(self.records, key=lambda r: (r.partition, r.offset)):
            if record.event_id in seen:
                continue
            seen.add(record.event_id)
            first_seen.setdefault(record.key or b"", []).append(record.event_id)
        bad = []
        for key, ids in published.items():
            wanted = [e for e in ids if e in seen]
            mine = set(ids)
            if [e for e in first_seen.get(key, []) if e in mine] != wanted:
                bad.append(key.decode(errors="replace"))
        return bad


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)
