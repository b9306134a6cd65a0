"""One subscription in this sidecar: records from Kafka → leases on streams → acks → commits.

Runs entirely on the event loop and holds the whole per-subscription state:
records fetched and not yet acked, the fresh queue, leases, redeliveries,
per-partition ack trackers, and the streams. It never calls Kafka directly:
it posts commits and holds to a `ConsumerControl`, and it hands
dead letters to the durable publish path. Rules it keeps:

- a record is leased to one stream at a time; every lease that ends without
  an ack (expiry, nack, closed stream) is redelivered with attempt + 1 (after
  the subscription's backoff, for expiries and nacks without a delay), or
  dead-lettered once it used up `max_delivery_attempts` or when a nack asks;
- under per-key ordering, at most one record per (partition, key) is
  outstanding (KeyOrder), so redeliveries come before newer records of a key;
- a partition's commit never passes an unacked record, and out-of-order acks
  travel in the commit metadata (commits.py);
- on revoke, the partition's leases, queued records and redeliveries are
  dropped and only the acked prefix is committed;
- memory is bounded: past what it may hold it takes no records from its consumer, and takes
  again once half of that is left (flow_control.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sidecar.clock import Clock
from sidecar.errors import NoDeadLetterTopic
from sidecar.kafka.ports import AssignedPartition, CommitOffset, FetchedRecord
from sidecar.model import OutgoingEvent
from sidecar.subscribe.commits import PartitionCommits
from sidecar.subscribe.deadletter import DeadLetterSink, dead_letter_event, write_dead_letter
from sidecar.subscribe.flow_control import DeliveryRate, FlowControl, Limits, Move
from sidecar.subscribe.held import HeldRecords
from sidecar.subscribe.leases import AckOutcome, DeliveryKey, Lease, LeaseTable, TopicPartition
from sidecar.subscribe.redelivery import RedeliveryQueue, redelivery_backoff
from sidecar.subscribe.stream import LeasedRecord, Stream, StreamOptions

COMMIT_EVERY_S = 0.5

# Builds a named tuple without its Python-level __new__, on paths taken once per record.
_new_tuple = tuple.__new__

AckResult = tuple[str, AckOutcome, float | None]


class ConsumerControl(Protocol):
    """What a subscription asks of its Kafka consumer (thread-safe, non-blocking)."""

    def commit(self, offsets: list[CommitOffset]) -> None: ...

    def hold_records(self, holding: bool) -> None:
        """Whether the subscription holds all it may: then the consumer hands over no records."""

    def want_records(self, wanted: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    """What every stream of a subscription must agree on."""

    name: str
    topics: tuple[str, ...]
    max_delivery_attempts: int  # 0: unlimited
    dead_letter_topic: str  # "": none (then max_delivery_attempts is 0)
    start_latest: bool
    per_key_order: bool = False
    min_redelivery_backoff: float = 0.1  # seconds
    max_redelivery_backoff: float = 10.0


class Subscription:
    """The dispatcher of one subscription (a Kafka consumer group) in this sidecar."""

    def __init__(
        self,
        settings: SubscriptionSettings,
        clock: Clock,
        dead_letters: DeadLetterSink,
        limits: Limits | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._dead_letters = dead_letters
        self._flow = FlowControl(limits or Limits())
        self._rate = DeliveryRate()
        self._consumer: ConsumerControl | None = None
        self._leases = LeaseTable(clock)
        self._redelivery = RedeliveryQueue(clock)
        self._commits = PartitionCommits()
        self._held = HeldRecords(settings.per_key_order)
        self._records = self._held.records  # the same dict, read on the per-record paths
        self._streams: dict[int, Stream] = {}
        self._next_stream_id = 1
        self._turn = 0
        self._last_commit = 0.0
        self._dead_lettering: dict[DeliveryKey, asyncio.Task[None]] = {}
        # Running totals for the metrics and the admin view, counted per batch where a path is
        # taken per record (deliveries per dispatch, expiries per tick).
        self.delivered_total = 0
        self.acked_total = 0
        self.nacked_total = 0
        self.expired_total = 0
        self.redelivered_total = 0
        self.dead_lettered_total = 0
        self.consumer_replaced_total = 0
        #: Records past the committed offsets of its partitions, as its consumer last reported.
        self.committed_lag: int | None = None

    def attach(self, consumer: ConsumerControl) -> None:
        self._consumer = consumer

    # -- streams -----------------------------------------------------------------------------

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def open_stream(self, options: StreamOptions) -> Stream:
        stream = Stream(self._next_stream_id, options)
        self._next_stream_id += 1
        self._streams[stream.id] = stream
        if self._consumer is not None and len(self._streams) == 1:
            self._consumer.want_records(True)
        self._dispatch()
        return stream

    def close_stream(self, stream: Stream, *, count_attempt: bool = True) -> None:
        """The stream ended: its leases go back for immediate redelivery."""
        stream.closed = True
        if self._streams.pop(stream.id, None) and not self._streams and self._consumer is not None:
            self._consumer.want_records(False)
        # A record still in the outbox never reached the client: that was no delivery attempt.
        never_sent = stream.drop_unsent()
        for lease in self._leases.release_stream(stream.id):
            count = count_attempt and lease.ack_id not in never_sent
            self._lease_ended(lease, "subscriber stream closed", delay=0.0, count=count)
        self._dispatch()

    def close_all_streams(self, error: Exception) -> None:
        """Shutdown: end every stream; their leases are returned, not counted as failures."""
        for stream in list(self._streams.values()):
            stream.close(error)
            self.close_stream(stream, count_attempt=False)

    # -- acks --------------------------------------------------------------------------------

    def ack(self, ack_ids: Iterable[str]) -> list[AckResult]:
        results: list[AckResult] = []
        for ack_id, outcome, lease in self._leases.ack_many(ack_ids):
            if lease is not None:
                self._release_bytes(lease)
                self._settle(lease.key)
            results.append((ack_id, outcome, None))
        self._flow_control()
        self._dispatch()
        return results

    def nack(
        self, ack_ids: Iterable[str], delay: float | None = None, *, dead_letter: bool = False
    ) -> list[AckResult]:
        """End leases: redeliver after `delay` (None: the subscription's backoff), or with
        `dead_letter` send the records to the dead-letter topic, after which they count as acked.
        """
        if dead_letter and not self.settings.dead_letter_topic:
            raise NoDeadLetterTopic(
                f"subscription {self.settings.name!r} has no dead_letter_topic; open it with one "
                "to nack with dead_letter"
            )
        results: list[AckResult] = []
        for ack_id in ack_ids:
            lease = self._leases.get(ack_id)
            outcome = self._leases.nack(ack_id)
            if outcome is AckOutcome.APPLIED and lease is not None:
                self.nacked_total += 1
                if dead_letter:
                    self._release_bytes(lease)
                    if lease.key in self._records:
                        self._dead_letter(lease.key, lease.attempt, "dead-lettered by subscriber")
                else:
                    self._lease_ended(lease, "nacked by subscriber", delay=delay)
            results.append((ack_id, outcome, None))
        self._dispatch()
        return results

    def extend(self, ack_ids: Iterable[str], duration: float) -> list[AckResult]:
        return [(ack_id, *self._leases.extend(ack_id, duration)) for ack_id in ack_ids]

    # -- the consumer's side (ConsumerSink) --------------------------------------------------

    def on_assigned(self, partitions: list[AssignedPartition]) -> None:
        self._commits.assign(partitions)

    def on_records(self, records: list[FetchedRecord]) -> None:
        for partition in self._held.take_fetched(records, self._commits.trackers):
            self._commits.mark_due(partition)  # a record acked before a restart
        self._dispatch()
        self._flow_control()

    async def on_revoked(self, partitions: list[TopicPartition], lost: bool) -> list[CommitOffset]:
        gone = set(partitions)
        for lease in self._leases.revoke_partitions(gone):
            self._release_bytes(lease)
        self._redelivery.drop_partitions(gone)
        for key in self._held.drop_partitions(gone):
            self._forget(key)
        commits = self._commits.revoke(gone, lost)
        self._flow_control()
        return commits

    def on_consumer_replaced(self) -> None:
        """The consumer was stuck outside its group and a new one took its place."""
        self.consumer_replaced_total += 1

    def on_committed_lag(self, lag: int | None) -> None:
        self.committed_lag = lag

    # -- time --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire leases, hand out due redeliveries, commit what is committable."""
        expired = self._leases.expire()
        self.expired_total += len(expired)
        for lease in expired:
            self._lease_ended(lease, "lease expired")
        self._dispatch()
        self._flow_control()
        now = self._clock.monotonic()
        if self._commits.any_due and now - self._last_commit >= COMMIT_EVERY_S:
            self.commit_now()

    def commit_now(self) -> None:
        self._last_commit = self._clock.monotonic()
        offsets = self._commits.take_due()
        if offsets and self._consumer is not None:
            self._consumer.commit(offsets)

    def status(self) -> dict[str, int]:
        return {
            "streams": len(self._streams),
            "held": len(self._records),
            "leased": len(self._leases),
            "waiting_redelivery": len(self._redelivery),
            "waiting_for_key": self._held.waiting_for_key,
            "delivered_total": self.delivered_total,
            "acked_total": self.acked_total,
            "nacked_total": self.nacked_total,
            "expired_total": self.expired_total,
            "redelivered_total": self.redelivered_total,
            "dead_lettered_total": self.dead_lettered_total,
            "consumer_replaced_total": self.consumer_replaced_total,
            "paused": int(self._flow.holding),
        }

    # -- internals ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        streams = [s for s in self._streams.values() if not s.closed]
        if not streams:
            return
        try:
            self._fill(streams, self._clock.monotonic())
        finally:
            self.delivered_total += sum([stream.flush() for stream in streams])

    def _fill(self, streams: list[Stream], now: float) -> None:
        while ready := self._redelivery.pop_ready(1):
            key, attempt = ready[0]
            if key not in self._records:
                continue  # settled meanwhile (e.g. dead-lettered)
            if not self._grant(streams, key, attempt, now):
                self._redelivery.schedule(key, attempt, now)
                return
            self.redelivered_total += 1
        fresh = self._held.fresh
        while fresh:
            if not self._grant(streams, fresh[0], 1, now):
                return
            fresh.popleft()

    def _grant(self, streams: list[Stream], key: DeliveryKey, attempt: int, now: float) -> bool:
        record = self._records[key]
        size = record.size
        count = len(streams)
        for i in range(count):
            stream = streams[(self._turn + i) % count]
            if stream.can_take(self._leases.outstanding(stream.id), size):
                self._turn = (self._turn + i + 1) % count
                duration = stream.options.lease_duration
                lease = self._leases.grant(key, stream.id, duration, attempt, now)
                stream.deliver(_new_tuple(LeasedRecord, (lease, record)))
                return True
        return False

    def _lease_ended(
        self, lease: Lease, reason: str, delay: float | None = None, count: bool = True
    ) -> None:
        self._release_bytes(lease)
        if lease.key not in self._records:
            return
        limit = self.settings.max_delivery_attempts
        if count and limit and lease.attempt >= limit:
            self._dead_letter(lease.key, lease.attempt, reason)
            return
        if delay is None:
            settings = self.settings
            delay = redelivery_backoff(
                lease.attempt, settings.min_redelivery_backoff, settings.max_redelivery_backoff
            )
        next_attempt = lease.attempt + 1 if count else lease.attempt
        self._redelivery.schedule(lease.key, next_attempt, self._clock.monotonic() + delay)

    def _release_bytes(self, lease: Lease) -> None:
        stream = self._streams.get(lease.stream_id)
        record = self._records.get(lease.key)
        if stream is not None and record is not None:
            stream.leased_bytes -= record.size

    def _settle(self, key: DeliveryKey) -> None:
        self._held.settle(key)
        self._commits.ack(key.topic_partition, key.offset)
        self._end_dead_letter(key)
        self.acked_total += 1

    def _forget(self, key: DeliveryKey) -> None:
        self._held.forget(key)
        self._end_dead_letter(key)

    def _end_dead_letter(self, key: DeliveryKey) -> None:
        task = self._dead_lettering.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _dead_letter(self, key: DeliveryKey, attempts: int, reason: str) -> None:
        event = dead_letter_event(
            self._records[key],
            self.settings.name,
            self.settings.dead_letter_topic,
            attempts,
            reason,
        )
        write = self._write_dead_letter(key, event)
        self._dead_lettering[key] = asyncio.get_running_loop().create_task(write)

    async def _write_dead_letter(self, key: DeliveryKey, event: OutgoingEvent) -> None:
        await write_dead_letter(self._dead_letters, event)
        if key in self._records:
            self.dead_lettered_total += 1
            self._settle(key)
            self._flow_control()
            self._dispatch()

    def _flow_control(self) -> None:
        if self._consumer is None:
            return
        outstanding = sum(s.options.max_outstanding_events for s in self._streams.values())
        rate = self._rate.observe(self._clock.monotonic(), self.delivered_total)
        move = self._flow.decide(len(self._held), self._held.bytes, outstanding, rate)
        if move is not None:
            self._consumer.hold_records(move is Move.HOLD)

    async def close(self) -> None:
        """Cancel pending dead-letter writes (their records stay uncommitted)."""
        for task in list(self._dead_lettering.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
