"""Subscribe under failures: cancelled streams, killed subscriber processes, kill -9 and SIGTERM of
the sidecar, and a second sidecar dying mid-work. Nothing leased and unacked may be lost."""

from __future__ import annotations

import time

import grpc
import pytest
from confluent_kafka import Consumer

from sidecar.subscribe import ackcodec
from testkit.acking_worker import AckingWorker
from testkit.consumer_offsets import committed, end_offsets, wait_committed_to_end
from testkit.ferry_log import assigned_partitions
from testkit.ferry_process import Ferries
from testkit.kafka_produce import produce_direct
from testkit.publishing import publish_through_ferry
from testkit.stream_client import Received, StreamClient, open_stream
from testkit.subscribe_calls import APPLIED, group_of, open_request, unique_subscription
from testkit.subscriber_process import SubprocessSubscriber, spawn_subscriber
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

FERRY_ARGS = ("--subscription-linger-s", "1")
# The broker's minimum: a killed sidecar's partitions move (and a restarted one rejoins) soonest.
FAST_GROUP = ("--consumer-session-timeout-ms", "6000")


def _unacked(received: list[Received], acked: set[str]) -> set[str]:
    return {r.event_id for r in received} - acked


def test_cancelled_stream_and_killed_subscriber_process_lose_nothing(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-cancel", partitions=2)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 300)
    subscription = unique_subscription("cancel")
    # Leases far longer than the test: whatever comes back, came back because a stream ended.
    lease_s = 120.0

    # Stream A fills its 100 leases and acks 30 of them.
    a = open_stream(
        ferry, open_request(subscription, [topic], lease_s=lease_s, max_outstanding=100)
    )
    first_a = a.take(timeout=30, at_least=100)
    assert len(first_a) == 100
    results = a.ack(r.ack_id for r in first_a[:30])
    assert {x.status for x in results} == {APPLIED}
    acked_a = {r.event_id for r in first_a[:30]}
    wait_for(lambda: a.received_count() == 130, 10, 0.05, "A refilled to 100 leases")

    # Subscriber process P fills its 50 leases, acking every 5th delivery.
    child = spawn_subscriber(
        ferry.address,
        open_request(subscription, [topic], lease_s=lease_s, max_outstanding=50),
        ack_every=5,
    )
    try:
        assert child.opened.wait(30), "the subscriber process did not open its stream"

        def settled(p: SubprocessSubscriber) -> bool:
            held = len(p.deliveries) - len(p.acked)
            return held == 50 and len(p.acked) == len(p.deliveries) // 5

        assert child.wait(settled, 30), (len(child.deliveries), len(child.acked))
        time.sleep(0.5)
        assert child.wait(settled, 1)
        unacked_p = {d["event_id"] for d in child.deliveries} - child.acked
        assert {d["attempt"] for d in child.deliveries} == {1}

        # Stream C takes what is left and, later, what A and P leave behind.
        c = open_stream(ferry, open_request(subscription, [topic], lease_s=lease_s))
        worker = AckingWorker(c).start()
        fresh_left = 300 - 130 - len(child.deliveries)
        wait_for(
            lambda: len(worker.applied) == fresh_left, 20, 0.05, "C acked the remaining events"
        )

        unacked_a = _unacked(a.received, acked_a)
        assert len(unacked_a) == 100
        a.cancel()
        assert a.code() == grpc.StatusCode.CANCELLED
        wait_for(lambda: unacked_a <= set(worker.applied), 15, 0.05, "A's leases redelivered to C")

        child.proc.kill()
        child.proc.wait(10)
        wait_for(lambda: unacked_p <= set(worker.applied), 15, 0.05, "P's leases redelivered to C")
    finally:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(10)

    time.sleep(1.0)
    worker.stop()
    assert not worker.errors
    assert not c.violations
    by_event = {r.event_id: r for r in c.received}
    for event_id in unacked_a | unacked_p:
        redelivered = by_event[event_id]
        assert redelivered.attempt == 2, redelivered.delivery
    assert set(by_event) == set(published) - acked_a - child.acked, "C got exactly the rest"
    assert len(c.received) == len(by_event), "C got nothing twice"
    assert acked_a | child.acked | set(worker.applied) == set(published)
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    c.cancel()


def _covered(bootstrap: str, group: str, topic: str, acked: dict[int, set[int]]) -> bool:
    """Whether the group's commits (offset + sparse-ack metadata) cover every acked offset."""
    for partition, (offset, metadata) in committed(bootstrap, group, topic).items():
        if offset < 0:
            return not acked.get(partition)
        sparse = ackcodec.decode(metadata, offset)
        if any(o >= offset and o not in sparse for o in acked.get(partition, ())):
            return False
    return True


def test_kill_9_of_the_sidecar_keeps_out_of_order_acks(
    kafka: KafkaHandle, ferries: Ferries, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = kafka.topic("sub-kill", partitions=2)
    ferry = ferries.start(*FERRY_ARGS, *FAST_GROUP)
    published = publish_through_ferry(ferry, topic, 400)
    subscription = unique_subscription("kill")

    client = open_stream(ferry, open_request(subscription, [topic], lease_s=60))
    got = client.take(timeout=30, at_least=400)
    assert sorted(r.event_id for r in got) == sorted(published)
    # Out of order, with gaps: even offsets low down, every third offset higher up.
    to_ack = [
        r for r in got if (r.delivery.offset < 120 and r.delivery.offset % 2 == 0)
        or (r.delivery.offset >= 120 and r.delivery.offset % 3 == 1)
    ]  # fmt: skip
    results = client.ack(r.ack_id for r in to_ack)
    assert {x.status for x in results} == {APPLIED}
    acked = {r.event_id for r in to_ack}
    unacked = set(published) - acked
    acked_offsets: dict[int, set[int]] = {}
    for r in to_ack:
        acked_offsets.setdefault(r.delivery.partition, set()).add(r.delivery.offset)

    time.sleep(1.0)
    wait_for(
        lambda: _covered(kafka.bootstrap, group_of(subscription), topic, acked_offsets),
        10,
        0.05,
        "a commit covering every ack (offset + sparse metadata)",
    )
    ferry.kill()
    assert client.wait_closed(10)

    ferry.start()
    again = open_stream(ferry, open_request(subscription, [topic], lease_s=60))
    worker = AckingWorker(again).start()
    wait_for(
        lambda: unacked <= set(worker.applied), 60, 0.05, "every unacked event delivered again"
    )
    time.sleep(2.0)
    worker.stop()
    redelivered = {r.event_id for r in again.received}
    acked_again = redelivered & acked
    with capsys.disabled():
        print(
            f"\n[kill -9] {len(acked)} acked out of order before the kill, "
            f"{len(unacked)} unacked; after restart {len(redelivered & unacked)} unacked "
            f"redelivered, {len(acked_again)} acked ones redelivered"
        )
    assert unacked <= redelivered
    assert redelivered <= set(published)
    # The commit that landed before the kill held every ack: none may come back.
    assert not acked_again, sorted(acked_again)[:10]
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    again.cancel()


def test_sigterm_ends_streams_unavailable_and_commits_acks(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-term", partitions=2)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 100)
    subscription = unique_subscription("term")

    streams = [
        open_stream(ferry, open_request(subscription, [topic], lease_s=60, max_outstanding=50))
        for _ in range(2)
    ]
    got = [r for s in streams for r in s.take(timeout=30, at_least=50)]
    assert sorted(r.event_id for r in got) == sorted(published)
    to_ack = [r for i, r in enumerate(got) if i % 2 == 0]
    for s in streams:
        mine = [r.ack_id for r in to_ack if r.ack_id in s.by_ack_id]
        assert {x.status for x in s.ack(mine)} == {APPLIED}
    acked = {r.event_id for r in to_ack}

    assert ferry.terminate(60) == 0
    for s in streams:
        assert s.wait_closed(5)
        assert s.code() == grpc.StatusCode.UNAVAILABLE, s.error

    ferry.start()
    again = open_stream(ferry, open_request(subscription, [topic], lease_s=60))
    rest = again.take(timeout=30, at_least=50)
    rest += again.take(timeout=3)
    assert sorted(r.event_id for r in rest) == sorted(set(published) - acked)
    assert {r.attempt for r in rest} == {1}
    assert {x.status for x in again.ack(r.ack_id for r in rest)} == {APPLIED}
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    again.cancel()


def test_two_sidecars_share_partitions_and_survive_one_killed(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-two", partitions=4)
    a_ferry = ferries.start(*FERRY_ARGS, *FAST_GROUP, name="a")
    b_ferry = ferries.start(*FERRY_ARGS, *FAST_GROUP, name="b")
    published = publish_through_ferry(a_ferry, topic, 2_000)
    subscription = unique_subscription("two")
    message = open_request(subscription, [topic], lease_s=3, max_outstanding=50)

    a = StreamClient(a_ferry.channel(), message).start()
    b = StreamClient(b_ferry.channel(), message).start()
    # Slow workers: 10 events per 0.1 s each, so the work outlasts the group forming.
    worker_a = AckingWorker(a, work_s=0.1, batch=10).start()
    worker_b = AckingWorker(b, work_s=0.1, batch=10).start()

    def partitions(client: StreamClient, since: float = 0.0) -> set[int]:
        return {r.delivery.partition for r in list(client.received) if r.at >= since}

    # Both own partitions: disjoint sets that cover the topic, and both deliver.
    def split() -> bool:
        owned_a = assigned_partitions(a_ferry.log_path, topic)
        owned_b = assigned_partitions(b_ferry.log_path, topic)
        return bool(owned_a and owned_b and not owned_a & owned_b and owned_a | owned_b == all4)

    all4 = {0, 1, 2, 3}
    wait_for(split, 40, 0.05, "the two sidecars split the partitions")
    owned_b = assigned_partitions(b_ferry.log_path, topic)
    wait_for(lambda: len(worker_b.applied) >= 100, 40, 0.05, "B acked 100 events")
    assert split(), "the group moved again"
    assert assigned_partitions(b_ferry.log_path, topic) == owned_b, "the group moved again"
    assert partitions(b) & owned_b, "B delivers its partitions"
    assert partitions(a) - owned_b, "A delivers its partitions"

    # B stops mid-work (its last acks answered, its leases still held), then dies.
    worker_b.stop()
    held_by_b = _unacked(b.received, set(worker_b.applied))
    b_ferry.kill()
    assert b.wait_closed(10)
    worker_a.work_s = 0.0
    worker_a.batch = None

    def everyone() -> set[str]:
        return set(worker_a.applied) | set(worker_b.applied)

    wait_for(lambda: everyone() == set(published), 90, 0.05, "every event acked by someone")
    worker_a.stop()
    assert not worker_a.errors
    assert not a.violations
    assert not b.violations
    assert held_by_b <= set(worker_a.applied), "B's leases went to A"
    assert partitions(a, time.monotonic() - 5) <= {0, 1, 2, 3}
    print(
        f"two sidecars: A acked {len(worker_a.applied)}, B acked {len(worker_b.applied)}, "
        f"B held {len(held_by_b)} at the kill"
    )
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    a.cancel()


def _join_and_leave(bootstrap: str, group: str, topic: str) -> None:
    """A plain consumer joins the group (a rebalance), takes a partition, then leaves (another)."""
    assigned: list[object] = []
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert assigned, "the plain consumer was not given a partition"
    finally:
        consumer.close()


def test_rebalance_while_paused_does_not_stall_the_subscription(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    """librdkafka keeps a partition paused across revoke and re-assign; Ferry must resume it.

    A stream limited to 10 events makes the subscription pause its partitions (it holds its
    1,000 records), then the group rebalances twice. Afterwards everything must still arrive.
    """
    total = 3_000
    topic = kafka.topic("sub-pause", partitions=2)
    # Keyed: an unkeyed producer may put every record into one partition (sticky batches).
    records = ((f"k{i % 16}".encode(), f"{i}".encode(), None) for i in range(total))
    produce_direct(kafka.bootstrap, topic, records)
    ends = end_offsets(kafka.bootstrap, topic)
    assert sorted(ends) == [0, 1]
    assert all(ends.values()), f"a partition holds no records: {ends}"
    ferry = ferries.start(*FERRY_ARGS, *FAST_GROUP)
    subscription = unique_subscription("pause")
    client = open_stream(ferry, open_request(subscription, [topic], lease_s=60, max_outstanding=10))
    assert len(client.take(timeout=30, at_least=10)) == 10
    time.sleep(2.0)  # the consumer fetches past 1,000 held records and the subscription pauses

    _join_and_leave(kafka.bootstrap, group_of(subscription), topic)
    worker = AckingWorker(client).start()
    wait_for(
        lambda: len(worker.applied) == total, 60, 0.05, "every record acked after the rebalances"
    )
    worker.stop()
    assert not worker.errors
    assert not client.violations
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    client.cancel()
