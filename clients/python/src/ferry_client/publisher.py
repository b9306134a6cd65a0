"""Publishing: FerryPublisher (blocking) and AsyncFerryPublisher (asyncio).

Every event gets its event_id once, before the first attempt, and keeps it across retries:
Ferry deduplicates by event_id, so a retry after an unknown outcome creates no duplicate.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

import grpc
import grpc.aio

from ferry_client._channel import open_aio_channel, open_channel
from ferry_client._gen.ferry.v1 import publisher_pb2 as pb
from ferry_client._gen.ferry.v1 import publisher_pb2_grpc
from ferry_client._retry import Attempts
from ferry_client._uuid7 import uuid7
from ferry_client.credentials import Credentials
from ferry_client.errors import status_code

Bytes = bytes | str
Headers = Mapping[str, Bytes | None] | Iterable[tuple[str, Bytes | None]]
R = TypeVar("R")


class AckLevel(enum.IntEnum):
    """When Ferry answers: once the event is fsynced in its log, or once Kafka has it."""

    DURABLE = pb.ACK_LEVEL_DURABLE
    KAFKA = pb.ACK_LEVEL_KAFKA


@dataclass(frozen=True)
class Event:
    """One event of a batch; `event_id` is assigned (a UUIDv7) when not given."""

    topic: str
    payload: Bytes | None
    key: Bytes | None = None
    headers: Headers = ()
    event_id: str | None = None


class KafkaPosition(NamedTuple):
    partition: int
    offset: int


@dataclass(frozen=True)
class PublishResult:
    event_id: str
    sequence: int
    duplicate: bool
    publish_time: datetime | None
    kafka_position: KafkaPosition | None  # with AckLevel.KAFKA


@dataclass(frozen=True)
class PublishFailure:
    """One event of a batch that Ferry refused (e.g. reason EVENT_ID_CONFLICT)."""

    event_id: str
    code: grpc.StatusCode
    reason: str
    message: str


def _bytes(value: Bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _event(event: Event) -> pb.Event:
    out = pb.Event(topic=event.topic, event_id=event.event_id or str(uuid7()))
    if event.key is not None:
        out.key = _bytes(event.key)
    if event.payload is not None:
        out.payload = _bytes(event.payload)
    pairs = event.headers.items() if isinstance(event.headers, Mapping) else event.headers
    for name, value in pairs:
        header = out.headers.add(key=name)
        if value is not None:
            header.value = _bytes(value)
    return out


def _result(result: pb.PublishResult) -> PublishResult:
    position = result.kafka_position if result.HasField("kafka_position") else None
    return PublishResult(
        event_id=result.event_id,
        sequence=result.sequence,
        duplicate=result.duplicate,
        publish_time=(
            result.publish_time.ToDatetime(tzinfo=UTC) if result.HasField("publish_time") else None
        ),
        kafka_position=position and KafkaPosition(position.partition, position.offset),
    )


def _batch_request(
    events: Sequence[Event], ack_level: AckLevel, kafka_wait: float | None
) -> pb.PublishBatchRequest:
    """The request for `events`; every event gets its event_id here, once, for all attempts."""
    request = pb.PublishBatchRequest(events=[_event(e) for e in events])
    request.ack_level = pb.AckLevel.ValueType(ack_level)
    if kafka_wait is not None:
        request.kafka_wait.FromNanoseconds(int(kafka_wait * 1e9))
    return request


def _entries(
    events: Sequence[pb.Event], entries: Sequence[pb.PublishBatchEntry]
) -> list[PublishResult | PublishFailure]:
    """One PublishResult or PublishFailure per event (PublishBatch and PublishStream answers)."""
    out: list[PublishResult | PublishFailure] = []
    for event, entry in zip(events, entries, strict=True):
        if entry.HasField("result"):
            out.append(_result(entry.result))
        else:
            out.append(
                PublishFailure(
                    event.event_id,
                    status_code(entry.error.code),
                    entry.error.reason,
                    entry.error.message,
                )
            )
    return out


class _Base:
    def __init__(self, deadline: float, attempt_timeout: float, ack_level: AckLevel) -> None:
        self.deadline, self.attempt_timeout, self.ack_level = deadline, attempt_timeout, ack_level
        self._closed = False

    def _request(
        self, events: Sequence[Event], ack_level: AckLevel | None, kafka_wait: float | None
    ) -> pb.PublishBatchRequest:
        return _batch_request(events, ack_level or self.ack_level, kafka_wait)

    def _attempts(self, deadline: float | None, kafka_wait: float | None) -> Attempts:
        # An attempt must outlast the Kafka wait it asked for.
        timeout = max(self.attempt_timeout, (kafka_wait or 0.0) + 1.0)
        return Attempts(deadline if deadline is not None else self.deadline, timeout)

    def _single(self, request: pb.PublishBatchRequest) -> pb.PublishRequest:
        single = pb.PublishRequest(event=request.events[0], ack_level=request.ack_level)
        if request.HasField("kafka_wait"):
            single.kafka_wait.CopyFrom(request.kafka_wait)
        return single


class FerryPublisher(_Base):
    """Blocking publisher; thread-safe. Retries per the client's policy (see README).

    `deadline` bounds one publish with all its retries; `attempt_timeout` one attempt.
    Raises FerryError on a non-retryable error or when the deadline passes.
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        credentials: Credentials | None = None,
        deadline: float = 60.0,
        attempt_timeout: float = 10.0,
        ack_level: AckLevel = AckLevel.DURABLE,
        service_config: bool = False,
    ) -> None:
        super().__init__(deadline, attempt_timeout, ack_level)
        self._own_channel = channel is None
        self._channel = channel or open_channel(addr, credentials, service_config)
        self._stub = publisher_pb2_grpc.PublisherStub(self._channel)

    def publish(
        self,
        topic: str,
        payload: Bytes | None,
        key: Bytes | None = None,
        headers: Headers = (),
        *,
        event_id: str | None = None,
        ack_level: AckLevel | None = None,
        kafka_wait: float | None = None,
        deadline: float | None = None,
    ) -> PublishResult:
        """Publish one event and return Ferry's answer once it is durable (or in Kafka)."""
        batch = self._request(
            [Event(topic, payload, key, headers, event_id)], ack_level, kafka_wait
        )
        request = self._single(batch)
        response = self._call(self._stub.Publish, request, self._attempts(deadline, kafka_wait))
        return _result(response.result)

    def publish_batch(
        self,
        events: Sequence[Event],
        *,
        ack_level: AckLevel | None = None,
        kafka_wait: float | None = None,
        deadline: float | None = None,
    ) -> list[PublishResult | PublishFailure]:
        """Publish events in one write; one result (or failure) per event, in order."""
        request = self._request(events, ack_level, kafka_wait)
        attempts = self._attempts(deadline, kafka_wait)
        response = self._call(self._stub.PublishBatch, request, attempts)
        return _entries(request.events, response.entries)

    def _call(self, method: Callable[..., R], request: object, attempts: Attempts) -> R:
        while True:
            try:
                return method(request, timeout=attempts.timeout())
            except grpc.RpcError as error:
                time.sleep(attempts.wait_after(error, caller_cancelled=self._closed))

    def close(self) -> None:
        self._closed = True
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> FerryPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFerryPublisher(_Base):
    """The asyncio twin of FerryPublisher; cancelling the task cancels the publish."""

    def __init__(
        self,
        addr: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        credentials: Credentials | None = None,
        deadline: float = 60.0,
        attempt_timeout: float = 10.0,
        ack_level: AckLevel = AckLevel.DURABLE,
        service_config: bool = False,
    ) -> None:
        super().__init__(deadline, attempt_timeout, ack_level)
        self._own_channel = channel is None
        self._channel = channel or open_aio_channel(addr, credentials, service_config)
        self._stub = publisher_pb2_grpc.PublisherStub(self._channel)

    async def publish(
        self,
        topic: str,
        payload: Bytes | None,
        key: Bytes | None = None,
        headers: Headers = (),
        *,
        event_id: str | None = None,
        ack_level: AckLevel | None = None,
        kafka_wait: float | None = None,
        deadline: float | None = None,
    ) -> PublishResult:
        batch = self._request(
            [Event(topic, payload, key, headers, event_id)], ack_level, kafka_wait
        )
        request = self._single(batch)
        attempts = self._attempts(deadline, kafka_wait)
        while True:
            try:
                response = await self._stub.Publish(request, timeout=attempts.timeout())
                return _result(response.result)
            except grpc.RpcError as error:
                await asyncio.sleep(attempts.wait_after(error, caller_cancelled=self._closed))

    async def publish_batch(
        self,
        events: Sequence[Event],
        *,
        ack_level: AckLevel | None = None,
        kafka_wait: float | None = None,
        deadline: float | None = None,
    ) -> list[PublishResult | PublishFailure]:
        request = self._request(events, ack_level, kafka_wait)
        attempts = self._attempts(deadline, kafka_wait)
        while True:
            try:
                response = await self._stub.PublishBatch(request, timeout=attempts.timeout())
                return _entries(request.events, response.entries)
            except grpc.RpcError as error:
                await asyncio.sleep(attempts.wait_after(error, caller_cancelled=self._closed))

    async def close(self) -> None:
        self._closed = True
        if self._own_channel:
            await self._channel.close(None)

    async def __aenter__(self) -> AsyncFerryPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
