"""The state snapshot from its parts (fakes of the writer, forwarder and registry, a real
Subscription), and as GetStatusResponse: no processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sidecar.api.admin import status_response
from sidecar.clock import ManualClock
from sidecar.forward.counters import ForwarderCounters, ForwarderStatus, LaneStatus, error_kind
from sidecar.kafka.lag import committed_lag
from sidecar.kafka.ports import AssignedPartition, fetched_record
from sidecar.observability.snapshot import (
    LogLimits,
    StatusSources,
    subscription_snapshot,
    topic_snapshots,
)
from sidecar.subscribe.subscription import Subscription, SubscriptionSettings
from sidecar.wal.admission import Usage
from testkit.subscription_fakes import DeadLetterRecorder, RecordingConsumer, drain
from testkit.subscription_fakes import stream_options as options


@dataclass
class FakeLog:
    data_dir: Path
    usage: Usage = field(default_factory=Usage)
    parked_rows: int = 0


@dataclass
class FakeForwarder:
    status_: ForwarderStatus
    counters: ForwarderCounters = field(default_factory=ForwarderCounters)

    def status(self) -> ForwarderStatus:
        return self.status_


@dataclass
class FakeRegistry:
    subscriptions: list[Subscription] = field(default_factory=list)

    def open_subscriptions(self) -> list[Subscription]:
        return self.subscriptions


def lane(topic: str, failed: bool = False) -> LaneStatus:
    return LaneStatus(
        topic, 2, failed, 3 if failed else 0, 1.5 if failed else 0.0, "boom" if failed else ""
    )


def forwarder_status(*lanes: LaneStatus) -> ForwarderStatus:
    return ForwarderStatus(True, 2, 100, 4, 1, {}, lanes)


def usage(**topics: tuple[int, int]) -> Usage:
    return Usage(
        sum(r for r, _ in topics.values()),
        sum(b for _, b in topics.values()),
        {t: list(v) for t, v in topics.items()},
    )


def test_topics_merge_the_log_usage_the_lanes_and_the_oldest_events() -> None:
    topics = topic_snapshots(
        usage(orders=(3, 300)),
        forwarder_status(lane("orders"), lane("audit", failed=True)),
        {"orders": 10_000},
        now=12.5,
    )
    assert [t.topic for t in topics] == ["audit", "orders"]
    audit, orders = topics
    assert (audit.pending_events, audit.backing_off, audit.failures, audit.retry_in_s) == (
        0,
        True,
        3,
        1.5,
    )
    assert audit.last_error == "boom"
    assert audit.oldest_pending_age_s is None
    assert (orders.pending_events, orders.pending_bytes, orders.in_flight_events) == (3, 300, 2)
    assert orders.oldest_pending_age_s == 2.5


async def test_a_snapshot_from_its_sources(tmp_path: Path) -> None:
    clock = [1000.0]
    counters = ForwarderCounters(sent_events=7, lane_restarts=1)
    counters.failed("KafkaError{code=_MSG_TIMED_OUT,val=-192}")
    sources = StatusSources(
        FakeLog(tmp_path, usage(orders=(40, 4000)), parked_rows=2),
        FakeForwarder(forwarder_status(lane("orders", failed=True)), counters),
        FakeRegistry(),
        LogLimits(max_events=100, max_bytes=1_000_000, disk_reserve_bytes=0),
        draining=lambda: True,
        wall_clock=lambda: clock[0],
    )
    clock[0] = 1060.0
    snap = await sources.snapshot()
    assert (snap.uptime_s, snap.draining, snap.version) == (60.0, True, "0.1.0")
    assert snap.log.pending_events == 40
    assert snap.log.cap_used == 0.4
    assert snap.log.parked_events == 2
    assert snap.log.oldest_pending_age_s is None  # no log file here: unknown, not an error
    assert snap.forwarder.errors == {"_MSG_TIMED_OUT": 1}
    assert (snap.forwarder.sent_events, snap.forwarder.delivered_events) == (7, 100)
    assert snap.disk.reserve_bytes == 0
    assert not snap.disk.reserve_held
    assert snap.disk.free_bytes > 0

    response = status_response(snap)
    assert response.uptime.seconds == 60
    assert response.draining
    assert response.log.cap_used == 0.4
    assert not response.log.HasField("oldest_pending_age")
    [topic] = response.topics
    assert topic.backing_off
    assert topic.retry_in.ToMilliseconds() == 1500
    assert topic.last_error == "boom"


def test_a_subscription_counts_deliveries_acks_nacks_and_expiries() -> None:
    clock = ManualClock()
    sub = Subscription(
        SubscriptionSettings("readers", ("orders",), 0, "", False, min_redelivery_backoff=0.0),
        clock,
        DeadLetterRecorder(),
    )
    sub.attach(RecordingConsumer())
    sub.on_assigned([AssignedPartition("orders", 0, None, "")])
    stream = sub.open_stream(options(lease=5.0))
    sub.on_records([fetched_record("orders", 0, i, b"k", b"v", (), 0) for i in range(4)])
    leased = drain(stream)
    sub.ack([leased[0].lease.ack_id])
    sub.nack([leased[1].lease.ack_id])
    [again] = drain(stream)  # no backoff: delivered again at once
    sub.ack([again.lease.ack_id])
    clock.advance(6.0)
    sub.tick()  # the two untouched leases expire and come again
    sub.on_committed_lag(12)
    snap = subscription_snapshot(sub)
    assert (snap.name, snap.topics, snap.streams) == ("readers", ("orders",), 1)
    assert (snap.acks, snap.nacks, snap.lease_expiries) == (2, 1, 2)
    assert (snap.deliveries, snap.redeliveries) == (7, 3)
    assert (snap.outstanding_leases, snap.held_records, snap.committed_lag) == (2, 2, 12)
    response = status_response_of_subscription(snap)
    assert response.committed_lag == 12
    assert response.deliveries == 7


def status_response_of_subscription(snap: object) -> object:
    from sidecar.observability.snapshot import (
        DiskSnapshot,
        FerrySnapshot,
        ForwarderSnapshot,
        LogSnapshot,
    )

    whole = FerrySnapshot(
        "0.1.0", "b", 1.0, 0.0, False, LogSnapshot(0, 0, None, 1, 1, 0),
        ForwarderSnapshot(True, 0, 0, 0, 0, 0, 0, 0, 0, {}), (), (snap,),  # type: ignore[arg-type]
        DiskSnapshot(1, 0, False),
    )  # fmt: skip
    [sub] = status_response(whole).subscriptions
    return sub


def test_committed_lag_sums_the_owned_partitions_known_lag() -> None:
    stats = {
        "topics": {
            "orders": {
                "partitions": {
                    "0": {"consumer_lag": 5},
                    "1": {"consumer_lag": -1},
                    "2": {"consumer_lag": 9},
                    "-1": {"consumer_lag": -1},
                }
            }
        }
    }
    assert committed_lag(stats, {("orders", 0), ("orders", 1)}) == 5
    assert committed_lag(stats, {("orders", 0), ("orders", 2)}) == 14
    assert committed_lag(stats, {("orders", 1)}) is None  # owned, but not known yet
    assert committed_lag(stats, set()) is None  # owns nothing: no lag to tell
    assert committed_lag({}, {("orders", 0)}) is None


def test_error_kinds_are_kafka_error_codes() -> None:
    assert error_kind('KafkaError{code=_MSG_TIMED_OUT,val=-192,str="Local: timed out"}') == (
        "_MSG_TIMED_OUT"
    )
    assert error_kind("producer recreated after: KafkaError{code=_FATAL,val=-150}") == "_FATAL"
    assert error_kind("something else") == "other"
