"""One Ferry's state at a moment: the write-ahead log's depth, the forwarder and its lanes, the
subscriptions, the disk. The admin view (`ferry.v1.Admin/GetStatus`) answers it and the
metrics publish it, both from the same `StatusSources.snapshot()`.

Taking one reads what the parts already keep (the writer's usage, the forwarder's status and
counters, each subscription's totals) and looks up each topic's oldest pending event in the
log (one index read per topic, off the event loop): nothing is counted for it on the paths
that publish or deliver. It holds names, counts and error messages: never a payload, a key, a
header or a secret.
"""

from __future__ import annotations

import asyncio
import platform
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import confluent_kafka
import grpc
import structlog

from sidecar import __version__
from sidecar.forward.counters import ForwarderCounters, ForwarderStatus
from sidecar.subscribe.subscription import Subscription
from sidecar.wal.admission import Usage
from sidecar.wal.peek import oldest_pending_ms
from sidecar.wal.reserve import DiskReserve

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    pending_events: int
    pending_bytes: int
    oldest_pending_age_s: float | None
    max_events: int
    max_bytes: int
    parked_events: int

    @property
    def cap_used(self) -> float:
        """The larger share of the cap in use, events or bytes (1: publishes are refused)."""
        return max(self.pending_events / self.max_events, self.pending_bytes / self.max_bytes)


@dataclass(frozen=True, slots=True)
class ForwarderSnapshot:
    kafka_reachable: bool
    in_flight_events: int
    sent_events: int
    delivered_events: int
    resent_events: int
    found_in_kafka_events: int
    parked_events: int
    lane_restarts: int
    process_restarts: int
    errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class TopicSnapshot:
    topic: str
    pending_events: int
    pending_bytes: int
    oldest_pending_age_s: float | None
    in_flight_events: int
    backing_off: bool
    failures: int
    retry_in_s: float
    last_error: str


@dataclass(frozen=True, slots=True)
class SubscriptionSnapshot:
    name: str
    topics: tuple[str, ...]
    streams: int
    outstanding_leases: int
    held_records: int
    waiting_redelivery: int
    paused: bool
    committed_lag: int | None
    deliveries: int
    redeliveries: int
    acks: int
    nacks: int
    lease_expiries: int
    dead_lettered: int
    consumer_replacements: int


@dataclass(frozen=True, slots=True)
class DiskSnapshot:
    free_bytes: int
    reserve_bytes: int
    reserve_held: bool


@dataclass(frozen=True, slots=True)
class FerrySnapshot:
    version: str
    build: str
    time: float  # Unix seconds
    start_time: float
    draining: bool
    log: LogSnapshot
    forwarder: ForwarderSnapshot
    topics: tuple[TopicSnapshot, ...]
    subscriptions: tuple[SubscriptionSnapshot, ...]
    disk: DiskSnapshot

    @property
    def uptime_s(self) -> float:
        return max(0.0, self.time - self.start_time)


def build_description() -> str:
    """What this Ferry runs on: Python, gRPC and librdkafka versions."""
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"grpcio {grpc.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    )


class LogView(Protocol):
    """What the snapshot reads of the log writer."""

    parked_rows: int

    @property
    def usage(self) -> Usage: ...

    @property
    def data_dir(self) -> Path: ...


class ForwarderView(Protocol):
    @property
    def counters(self) -> ForwarderCounters: ...

    def status(self) -> ForwarderStatus: ...


class SubscriptionsView(Protocol):
    def open_subscriptions(self) -> list[Subscription]: ...


@dataclass(frozen=True, slots=True)
class LogLimits:
    max_events: int
    max_bytes: int
    disk_reserve_bytes: int


def subscription_snapshot(subscription: Subscription) -> SubscriptionSnapshot:
    """A subscription's state; on the event loop, which owns it."""
    status = subscription.status()
    settings = subscription.settings
    return SubscriptionSnapshot(
        name=settings.name,
        topics=settings.topics,
        streams=status["streams"],
        outstanding_leases=status["leased"],
        held_records=status["held"],
        waiting_redelivery=status["waiting_redelivery"],
        paused=bool(status["paused"]),
        committed_lag=subscription.committed_lag,
        deliveries=status["delivered_total"],
        redeliveries=status["redelivered_total"],
        acks=status["acked_total"],
        nacks=status["nacked_total"],
        lease_expiries=status["expired_total"],
        dead_lettered=status["dead_lettered_total"],
        consumer_replacements=status["consumer_replaced_total"],
    )


