"""Ferry's Prometheus metrics: what they are called, and how they are served.

Two kinds. Publish outcomes and latency are counted as each publish request is answered
(`PublishMetrics`: plain counts per result code and a latency bucket per request, never per
event, exported at scrape time). Everything else is read at scrape time from the state snapshot
the admin view answers too (`SnapshotCollector` over `StatusSources.snapshot()`), so it costs
nothing on the paths that publish, forward or deliver.

Names follow Prometheus' rules: `ferry_` first, the unit in the name (`_seconds`, `_bytes`),
counters end in `_total`. Labels hold topic and subscription names, Kafka error codes, gRPC
status codes and ack levels; never an event id, a payload or a secret.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sidecar.observability.snapshot import FerrySnapshot

#: Publish latency buckets: an fsync takes about a millisecond, a Kafka acknowledgement tens.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: The histogram's `le` label values.
BOUNDS = [str(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
ACK_LEVELS = ("durable", "kafka", "unknown")
OK = "OK"


class PublishMetrics(Collector):
    """Publish requests' outcomes by gRPC status code and ack level, and their latency.

    Called on the event loop once per request (a Publish, a PublishBatch, a PublishStream
    request) with the request's event count, so the cost does not grow with the batch: plain
    counts in dicts and lists (no lock: one thread writes), turned into a counter and a
    histogram at scrape time. A scrape on another thread copies each dict or list whole."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], int] = {}
        self._buckets = {level: [0] * (len(LATENCY_BUCKETS) + 1) for level in ACK_LEVELS}
        self._sums = dict.fromkeys(ACK_LEVELS, 0.0)

    def answered(
        self, ack_level: str, events: int, refused_codes: Sequence[str], started: float
    ) -> None:
        """A request of `events` events was answered; `refused_codes` holds the status code of
        each event that was refused (usually none)."""
        self._observe(ack_level, time.perf_counter() - started)
        counts = self._events
        ok = events - len(refused_codes)
        if ok:
            key = (OK, ack_level)
            counts[key] = counts.get(key, 0) + ok
        for code in refused_codes:
            counts[code, ack_level] = counts.get((code, ack_level), 0) + 1

    def refused(self, ack_level: str, events: int, code: str, started: float) -> None:
        """A whole request of `events` events was refused with `code`."""
        self._observe(ack_level, time.perf_counter() - started)
        self._events[code, ack_level] = self._events.get((code, ack_level), 0) + events

    def _observe(self, ack_level: str, seconds: float) -> None:
        self._buckets[ack_level][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sums[ack_level] += seconds

    def describe(self) -> list[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "ferry_publish_events",
            "Events of publish requests by result: the gRPC status code of the event's answer "
            "(OK: logged, or a duplicate of a logged event) and the requested ack level",
            labels=["code", "ack_level"],
        )
        for (code, level), count in sorted(dict(self._events).items()):
            events.add_metric([code, level], count)
        yield events
        duration = HistogramMetricFamily(
            "ferry_publish_duration_seconds",
            "Time from a publish request's arrival to its answer, by requested ack level",
            labels=["ack_level"],
        )
        for level in ACK_LEVELS:
            counts, total = list(self._buckets[level]), self._sums[level]
            cumulative = list(itertools.accumulate(counts))
            duration.add_metric([level], list(zip(BOUNDS, cumulative, strict=True)), total)
        yield duration


class _Family(NamedTuple):
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily]
    name: str
    help: str
    labels: tuple[str, ...] = ()


def _gauge(name: str, help_: str, *labels: str) -> _Family:
    return _Family(GaugeMetricFamily, name, help_, labels)


def _counter(name: str, help_: str, *labels: str) -> _Family:
    return _Family(CounterMetricFamily, name, help_, labels)


