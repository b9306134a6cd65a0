"""One Kafka consumer on its own thread, for one subscription (one consumer group).

The thread owns the confluent-kafka Consumer: it polls, runs the rebalance
callbacks and carries out the commands (commit, pause, resume) that the
subscription posts. It decides nothing: records and assignments go to a
`ConsumerSink` on the event loop, and on revoke it asks the sink, and waits
for, the offsets to commit before letting the partitions go. Auto-commit and
auto offset store are off: only offsets the subscription hands over are
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, TopicPartition

log = structlog.get_logger(__name__)

TopicPartitionKey = tuple[str, int]
REVOKE_TIMEOUT_S = 15.0
BATCH = 500


@dataclass(frozen=True, slots=True)
class FetchedRecord:
    """A record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")


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
    """The subscription's side; every method runs on the event loop."""

    def on_assigned(self, partitions: list[AssignedPartition]) -> None: ...

    def on_records(self, records: list[FetchedRecord]) -> None: ...

    async def on_revoked(
        self, partitions: list[TopicPartitionKey], lost: bool
    ) -> list[CommitOffset]: ...


def consumer_config(
    bootstrap: str,
    group: str,
    start_latest: bool,
    extra: Mapping[str, str],
    session_timeout_ms: int = 10_000,
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": f"ferry-{group}",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(100, session_timeout_ms // 10),
        "queued.max.messages.kbytes": 16 * 1024,
        "fetch.max.bytes": 16 * 1024 * 1024,
        **extra,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "latest" if start_latest else "earliest",
        "enable.partition.eof": False,
    }


class ConsumerThread:
    """Polls Kafka for one subscription and executes its commands between polls."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        loop: asyncio.AbstractEventLoop,
        sink: ConsumerSink,
    ) -> None:
        self._config = config
        self._topics = list(topics)
        self._loop = loop
        self._sink = sink
        self._commands: queue.SimpleQueue[Callable[[Consumer], None]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"consumer-{config['group.id']}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def commit(self, offsets: Sequence[CommitOffset]) -> None:
        if offsets:
            self._commands.put(lambda c: _commit(c, offsets, asynchronous=True))

    def pause(self, partitions: Sequence[TopicPartitionKey]) -> None:
        if partitions:
            self._commands.put(lambda c: c.pause([TopicPartition(t, p) for t, p in partitions]))

    def resume(self, partitions: Sequence[TopicPartitionKey]) -> None:
        if partitions:
            self._commands.put(lambda c: c.resume([TopicPartition(t, p) for t, p in partitions]))

    def stop(self) -> None:
        """Leave the group: the revoke callback commits the acked prefix. Blocks; call off-loop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        consumer = Consumer({**self._config, "error_cb": _log_error})
        consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=lambda c, ps: self._on_revoke(c, ps, lost=False),
            on_lost=lambda c, ps: self._on_revoke(c, ps, lost=True),
        )
        try:
            while not self._stopping.is_set():
                self._run_commands(consumer)
                messages = consumer.consume(BATCH, timeout=0.05)
                records = [r for r in (_record(m) for m in messages) if r is not None]
                if records:
                    self._loop.call_soon_threadsafe(self._sink.on_records, records)
            self._run_commands(consumer)
        finally:
            consumer.close()  # runs on_revoke: the final commit of the acked prefix
            log.info("consumer_closed", group=self._config["group.id"])

    def _run_commands(self, consumer: Consumer) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command(consumer)
            except Exception as exc:  # a failed commit is retried by the next one
                log.warning("consumer_command_failed", error=str(exc))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed: list[TopicPartition] = partitions
        with contextlib.suppress(Exception):  # unknown committed offsets: start from reset policy
            committed = consumer.committed(partitions, timeout=10)
        assigned = [
            AssignedPartition(
                tp.topic,
                tp.partition,
                tp.offset if tp.offset >= 0 else None,
                getattr(tp, "metadata", None) or "",
            )
            for tp in committed
        ]
        log.info("partitions_assigned", partitions=[(a.topic, a.partition) for a in assigned])
        self._loop.call_soon_threadsafe(self._sink.on_assigned, assigned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], lost: bool) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        log.info("partitions_revoked", partitions=keys, lost=lost)
        offsets = self._ask_loop(self._sink.on_revoked(keys, lost))
        if offsets and not lost:
            try:
                _commit(consumer, offsets, asynchronous=False)
            except Exception as exc:  # the next owner redelivers from the older commit
                log.warning("revoke_commit_failed", error=str(exc))

    def _ask_loop(self, work: Awaitable[list[CommitOffset]]) -> list[CommitOffset]:
        try:
            future = asyncio.run_coroutine_threadsafe(_await(work), self._loop)
            return future.result(REVOKE_TIMEOUT_S)
        except Exception as exc:  # the loop is gone (process exit): commit nothing new
            log.warning("revoke_without_loop", error=str(exc))
            return []


async def _await(work: Awaitable[list[CommitOffset]]) -> list[CommitOffset]:
    return await work


def _commit(consumer: Consumer, offsets: Sequence[CommitOffset], *, asynchronous: bool) -> None:
    partitions = [TopicPartition(o.topic, o.partition, o.offset, o.metadata) for o in offsets]
    if asynchronous:
        consumer.commit(offsets=partitions, asynchronous=True)
    else:
        consumer.commit(offsets=partitions, asynchronous=False)


def _record(message: Any) -> FetchedRecord | None:
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consume_error", error=str(error))
        return None
    _, timestamp = message.timestamp()
    return FetchedRecord(
        message.topic(),
        message.partition(),
        message.offset(),
        message.key(),
        message.value(),
        tuple(message.headers() or ()),
        int(timestamp),
    )


def _log_error(err: Any) -> None:
    log.warning("kafka_consumer_error", error=str(err))
