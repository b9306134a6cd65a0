"""The narrow Kafka interfaces and record types Ferry's logic needs; confluent-kafka fits them.

Only `sidecar/kafka/` imports confluent-kafka: the subscribe and publish paths
see records and commands through these types. Tests may pass fakes for
pure-logic units; delivery claims are proven against a real broker through
the real adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

#: librdkafka's default message.max.bytes; events must fit into one produce request.
PRODUCER_MESSAGE_MAX_BYTES = 1_000_000

RecordHeaders = tuple[tuple[str, bytes | None], ...]
TopicPartitionKey = tuple[str, int]
#: Kafka's timestamp types, numbered as librdkafka and ferry.v1.TimestampType number them.
TIMESTAMP_NOT_AVAILABLE, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME = 0, 1, 2


def headers_size(headers: RecordHeaders) -> int:
    """Bytes the headers add to a record: each key (UTF-8) and value."""
    return sum(len(k.encode()) + (len(v) if v else 0) for k, v in headers)


class FetchedRecord(NamedTuple):
    """A record as read from Kafka (a named tuple: one is built per record fetched)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: RecordHeaders
    timestamp_ms: int
    timestamp_type: int
    size: int  # key + value + headers bytes: what it costs to hold; see `fetched_record`


def fetched_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: RecordHeaders = (),
    timestamp_ms: int = 0,
    timestamp_type: int = TIMESTAMP_CREATE_TIME,
) -> FetchedRecord:
    """A FetchedRecord with its size filled in."""
    size = (len(value) if value else 0) + (len(key) if key else 0) + headers_size(headers)
    return FetchedRecord(
        topic, partition, offset, key, value, headers, timestamp_ms, timestamp_type, size
    )


@dataclass(frozen=True, slots=True)
class AssignedPartition:
    """A partition this consumer now owns, with where the group left off."""

    topic: str
    partition: int
    committed: int | None  # None: no commit yet, auto.offset.reset decides
    metadata: str


@dataclass(frozen=True, slots=True)
class CommitOffset:
    """Commit `offset` (the next record to read) with the sparse-ack `metadata`."""

    topic: str
    partition: int
    offset: int
    metadata: str


class ConsumerSink(Protocol):
    """The subscription's side of its consumer thread; every method runs on the event loop."""

    def on_assigned(self, partitions: list[AssignedPartition]) -> None: ...

    def on_records(self, records: list[FetchedRecord]) -> None: ...

    async def on_revoked(
        self, partitions: list[TopicPartitionKey], lost: bool
    ) -> list[CommitOffset]: ...

    def on_consumer_replaced(self) -> None: ...

    def on_committed_lag(self, lag: int | None) -> None: ...


DeliveryCallback = Callable[[Any, Any], None]


class ProducerPort(Protocol):
    """What the forwarder uses of a Kafka producer."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = ...,
        key: str | bytes | None = ...,
        partition: int = ...,
        callback: DeliveryCallback | None = ...,
        on_delivery: DeliveryCallback | None = ...,
        timestamp: int = ...,
        headers: list[tuple[str, str | bytes | None]] | None = ...,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...

    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...


ProducerFactory = Callable[[Callable[[Any], None]], ProducerPort]


@dataclass(frozen=True, slots=True)
class SentBefore:
    """Events of one topic that a previous run may have sent, each named by the two headers
    Ferry gives every record (event id, publish time), and a time at or before which none of
    them can have been stamped (Kafka's record timestamp)."""

    since_ms: int
    events: frozenset[SentEvent]


#: An event as its record's headers name it: (ferry-event-id, ferry-publish-time).
SentEvent = tuple[str, str]
#: Where an event was found in Kafka: its partition and offset.
FoundAt = tuple[int, int]


class SentFinder(Protocol):
    """Looks in Kafka for events a previous run sent, by the headers they carry."""

    def find(
        self, wanted: dict[str, SentBefore], timeout_s: float
    ) -> dict[str, dict[SentEvent, FoundAt]]:
        """Per topic, the wanted events found, with where; what is not found within
        `timeout_s` is left out. Raises on a Kafka error."""
        ...
