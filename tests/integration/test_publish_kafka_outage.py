"""Kafka outages: publishing goes on (DURABLE), and everything acked arrives once Kafka is back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess
from testkit.kafka_read import read_topic
from testkit.kafka_restore import ensure_running, kafka_restored
from testkit.publishing import FAST_RETRY, event, publish
from tests.conftest import KafkaHandle


def test_kafka_down_before_ferry_starts(kafka: KafkaHandle, data_dir: Path) -> None:
    cluster = kafka.require_control()
    topic = kafka.topic("down-at-start", partitions=3)
    expected: dict[str, pb.Event] = {}
    per_key: dict[bytes, list[str]] = {}
    with kafka_restored(cluster):
        cluster.stop()
        ferry = FerryProcess(data_dir, kafka.bootstrap, *FAST_RETRY).start()
        try:
            stub = ferry.publisher()
            for i in range(100):
                ev = event(topic, f"u-{i:03d}", key=f"k{i % 4}".encode(), headers={"n": str(i)})
                assert not publish(stub, ev).result.duplicate
                expected[ev.event_id] = ev
            for b in range(4):
                chunk = [event(topic, f"b{b}-{i:03d}", key=f"k{i % 4}".encode()) for i in range(50)]
                reply = stub.PublishBatch(pb.PublishBatchRequest(events=chunk), timeout=10)
                assert all(e.WhichOneof("outcome") == "result" for e in reply.entries)
                expected.update((ev.event_id, ev) for ev in chunk)
            for ev in expected.values():
                per_key.setdefault(ev.key, []).append(ev.event_id)
            assert ferry.pending_rows() == 300
            time.sleep(6)  # longer than the forwarder's 5 s reachability probe
            assert ferry.pending_rows() == 300
            ensure_running(cluster)
            ferry.wait_drained(60)
            assert ferry.terminate() == 0
        finally:
            ferry.kill()
    assert "kafka_unreachable" in ferry.log_path.read_text(), "the outage was never noticed"
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=300, quiet=2))
    print(f"\n{len(delivery.records)} records, duplicates={delivery.duplicates}")
    delivery.assert_contents(expected)
    assert delivery.order_violations(per_key) == []


def test_kafka_stopped_and_restarted_while_publishing(kafka: KafkaHandle, data_dir: Path) -> None:
    cluster = kafka.require_control()
    topic = kafka.topic("down-mid", partitions=3)
    acked: dict[str, pb.Event] = {}
    per_key: dict[bytes, list[str]] = {}
    errors: list[str] = []
    stop = threading.Event()

    def publisher(address: str) -> None:
        # One client publishing sequentially: each key's publish order is defined.
        with grpc.insecure_channel(address) as channel:
            stub = publisher_pb2_grpc.PublisherStub(channel)
            i = 0
            while not stop.is_set():
                ev = event(topic, f"m-{i:06d}", key=f"k{i % 6}".encode())
                try:
                    publish(stub, ev, timeout=5)
                except grpc.RpcError as exc:
                    errors.append(f"{ev.event_id}: {exc.code()} {exc.details()}")
                else:
                    acked[ev.event_id] = ev
                    per_key.setdefault(ev.key, []).append(ev.event_id)
                i += 1
                time.sleep(0.002)

    with kafka_restored(cluster):
        ferry = FerryProcess(data_dir, kafka.bootstrap, *FAST_RETRY).start()
        client = threading.Thread(target=publisher, args=(ferry.address,))
        try:
            client.start()
            time.sleep(1.5)
            cluster.stop()
            during_outage = len(acked)
            time.sleep(3)
            assert len(acked) > during_outage + 100, "publishing stalled while Kafka was down"
            ensure_running(cluster)
            time.sleep(1.5)
            stop.set()
            client.join(10)
            ferry.wait_drained(60)
            assert ferry.terminate() == 0
        finally:
            stop.set()
            ferry.kill()
    assert errors == [], errors[:5]
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=len(acked), quiet=2))
    violations = delivery.order_violations(per_key)
    print(
        f"\n{len(acked)} acked, {len(delivery.records)} records, "
        f"duplicates={delivery.duplicates}, keys out of order={violations}"
    )
    delivery.assert_contents(acked)
    assert violations == []