def forwarder_snapshot(status: ForwarderStatus, counters: ForwarderCounters) -> ForwarderSnapshot:
    return ForwarderSnapshot(
        kafka_reachable=status.kafka_reachable,
        in_flight_events=status.in_flight,
        sent_events=counters.sent_events,
        delivered_events=status.delivered_total,
        resent_events=status.resent_total,
        found_in_kafka_events=counters.found_in_kafka,
        parked_events=status.parked_total,
        lane_restarts=counters.lane_restarts,
        process_restarts=counters.process_restarts,
        errors=dict(counters.errors),
    )


def topic_snapshots(
    usage: Usage, status: ForwarderStatus, oldest_ms: dict[str, int], now: float
) -> tuple[TopicSnapshot, ...]:
    """One entry per topic with pending events or a lane, by name."""
    lanes = {lane.topic: lane for lane in status.lanes}
    topics = sorted(set(usage.topics) | set(lanes))
    snapshots: list[TopicSnapshot] = []
    for topic in topics:
        rows, size = usage.topics.get(topic, (0, 0))
        lane = lanes.get(topic)
        oldest = oldest_ms.get(topic) if rows else None
        snapshots.append(
            TopicSnapshot(
                topic=topic,
                pending_events=rows,
                pending_bytes=size,
                oldest_pending_age_s=None if oldest is None else max(0.0, now - oldest / 1000),
                in_flight_events=lane.in_flight if lane else 0,
                backing_off=lane.backing_off if lane else False,
                failures=lane.failures if lane else 0,
                retry_in_s=lane.retry_in_s if lane else 0.0,
                last_error=lane.last_error if lane else "",
            )
        )
    return tuple(snapshots)


def log_snapshot(
    usage: Usage, topics: tuple[TopicSnapshot, ...], parked: int, limits: LogLimits
) -> LogSnapshot:
    ages = [t.oldest_pending_age_s for t in topics if t.oldest_pending_age_s is not None]
    return LogSnapshot(
        pending_events=usage.rows,
        pending_bytes=usage.size,
        oldest_pending_age_s=max(ages) if ages else None,
        max_events=limits.max_events,
        max_bytes=limits.max_bytes,
        parked_events=parked,
    )


def disk_snapshot(data_dir: Path, reserve_bytes: int) -> DiskSnapshot:
    reserve = DiskReserve(data_dir, reserve_bytes)
    return DiskSnapshot(
        free_bytes=reserve.free_bytes(),
        reserve_bytes=reserve.size,
        reserve_held=reserve.size > 0 and reserve.held,
    )


class StatusSources:
    """Where a snapshot's parts come from. `snapshot()` runs on the event loop (it owns the
    subscriptions); the log look-ups and the disk's run off it."""

    def __init__(
        self,
        log: LogView,
        forwarder: ForwarderView,
        subscriptions: SubscriptionsView,
        limits: LogLimits,
        draining: Callable[[], bool],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = log
        self._forwarder = forwarder
        self._subscriptions = subscriptions
        self._limits = limits
        self._draining = draining
        self._wall_clock = wall_clock
        self._build = build_description()
        self.start_time = wall_clock()

    async def snapshot(self) -> FerrySnapshot:
        subscriptions = tuple(
            subscription_snapshot(s) for s in self._subscriptions.open_subscriptions()
        )
        usage = self._log.usage
        status = self._forwarder.status()
        counters = self._forwarder.counters
        oldest, disk = await asyncio.to_thread(self._read_files, list(usage.topics))
        now = self._wall_clock()
        topics = topic_snapshots(usage, status, oldest, now)
        return FerrySnapshot(
            version=__version__,
            build=self._build,
            time=now,
            start_time=self.start_time,
            draining=self._draining(),
            log=log_snapshot(usage, topics, self._log.parked_rows, self._limits),
            forwarder=forwarder_snapshot(status, counters),
            topics=topics,
            subscriptions=subscriptions,
            disk=disk,
        )

    def _read_files(self, topics: list[str]) -> tuple[dict[str, int], DiskSnapshot]:
        data_dir = self._log.data_dir
        oldest: dict[str, int] = {}
        try:
            oldest = oldest_pending_ms(data_dir, topics) if topics else {}
        except sqlite3.Error as exc:  # a busy or full disk: the ages are unknown this time
            log.warning("status_log_read_failed", error=str(exc))
        return oldest, disk_snapshot(data_dir, self._limits.disk_reserve_bytes)
