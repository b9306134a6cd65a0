"""Many concurrent publishers, fault-free: every acked event arrives once, per-key order holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.delivery import Delivery
from testkit.ferry_process import running_ferry
from testkit.kafka_read import read_topic
from testkit.publishing import event
from tests.conftest import KafkaHandle

TOTAL = 10_000
UNARY_WORKERS = 8  # each owns 2 keys and publishes one event per call
UNARY_EACH = 250
BATCH_WORKERS = 4  # each owns 3 keys and publishes batches
BATCH_SIZE = 100
BATCH_EACH = (TOTAL - UNARY_WORKERS * UNARY_EACH) // BATCH_WORKERS


def _events(topic: str, worker: str, keys: int, count: int) -> list[pb.Event]:
    """The worker's events in publish order; its keys interleave, headers on every third."""
    out = []
    for i in range(count):
        key = f"{worker}-k{i % keys}".encode()
        headers = {"trace": f"{worker}/{i}", "kind": "test"} if i % 3 == 0 else {}
        out.append(event(topic, f"{worker}-{i:05d}", key=key, headers=headers))
    return out


async def _unary_worker(stub: publisher_pb2_grpc.PublisherStub, events: list[pb.Event]) -> None:
    for ev in events:  # sequential: the next event of a key is sent after the previous is acked
        reply = await stub.Publish(pb.PublishRequest(event=ev), timeout=30)
        assert reply.result.event_id == ev.event_id
        assert not reply.result.duplicate


async def _batch_worker(stub: publisher_pb2_grpc.PublisherStub, events: list[pb.Event]) -> None:
    for start in range(0, len(events), BATCH_SIZE):
        chunk = events[start : start + BATCH_SIZE]
        reply = await stub.PublishBatch(pb.PublishBatchRequest(events=chunk), timeout=30)
        assert len(reply.entries) == len(chunk)
        sequences = []
        for ev, entry in zip(chunk, reply.entries, strict=True):
            assert entry.WhichOneof("outcome") == "result", entry
            assert entry.result.event_id == ev.event_id
            assert not entry.result.duplicate
            sequences.append(entry.result.sequence)
        assert sequences == sorted(sequences), "a batch is logged in request order"


async def _publish_all(address: str, plan: list[tuple[str, list[pb.Event]]]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = publisher_pb2_grpc.PublisherStub(channel)
        workers = [
            _unary_worker(stub, events) if kind == "unary" else _batch_worker(stub, events)
            for kind, events in plan
        ]
        await asyncio.gather(*workers)


def test_ten_thousand_concurrent_events_arrive_once_in_key_order(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("conc", partitions=3)
    plan: list[tuple[str, list[pb.Event]]] = []
    for w in range(UNARY_WORKERS):
        plan.append(("unary", _events(topic, f"u{w}", 2, UNARY_EACH)))
    for w in range(BATCH_WORKERS):
        plan.append(("batch", _events(topic, f"b{w}", 3, BATCH_EACH)))
    expected = {ev.event_id: ev for _, events in plan for ev in events}
    per_key: dict[bytes, list[str]] = {}
    for _, events in plan:
        for ev in events:
            per_key.setdefault(ev.key, []).append(ev.event_id)
    assert len(expected) == TOTAL

    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        started = time.monotonic()
        asyncio.run(_publish_all(ferry.address, plan))
        acked_s = time.monotonic() - started
        ferry.wait_drained(60)
        drained_s = time.monotonic() - started

    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=TOTAL, quiet=2))
    print(
        f"\n{TOTAL} events acked in {acked_s:.2f}s ({TOTAL / acked_s:.0f} events/s), "
        f"all in Kafka after {drained_s:.2f}s; {len(delivery.records)} records, "
        f"duplicates={delivery.duplicates}"
    )
    delivery.assert_contents(expected)
    assert set(delivery.by_id) == set(expected), "Kafka holds events nobody published"
    assert delivery.order_violations(per_key) == []
    assert delivery.duplicates == 0
    partitions = {r.partition for r in delivery.records}
    assert partitions == {0, 1, 2}, "keys should spread over the 3 partitions"
