"""ACK_LEVEL_KAFKA: answers carry the real Kafka position; a timeout still delivers the event."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess, running_ferry
from testkit.kafka_read import read_topic
from testkit.kafka_restore import ensure_running, kafka_restored
from testkit.publishing import FAST_RETRY, event, publish
from tests.conftest import KafkaHandle

KAFKA = pb.ACK_LEVEL_KAFKA


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_kafka_ack_returns_the_position_kafka_stored(
    kafka: KafkaHandle, data_dir: Path, mode: str
) -> None:
    topic = kafka.topic(f"ack-pos-{mode}", partitions=3)
    positions: dict[str, tuple[int, int]] = {}
    with running_ferry(data_dir, kafka.bootstrap, "--forwarder-mode", mode) as ferry:
        stub = ferry.publisher()
        for i in range(30):
            ev = event(topic, f"one-{i}", key=f"k{i % 5}".encode())
            result = publish(stub, ev, ack_level=KAFKA).result
            assert result.HasField("kafka_position")
            positions[ev.event_id] = (result.kafka_position.partition, result.kafka_position.offset)
        for b in range(3):
            chunk = [event(topic, f"batch{b}-{i}", key=f"k{i % 7}".encode()) for i in range(40)]
            reply = stub.PublishBatch(
                pb.PublishBatchRequest(events=chunk, ack_level=KAFKA), timeout=30
            )
            for ev, entry in zip(chunk, reply.entries, strict=True):
                result = entry.result
                assert result.HasField("kafka_position"), entry
                pos = (result.kafka_position.partition, result.kafka_position.offset)
                positions[ev.event_id] = pos
        # A DURABLE answer has no position: Kafka may not have the event yet.
        durable = publish(stub, event(topic, "durable")).result
        assert not durable.HasField("kafka_position")
        ferry.wait_drained(30)
    child_started = '"forwarder_process_started"' in ferry.log_path.read_text()
    assert child_started == (mode == "process")
    records = read_topic(kafka.bootstrap, topic, expect=len(positions) + 1, quiet=1.5)
    found = {r.event_id: (r.partition, r.offset) for r in records}
    assert len(records) == len(found) == len(positions) + 1
    for event_id, position in positions.items():
        assert found[event_id] == position, event_id
    assert len(set(positions.values())) == len(positions)


def test_kafka_ack_timeout_is_deadline_exceeded_and_still_delivered(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    cluster = kafka.require_control()
    topic = kafka.topic("ack-timeout", partitions=3)
    wait = duration_pb2.Duration(nanos=800_000_000)
    late = {
        "late-1": event(topic, "late-1", key=b"a"),
        "late-2": event(topic, "late-2", key=b"b"),
        "late-3": event(topic, "late-3", key=b"c"),
        "late-4": event(topic, "late-4", key=b"d"),
    }
    with kafka_restored(cluster):
        ferry = FerryProcess(data_dir, kafka.bootstrap, *FAST_RETRY).start()
        try:
            stub = ferry.publisher()
            cluster.stop()
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                publish(stub, late["late-1"], ack_level=KAFKA, kafka_wait=wait)
            assert 0.7 < time.monotonic() - started < 5
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "still be delivered" in (info.value.details() or "")

            with pytest.raises(grpc.RpcError) as info:
                stub.PublishBatch(
                    pb.PublishBatchRequest(
                        events=[late["late-2"], late["late-3"]], ack_level=KAFKA, kafka_wait=wait
                    ),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "still be delivered" in (info.value.details() or "")

            # No kafka_wait: the call's own deadline bounds the wait, and Ferry answers first.
            with pytest.raises(grpc.RpcError) as info:
                publish(stub, late["late-4"], ack_level=KAFKA, timeout=1.5)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "still be delivered" in (info.value.details() or ""), info.value.details()

            # Retrying with the same id writes nothing; it waits for the same delivery.
            with pytest.raises(grpc.RpcError) as info:
                publish(stub, late["late-1"], ack_level=KAFKA, kafka_wait=wait)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert ferry.pending_rows() == 4

            ensure_running(cluster)
            result = publish(stub, late["late-1"], ack_level=KAFKA, timeout=60).result
            assert result.duplicate
            assert result.HasField("kafka_position")
            ferry.wait_drained(60)
            assert ferry.terminate() == 0
        finally:
            ferry.kill()
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=4, quiet=1.5))
    delivery.assert_contents(late)
    record = delivery.by_id["late-1"][0]
    assert (record.partition, record.offset) == (
        result.kafka_position.partition,
        result.kafka_position.offset,
    )
