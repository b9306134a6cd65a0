"""The metrics' names, types and labels (from a hand-made snapshot and publish outcomes), the
Prometheus naming rules they keep, and the collector's behaviour without a snapshot."""

from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.observability.metrics import (
    SNAPSHOT_METRICS,
    PublishMetrics,
    SnapshotCollector,
    new_registry,
    snapshot_metrics,
)
from sidecar.observability.snapshot import (
    DiskSnapshot,
    FerrySnapshot,
    ForwarderSnapshot,
    LogSnapshot,
    SubscriptionSnapshot,
    TopicSnapshot,
)

NAME = re.compile(r"ferry_[a-z0-9_]+")


def snapshot(lag: int | None = 7) -> FerrySnapshot:
    return FerrySnapshot(
        version="0.1.0",
        build="CPython 3.11",
        time=1000.0,
        start_time=900.0,
        draining=False,
        log=LogSnapshot(12, 3400, 2.5, 100, 10_000, 1),
        forwarder=ForwarderSnapshot(
            True, 3, 40, 30, 2, 6, 1, 4, 2, {"_MSG_TIMED_OUT": 3, "other": 1}
        ),
        topics=(
            TopicSnapshot("orders", 10, 3000, 2.5, 3, False, 0, 0.0, ""),
            TopicSnapshot("audit", 2, 400, 1.0, 0, True, 3, 1.5, "KafkaError{code=_TRANSPORT}"),
        ),
        subscriptions=(
            SubscriptionSnapshot(
                "readers", ("orders",), 2, 5, 9, 1, True, lag, 20, 3, 14, 2, 1, 1, 0
            ),
        ),
        disk=DiskSnapshot(10_000_000, 8_388_608, True),
    )


def exposition(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_snapshot_metric_is_named_by_the_rules() -> None:
    names = [family.name for family in SNAPSHOT_METRICS.values()]
    assert len(names) == len(set(names))
    for family in SNAPSHOT_METRICS.values():
        assert NAME.fullmatch(family.name), family.name
        assert not family.name.endswith("_total"), "counter families get _total on exposition"
        assert "total" not in family.name.split("_")
        assert family.help


def test_snapshot_metrics_carry_the_snapshot() -> None:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot()))
    got = exposition(registry)
    assert got[("ferry_wal_pending_events", ())] == 12
    assert got[("ferry_wal_oldest_pending_age_seconds", ())] == 2.5
    assert got[("ferry_wal_max_bytes", ())] == 10_000
    assert got[("ferry_topic_pending_events", (("topic", "orders"),))] == 10
    assert got[("ferry_topic_backing_off", (("topic", "audit"),))] == 1
    assert got[("ferry_forwarder_sent_events_total", ())] == 40
    assert got[("ferry_forwarder_delivered_events_total", ())] == 30
    assert got[("ferry_forwarder_found_in_kafka_events_total", ())] == 6
    assert got[("ferry_forwarder_retries_total", ())] == 4
    assert got[("ferry_forwarder_process_restarts_total", ())] == 2
    assert got[("ferry_forwarder_errors_total", (("kind", "_MSG_TIMED_OUT"),))] == 3
    assert got[("ferry_kafka_reachable", ())] == 1
    sub = (("subscription", "readers"),)
    assert got[("ferry_subscription_streams", sub)] == 2
    assert got[("ferry_subscription_outstanding_leases", sub)] == 5
    assert got[("ferry_subscription_committed_lag_records", sub)] == 7
    assert got[("ferry_subscription_deliveries_total", sub)] == 20
    assert got[("ferry_subscription_lease_expiries_total", sub)] == 1
    assert got[("ferry_subscription_paused", sub)] == 1
    assert got[("ferry_disk_reserve_held", ())] == 1
    assert got[("ferry_build_info", (("build", "CPython 3.11"), ("version", "0.1.0")))] == 1
    assert not any(name.endswith("_created") for name, _ in got)


def test_unknown_lag_is_absent_and_kinds_follow_the_families() -> None:
    families = {m.name: m for m in snapshot_metrics(snapshot(lag=None))}
    assert families["ferry_subscription_committed_lag_records"].samples == []
    assert families["ferry_forwarder_errors"].type == "counter"
    assert families["ferry_wal_pending_events"].type == "gauge"
    assert [m.name for m in snapshot_metrics(snapshot())] == [
        f.name for f in SNAPSHOT_METRICS.values()
    ]


def test_a_scrape_without_a_snapshot_carries_the_other_metrics() -> None:
    registry = new_registry()
    registry.register(PublishMetrics())
    registry.register(SnapshotCollector(lambda: None))
    names = {name for name, _ in exposition(registry)}
    assert "ferry_wal_pending_events" not in names
    assert "ferry_process_cpu_seconds_total" in names
    assert "ferry_publish_duration_seconds_count" in names


def test_publish_metrics_count_events_by_code_and_time_requests() -> None:
    registry = CollectorRegistry()
    metrics = PublishMetrics()
    registry.register(metrics)
    started = time.perf_counter()
    metrics.answered("durable", 10, ["ALREADY_EXISTS"], started)
    metrics.answered("kafka", 1, (), started)
    metrics.refused("durable", 3, "RESOURCE_EXHAUSTED", started)
    got = exposition(registry)
    events = "ferry_publish_events_total"
    assert got[(events, (("ack_level", "durable"), ("code", "OK")))] == 9
    assert got[(events, (("ack_level", "durable"), ("code", "ALREADY_EXISTS")))] == 1
    assert got[(events, (("ack_level", "durable"), ("code", "RESOURCE_EXHAUSTED")))] == 3
    assert got[(events, (("ack_level", "kafka"), ("code", "OK")))] == 1
    assert got[("ferry_publish_duration_seconds_count", (("ack_level", "durable"),))] == 2
    assert got[("ferry_publish_duration_seconds_count", (("ack_level", "kafka"),))] == 1
