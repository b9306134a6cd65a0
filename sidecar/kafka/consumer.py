"""One Kafka consumer on its own thread, for one subscription (one consumer group).

The thread owns the confluent-kafka Consumer: it polls, runs the rebalance
callbacks and carries out the commands (commit, hold) that the subscription
posts. It decides nothing: records and assignments go to a
`ConsumerSink` on the event loop, and on revoke it asks the sink, and waits
for, the offsets to commit before letting the partitions go. Auto-commit and
auto offset store are off: only offsets the subscription hands over are
committed.

While the subscription holds all it may, the thread takes no records: it
waits on its commands, and librdkafka keeps its prefetch (and stops fetching
once `queued.max.messages.kbytes` is queued), so taking again costs no
re-fetch. Callbacks (rebalances, statistics) are served only by consume(),
and librdkafka leaves the group of a consumer that does not consume within
`max.poll.interval.ms`: a hold longer than HOLD_BEFORE_PAUSE_S pauses the
partitions (dropping their prefetch) and consumes again to serve callbacks.

It also feeds a `ConsumerWatchdog` and, when the watchdog finds the consumer
stuck outside its group (librdkafka issue #2944), replaces it: queued commits
run first, closing revokes whatever the consumer still owns exactly like a
rebalance (the acked prefix is committed, leases are dropped and redelivered),
then a new consumer joins the same group.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from confluent_kafka import Consumer, KafkaError, TopicPartition

from sidecar import failpoints
from sidecar.clock import SystemClock
from sidecar.kafka.lag import committed_lag
from sidecar.kafka.ports import AssignedPartition, CommitOffset, FetchedRecord, headers_size
from sidecar.kafka.watchdog import ConsumerWatchdog
from sidecar.lifecycle import supervised
from sidecar.observability.kafka_logs import KafkaClientLog

log = structlog.get_logger(__name__)

TopicPartitionKey = tuple[str, int]
REVOKE_TIMEOUT_S = 15.0
BATCH = 500
POLL_S = 0.05
# A hold this long pauses the partitions: rebalance callbacks wait at most this long, and a fast
# subscriber (whose holds last milliseconds) never loses librdkafka's prefetch.
HOLD_BEFORE_PAUSE_S = 0.5
STATISTICS_INTERVAL_MS = 1000
# A consumer owning nothing and showing no life for this many session timeouts is replaced;
# the limit doubles with each replacement in a row, up to the cap.
STALL_SESSIONS = 3
MAX_STALL_S = 600.0
WATCHDOG_EVERY_S = 1.0
CLOSE_TIMEOUT_S = 30.0
REPLACED_CLOSE_WAIT_S = 2.0


class ConsumerSink(Protocol):
    """The subscription's side; every method runs on the event loop."""

    def on_assigned(self, partitions: list[AssignedPartition]) -> None: ...

    def on_records(self, records: list[FetchedRecord]) -> None: ...

    async def on_revoked(
        self, partitions: list[TopicPartitionKey], lost: bool
    ) -> list[CommitOffset]: ...

    def on_consumer_replaced(self) -> None: ...

    def on_committed_lag(self, lag: int | None) -> None: ...


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
        # The watchdog reads the group state from the statistics.
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
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
        self._group = str(config["group.id"])
        self._topics = list(topics)
        self._loop = loop
        self._sink = sink
        self._commands: queue.SimpleQueue[Callable[[Consumer], None]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._wanted = False
        stall_s = STALL_SESSIONS * int(config.get("session.timeout.ms", 10_000)) / 1000
        # Owned by the consumer thread, like everything below.
        self._watchdog = ConsumerWatchdog(SystemClock(), stall_s, max(stall_s, MAX_STALL_S))
        self._owned: set[TopicPartitionKey] = set()
        self._holding = False
        self._held_since = 0.0
        self._fetch_paused = False
        self._generation = 0
        self._group_state = ("", "")
        self._lag: int | None = None
        # What the thread hands to the loop, in order. One wake-up of the loop drains all of it:
        # a wake-up per consumed batch (a pipe write each) cost more than the batch's records.
        self._outbox: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        self._drain_scheduled = False
        self.replacements = 0
        name = f"consumer-{self._group}"
        self._thread = threading.Thread(target=supervised(name, self._run), name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def commit(self, offsets: Sequence[CommitOffset]) -> None:
        if offsets:
            self._commands.put(lambda c: _commit(c, offsets, asynchronous=True))

    def hold_records(self, holding: bool) -> None:
        """While `holding`, hand over no records; the command wakes a waiting thread at once."""
        self._commands.put(lambda c: self._hold(c, holding))

    def want_records(self, wanted: bool) -> None:
        """Whether subscribers wait for records: only then is a stuck consumer replaced."""
        self._wanted = wanted

    def stop(self) -> None:
        """Leave the group: the revoke callback commits the acked prefix. Blocks; call off-loop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        consumer = self._open()
        next_check = time.monotonic() + WATCHDOG_EVERY_S
        try:
            while not self._stopping.is_set():
                self._run_commands(consumer)
                if not self._consuming(consumer):
                    self._run_commands(consumer, wait_s=POLL_S)
                    messages = []
                else:
                    # consume(n, timeout) waits for all n records or the whole timeout: at a
                    # steady trickle every batch would wait POLL_S. Take what is there, else
                    # wait for one.
                    messages = consumer.consume(BATCH, timeout=0) or consumer.consume(
                        1, timeout=POLL_S
                    )
                if messages:
                    records = [r for r in map(_record, messages) if r is not None]
                    if len(records) < len(messages):
                        self._consume_errors(messages)
                    if records:
                        failpoints.hit("consumer.crash")  # escapes: the thread dies (fault tests)
                        self._watchdog.fetched()
                        self._post(self._sink.on_records, records)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + WATCHDOG_EVERY_S
                    consumer = self._check_watchdog(consumer)
            self._run_commands(consumer)
        except BaseException:
            # Ferry stops on a dead consumer thread (sidecar/lifecycle.py): leave the group
            # briefly, so that what is acked is committed, without holding that up.
            self._close(consumer, REPLACED_CLOSE_WAIT_S)
            raise
        self._close(consumer)

    def _open(self) -> Consumer:
        generation = self._generation

        def current(callback: Callable[..., None]) -> Callable[..., None]:
            # A replaced consumer whose close was abandoned must not touch the new one's state.
            def guarded(*args: Any) -> None:
                if generation == self._generation:
                    callback(*args)

            return guarded

        # Its log lines and error reports are delivered by consume(), on this thread.
        logs = KafkaClientLog("consumer", self._config, group=self._group)
        consumer = Consumer(
            {
                **self._config,
                "error_cb": logs.on_error,
                "logger": logs.logger,
                "stats_cb": current(self._on_statistics),
            }
        )
        consumer.subscribe(
            self._topics,
            on_assign=current(self._on_assign),
            on_revoke=current(lambda c, ps: self._on_revoke(c, ps, lost=False)),
            on_lost=current(lambda c, ps: self._on_revoke(c, ps, lost=True)),
        )
        return consumer

    def _close(self, consumer: Consumer, wait_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close (runs on_revoke: the final commit of the acked prefix), waiting up to `wait_s`."""
        closer = threading.Thread(target=consumer.close, name=f"close-{self._group}", daemon=True)
        closer.start()
        closer.join(wait_s)
        if closer.is_alive():
            log.warning("consumer_close_abandoned", group=self._group, after_s=wait_s)
        else:
            log.info("consumer_closed", group=self._group)

    def _check_watchdog(self, consumer: Consumer) -> Consumer:
        stall = self._watchdog.check(self._wanted)
        if stall is None:
            return consumer
        self.replacements += 1
        log.warning(
            "consumer_replaced",
            group=self._group,
            reason=stall.reason,
            stalled_s=round(stall.stalled_s, 1),
            group_state=stall.group_state,
            replacements_in_a_row=stall.replacements_in_a_row,
            replacements_total=self.replacements,
        )
        self._run_commands(consumer)  # commits of acked offsets first, while we can
        # A stuck consumer's close can hang as long as the consumer would have (30 s seen in
        # wait-unassign-to-complete): give it a moment, then let it finish on its own thread.
        self._close(consumer, REPLACED_CLOSE_WAIT_S)
        self._generation += 1
        if self._owned:  # the close was abandoned before revoking: drop them as lost
            self._on_revoke(consumer, [TopicPartition(t, p) for t, p in self._owned], lost=True)
        self._fetch_paused = False
        self._held_since = time.monotonic()
        self._watchdog.replaced()
        self._post(lambda _: self._sink.on_consumer_replaced(), None)
        return self._open()

    def _consume_errors(self, messages: list[Any]) -> None:
        for message in messages:
            error = message.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                continue
            log.warning("consume_error", group=self._group, error=str(error))
            # On the consume path NOT_COORDINATOR comes from the committed-offset fetch of an
            # assignment (commit errors go to the commit callback).
            if error.code() == KafkaError.NOT_COORDINATOR:
                self._watchdog.offsets_unfetched()

    def _post(self, handler: Callable[[Any], None], value: Any) -> None:
        """Run `handler(value)` on the loop, after everything posted before."""
        self._outbox.append((handler, value))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Cleared before draining: an item posted meanwhile is drained here or schedules anew.
        self._drain_scheduled = False
        outbox = self._outbox
        while outbox:
            handler, value = outbox.popleft()
            try:
                handler(value)
            except Exception:  # one failed hand-off must not hold back the ones behind it
                log.exception("consumer_handoff_failed", group=self._group)

    def _consuming(self, consumer: Consumer) -> bool:
        """Whether to consume now: not while a hold is young; a hold grown old pauses first."""
        if not self._holding or self._fetch_paused:
            return True
        held_s = time.monotonic() - self._held_since
        if held_s < HOLD_BEFORE_PAUSE_S:
            return False
        self._set_paused(consumer, list(self._owned), paused=True)
        log.info("partitions_paused", group=self._group, held_s=round(held_s, 2))
        return True

    def _hold(self, consumer: Consumer, holding: bool) -> None:
        if holding == self._holding:
            return
        self._holding = holding
        if holding:
            self._held_since = time.monotonic()
        elif self._fetch_paused:
            self._set_paused(consumer, list(self._owned), paused=False)
            log.info("partitions_resumed", group=self._group)

    def _set_paused(
        self, consumer: Consumer, partitions: Sequence[TopicPartitionKey], *, paused: bool
    ) -> None:
        self._fetch_paused = paused
        if partitions:
            parts = [TopicPartition(t, p) for t, p in partitions]
            if paused:
                consumer.pause(parts)
            else:
                consumer.resume(parts)

    def _settle_assigned(self, consumer: Consumer, partitions: Sequence[TopicPartitionKey]) -> None:
        # librdkafka keeps a partition paused across revoke and re-assign: say explicitly what
        # every newly assigned partition does.
        owned = [p for p in partitions if p in self._owned]  # not revoked meanwhile
        self._set_paused(consumer, owned, paused=self._fetch_paused)

    def _run_commands(self, consumer: Consumer, wait_s: float = 0.0) -> None:
        """Run the queued commands; with `wait_s`, first wait that long at most for one."""
        while True:
            try:
                if wait_s > 0:
                    command = self._commands.get(timeout=wait_s)
                    wait_s = 0.0
                else:
                    command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command(consumer)
            except Exception as exc:  # a failed commit is retried by the next one
                log.warning("consumer_command_failed", error=str(exc))

    def _on_statistics(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        lag = committed_lag(stats, self._owned)
        if lag != self._lag:
            self._lag = lag
            self._post(self._sink.on_committed_lag, lag)
        group = stats.get("cgrp") or {}
        state = (str(group.get("state")), str(group.get("join_state")))
        if state != self._group_state:
            self._group_state = state
            log.debug("consumer_group_state", group=self._group, state=state[0], join=state[1])
        self._watchdog.group_reported(*state)

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
        keys = [(a.topic, a.partition) for a in assigned]
        self._owned.update(keys)
        # After the callback: confluent-kafka assigns the partitions once it returns.
        self._commands.put(lambda c: self._settle_assigned(c, keys))
        self._watchdog.rebalanced(len(self._owned))
        log.info(
            "partitions_assigned",
            group=self._group,
            partitions=[(a.topic, a.partition) for a in assigned],
        )
        self._post(self._sink.on_assigned, assigned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], lost: bool) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._owned.difference_update(keys)
        self._watchdog.rebalanced(len(self._owned))
        log.info("partitions_revoked", group=self._group, partitions=keys, lost=lost)
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
    if message.error() is not None:  # reported by ConsumerThread._consume_errors
        return None
    timestamp_type, timestamp = message.timestamp()
    key, value, headers = message.key(), message.value(), message.headers()
    size = (len(value) if value else 0) + (len(key) if key else 0)
    if headers:
        headers = tuple(headers)
        size += headers_size(headers)
    else:
        headers = ()
    # tuple.__new__ skips the named tuple's Python-level __new__: one record per message.
    return _new_tuple(
        FetchedRecord,
        (
            message.topic(),
            message.partition(),
            message.offset(),
            key,
            value,
            headers,
            timestamp,
            timestamp_type,
            size,
        ),
    )


_new_tuple = tuple.__new__
