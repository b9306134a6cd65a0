"""event_id is an idempotency key: one Kafka record per id, duplicate=true on every repeat."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.ferry_process import FerryProcess, running_ferry
from testkit.kafka_read import read_topic
from testkit.publishing import event, publish
from testkit.wal_files import last_sequence
from tests.conftest import KafkaHandle

CONCURRENT = 20


def _concurrently(ferry: FerryProcess, requests: list[pb.PublishRequest]) -> list[pb.PublishResult]:
    """Send all requests at once, each on its own channel, released by one barrier."""
    barrier = threading.Barrier(len(requests))

    def send(request: pb.PublishRequest) -> pb.PublishResult:
        with grpc.insecure_channel(ferry.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            own = publisher_pb2_grpc.PublisherStub(channel)
            barrier.wait(timeout=10)
            reply: pb.PublishResponse = own.Publish(request, timeout=20)
            return reply.result

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_sequential_repeat_is_a_duplicate_of_the_same_sequence(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("idem-seq", partitions=3)
    ev = event(topic, "order-1", key=b"k", headers={"h": "v"})
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        stub = ferry.publisher()
        first = publish(stub, ev).result
        second = publish(stub, ev).result
        third = publish(stub, ev, ack_level=pb.ACK_LEVEL_KAFKA).result
        batch = stub.PublishBatch(pb.PublishBatchRequest(events=[ev, ev]), timeout=10)
        assert not first.duplicate
        assert second.duplicate
        assert third.duplicate
        assert first.sequence == second.sequence == third.sequence
        assert [e.result.duplicate for e in batch.entries] == [True, True]
        assert {e.result.sequence for e in batch.entries} == {first.sequence}
        assert last_sequence(data_dir) == first.sequence, "repeats must write nothing"
        ferry.wait_drained(30)
    records = read_topic(kafka.bootstrap, topic, expect=1, quiet=1.5)
    assert [r.event_id for r in records] == ["order-1"]


def test_repeat_inside_one_batch_is_written_once(kafka: KafkaHandle, data_dir: Path) -> None:
    topic = kafka.topic("idem-batch", partitions=1)
    a, b = event(topic, "a"), event(topic, "b")
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        reply = ferry.publisher().PublishBatch(
            pb.PublishBatchRequest(events=[a, b, a, a]), timeout=10
        )
        results = [e.result for e in reply.entries]
        assert [r.duplicate for r in results] == [False, False, True, True]
        assert results[0].sequence == results[2].sequence == results[3].sequence
        ferry.wait_drained(30)
    records = read_topic(kafka.bootstrap, topic, expect=2, quiet=1.5)
    assert sorted(r.event_id for r in records) == ["a", "b"]


@pytest.mark.parametrize("ack_level", [pb.ACK_LEVEL_DURABLE, pb.ACK_LEVEL_KAFKA])
def test_concurrent_publishes_of_one_id_write_one_record(
    kafka: KafkaHandle, data_dir: Path, ack_level: int
) -> None:
    topic = kafka.topic("idem-conc", partitions=3)
    ev = event(topic, f"same-{ack_level}", key=b"key")
    request = pb.PublishRequest(event=ev, ack_level=ack_level)
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        results = _concurrently(ferry, [request] * CONCURRENT)
        assert sum(not r.duplicate for r in results) == 1, results
        assert len({r.sequence for r in results}) == 1
        if ack_level == pb.ACK_LEVEL_KAFKA:
            positions = {(r.kafka_position.partition, r.kafka_position.offset) for r in results}
            assert all(r.HasField("kafka_position") for r in results)
            assert len(positions) == 1, positions
        ferry.wait_drained(30)
    records = read_topic(kafka.bootstrap, topic, expect=1, quiet=1.5)
    assert [r.event_id for r in records] == [ev.event_id]
    if ack_level == pb.ACK_LEVEL_KAFKA:
        assert (records[0].partition, records[0].offset) == positions.pop()


def test_same_id_with_other_content_is_already_exists(kafka: KafkaHandle, data_dir: Path) -> None:
    topic = kafka.topic("idem-conflict", partitions=1)
    other_topic = kafka.topic("idem-conflict-b", partitions=1)
    original = event(topic, "x-1", key=b"k", payload=b"original", headers={"h": "1"})
    variants = {
        "payload": event(topic, "x-1", key=b"k", payload=b"changed", headers={"h": "1"}),
        "key": event(topic, "x-1", key=b"k2", payload=b"original", headers={"h": "1"}),
        "headers": event(topic, "x-1", key=b"k", payload=b"original", headers={"h": "2"}),
        "topic": event(other_topic, "x-1", key=b"k", payload=b"original", headers={"h": "1"}),
    }
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        stub = ferry.publisher()
        publish(stub, original)

        def check_conflicts(when: str) -> None:
            for what, ev in variants.items():
                with pytest.raises(grpc.RpcError) as info:
                    publish(stub, ev)
                assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS, (when, what)
                assert "x-1" in (info.value.details() or "")
            good = event(topic, f"fresh-{when}")
            reply = stub.PublishBatch(
                pb.PublishBatchRequest(events=[good, variants["payload"], original]), timeout=10
            )
            kinds = [e.WhichOneof("outcome") for e in reply.entries]
            assert kinds == ["result", "error", "result"], (when, reply)
            assert reply.entries[1].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
            assert reply.entries[2].result.duplicate

        seq = last_sequence(data_dir)
        check_conflicts("pending")  # the original is still in the log (or just delivered)
        assert last_sequence(data_dir) == seq + 1, "only the fresh event may be written"
        ferry.wait_drained(30)
        check_conflicts("retired")  # the original left the log; its id is remembered
        ferry.wait_drained(30)
    records = read_topic(kafka.bootstrap, topic, expect=3, quiet=1.5)
    assert sorted(r.event_id for r in records) == ["fresh-pending", "fresh-retired", "x-1"]
    assert next(r for r in records if r.event_id == "x-1").value == b"original"
    assert read_topic(kafka.bootstrap, other_topic, quiet=1) == []


def test_duplicate_after_delivery_answers_the_original_position(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("idem-window", partitions=3)
    events = [event(topic, f"w-{i}", key=f"k{i}".encode()) for i in range(6)]
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        stub = ferry.publisher()
        originals = [publish(stub, ev).result for ev in events]
        ferry.wait_drained(30)  # delivered and retired: only the dedupe window knows them
        durable = [publish(stub, ev).result for ev in events]
        acked = [publish(stub, ev, ack_level=pb.ACK_LEVEL_KAFKA).result for ev in events]
        batch = stub.PublishBatch(
            pb.PublishBatchRequest(events=events, ack_level=pb.ACK_LEVEL_KAFKA), timeout=10
        )
        assert last_sequence(data_dir) == originals[-1].sequence, "repeats wrote rows"
        assert ferry.pending_rows() == 0
    records = {r.event_id: r for r in read_topic(kafka.bootstrap, topic, expect=6, quiet=1.5)}
    assert len(records) == 6
    for i, ev in enumerate(events):
        record = records[ev.event_id]
        for result in (durable[i], acked[i], batch.entries[i].result):
            assert result.duplicate, result
            assert result.sequence == originals[i].sequence
        for result in (acked[i], batch.entries[i].result):
            assert result.HasField("kafka_position")
            position = (result.kafka_position.partition, result.kafka_position.offset)
            assert position == (record.partition, record.offset), ev.event_id


def test_without_dedupe_window_a_delivered_id_is_published_again(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("idem-nowindow", partitions=1)
    ev = event(topic, "again")
    with running_ferry(data_dir, kafka.bootstrap, "--dedupe-window-s", "0") as ferry:
        stub = ferry.publisher()
        first = publish(stub, ev).result
        ferry.wait_drained(30)
        later = publish(stub, ev).result
        assert not later.duplicate
        assert later.sequence > first.sequence
        ferry.wait_drained(30)
    records = read_topic(kafka.bootstrap, topic, expect=2, quiet=1.5)
    assert [r.event_id for r in records] == ["again", "again"]