#: Every metric read from the snapshot, in exposition order (README lists them).
SNAPSHOT_METRICS = {
    "info": _gauge("ferry_build_info", "Ferry's version and build (always 1)", "version", "build"),
    "start": _gauge("ferry_start_time_seconds", "When this Ferry started (Unix seconds)"),
    "draining": _gauge("ferry_draining", "1 while Ferry drains (SIGTERM, or a dead thread)"),
    "pending": _gauge("ferry_wal_pending_events", "Events logged, not yet acknowledged by Kafka"),
    "pending_bytes": _gauge("ferry_wal_pending_bytes", "Bytes of the pending events"),
    "oldest": _gauge(
        "ferry_wal_oldest_pending_age_seconds",
        "How long the oldest pending event has waited (0: none pending)",
    ),
    "max_events": _gauge("ferry_wal_max_events", "The log's cap in events (--wal-max-rows)"),
    "max_bytes": _gauge("ferry_wal_max_bytes", "The log's cap in bytes (--wal-max-bytes)"),
    "cap_usage": _gauge(
        "ferry_wal_cap_usage_ratio",
        "Share of the log's tighter cap in use: pending events or bytes over their cap, 0 to 1",
    ),
    "parked": _gauge("ferry_wal_parked_events", "Events Kafka refused for good (ferry parked)"),
    "topic_pending": _gauge("ferry_topic_pending_events", "Pending events of one topic", "topic"),
    "topic_pending_bytes": _gauge(
        "ferry_topic_pending_bytes", "Bytes of one topic's pending events", "topic"
    ),
    "topic_backing_off": _gauge(
        "ferry_topic_backing_off",
        "1 while a topic's forwarding lane waits to retry after a failure",
        "topic",
    ),
    "reachable": _gauge("ferry_kafka_reachable", "1 while Kafka answers Ferry"),
    "in_flight": _gauge(
        "ferry_forwarder_in_flight_events", "Events handed to the producer, not yet acknowledged"
    ),
    "sent": _counter(
        "ferry_forwarder_sent_events", "Events handed to the Kafka producer (resends included)"
    ),
    "delivered": _counter("ferry_forwarder_delivered_events", "Events Kafka acknowledged"),
    "resent": _counter(
        "ferry_forwarder_resent_events", "Events sent again after a failure (possible duplicates)"
    ),
    "found_in_kafka": _counter(
        "ferry_forwarder_found_in_kafka_events",
        "Events a killed run had sent, found in Kafka at start and not sent again",
    ),
    "retries": _counter(
        "ferry_forwarder_retries", "Lanes started again after a failure and its backoff"
    ),
    "process_restarts": _counter(
        "ferry_forwarder_process_restarts",
        "Forwarder processes started again after one died (sidecar/forward/restarts.py)",
    ),
    "errors": _counter(
        "ferry_forwarder_errors",
        "Forwarding failures by kind (the Kafka error code, or other)",
        "kind",
    ),
    "parked_total": _counter(
        "ferry_forwarder_parked_events", "Events Kafka refused for good and parked"
    ),
    "streams": _gauge("ferry_subscription_streams", "Open Subscribe streams", "subscription"),
    "leases": _gauge(
        "ferry_subscription_outstanding_leases",
        "Records leased and not yet acked, nacked or expired",
        "subscription",
    ),
    "held": _gauge(
        "ferry_subscription_held_records",
        "Records fetched from Kafka and not yet acked",
        "subscription",
    ),
    "lag": _gauge(
        "ferry_subscription_committed_lag_records",
        "Records past the committed offsets of its assigned partitions (absent until known)",
        "subscription",
    ),
    "paused": _gauge(
        "ferry_subscription_paused",
        "1 while fetching is paused (it holds its limit)",
        "subscription",
    ),
    "deliveries": _counter(
        "ferry_subscription_deliveries",
        "Records delivered to streams (redeliveries included)",
        "subscription",
    ),
    "redeliveries": _counter(
        "ferry_subscription_redeliveries", "Records delivered again", "subscription"
    ),
    "acks": _counter("ferry_subscription_acks", "Acked records", "subscription"),
    "nacks": _counter("ferry_subscription_nacks", "Nacked leases", "subscription"),
    "expiries": _counter(
        "ferry_subscription_lease_expiries", "Leases that ran out without an ack", "subscription"
    ),
    "dead_lettered": _counter(
        "ferry_subscription_dead_lettered_events",
        "Records written to the dead-letter topic",
        "subscription",
    ),
    "replacements": _counter(
        "ferry_subscription_consumer_replacements",
        "Kafka consumers found stuck outside their group and replaced",
        "subscription",
    ),
    "disk_free": _gauge("ferry_disk_free_bytes", "Free bytes on the data directory's disk"),
    "reserve": _gauge(
        "ferry_disk_reserve_bytes", "Size of the disk reserve beside the log (0: disabled)"
    ),
    "reserve_held": _gauge(
        "ferry_disk_reserve_held",
        "1 while the disk reserve is held; 0 with a reserve configured: the disk filled up "
        "and publishes are refused (DISK_FULL)",
    ),
    "reserve_in_use": _gauge(
        "ferry_disk_reserve_in_use",
        "1 once the disk filled up and the reserve was released (publishes refused), else 0",
    ),
}


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    return {
        key: family.kind(family.name, family.help, labels=list(family.labels))
        for key, family in SNAPSHOT_METRICS.items()
    }


def snapshot_metrics(snap: FerrySnapshot) -> list[Metric]:
    """The snapshot as metric families, in SNAPSHOT_METRICS' order."""
    f = _families()
    f["info"].add_metric([snap.version, snap.build], 1)
    f["start"].add_metric([], snap.start_time)
    f["draining"].add_metric([], int(snap.draining))
    log = snap.log
    f["pending"].add_metric([], log.pending_events)
    f["pending_bytes"].add_metric([], log.pending_bytes)
    f["oldest"].add_metric([], log.oldest_pending_age_s or 0.0)
    f["max_events"].add_metric([], log.max_events)
    f["max_bytes"].add_metric([], log.max_bytes)
    f["cap_usage"].add_metric(
        [], _cap_usage(log.pending_events, log.max_events, log.pending_bytes, log.max_bytes)
    )
    f["parked"].add_metric([], log.parked_events)
    for topic in snap.topics:
        f["topic_pending"].add_metric([topic.topic], topic.pending_events)
        f["topic_pending_bytes"].add_metric([topic.topic], topic.pending_bytes)
        f["topic_backing_off"].add_metric([topic.topic], int(topic.backing_off))
    fwd = snap.forwarder
    f["reachable"].add_metric([], int(fwd.kafka_reachable))
    f["in_flight"].add_metric([], fwd.in_flight_events)
    f["sent"].add_metric([], fwd.sent_events)
    f["delivered"].add_metric([], fwd.delivered_events)
    f["resent"].add_metric([], fwd.resent_events)
    f["found_in_kafka"].add_metric([], fwd.found_in_kafka_events)
    f["retries"].add_metric([], fwd.lane_restarts)
    f["process_restarts"].add_metric([], fwd.process_restarts)
    for kind, count in sorted(fwd.errors.items()):
        f["errors"].add_metric([kind], count)
    f["parked_total"].add_metric([], fwd.parked_events)
    for sub in snap.subscriptions:
        name = [sub.name]
        f["streams"].add_metric(name, sub.streams)
        f["leases"].add_metric(name, sub.outstanding_leases)
        f["held"].add_metric(name, sub.held_records)
        if sub.committed_lag is not None:
            f["lag"].add_metric(name, sub.committed_lag)
        f["paused"].add_metric(name, int(sub.paused))
        f["deliveries"].add_metric(name, sub.deliveries)
        f["redeliveries"].add_metric(name, sub.redeliveries)
        f["acks"].add_metric(name, sub.acks)
        f["nacks"].add_metric(name, sub.nacks)
        f["expiries"].add_metric(name, sub.lease_expiries)
        f["dead_lettered"].add_metric(name, sub.dead_lettered)
        f["replacements"].add_metric(name, sub.consumer_replacements)
    f["disk_free"].add_metric([], snap.disk.free_bytes)
    f["reserve"].add_metric([], snap.disk.reserve_bytes)
    f["reserve_held"].add_metric([], int(snap.disk.reserve_held))
    in_use = snap.disk.reserve_bytes > 0 and not snap.disk.reserve_held
    f["reserve_in_use"].add_metric([], int(in_use))
    return list(f.values())


def _cap_usage(events: int, max_events: int, size: int, max_bytes: int) -> float:
    return max(events / max_events if max_events else 0.0, size / max_bytes if max_bytes else 0.0)


class SnapshotCollector(Collector):
    """Reads a snapshot at each scrape (on the scrape's thread); `take` returns None when no
    snapshot could be had in time, and the scrape then carries the other metrics only."""

    def __init__(self, take: Callable[[], FerrySnapshot | None]) -> None:
        self._take = take

    def describe(self) -> list[Metric]:
        # Nothing up front: describing by collecting would take a snapshot at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self._take()
        if snap is not None:
            yield from snapshot_metrics(snap)


def new_registry() -> CollectorRegistry:
    """A registry with the process' own metrics (CPU, memory, open files) as `ferry_process_*`."""
    registry = CollectorRegistry()
    ProcessCollector(namespace="ferry", registry=registry)
    return registry
