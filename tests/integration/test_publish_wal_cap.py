"""The log's row cap: RESOURCE_EXHAUSTED with RetryInfo, nothing written, then recovery."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.delivery import Delivery
from testkit.ferry_process import FerryProcess
from testkit.grpc_errors import error_reason, retry_delay_s
from testkit.kafka_read import read_topic
from testkit.kafka_restore import ensure_running, kafka_restored
from testkit.publishing import FAST_RETRY, event, publish
from testkit.wal_files import last_sequence
from tests.conftest import KafkaHandle

CAP = 50


def _assert_exhausted(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert error_reason(error) == "LOG_FULL"
    delay = retry_delay_s(error)
    assert delay is not None, "RESOURCE_EXHAUSTED without a google.rpc.RetryInfo detail"
    assert delay > 0


def test_wal_row_cap_refuses_then_recovers(kafka: KafkaHandle, data_dir: Path) -> None:
    cluster = kafka.require_control()
    topic = kafka.topic("walcap", partitions=3)
    accepted: dict[str, pb.Event] = {}
    with kafka_restored(cluster):
        cluster.stop()
        ferry = FerryProcess(
            data_dir,
            kafka.bootstrap,
            "--wal-max-rows",
            str(CAP),
            "--wal-topic-share",
            "1",
            *FAST_RETRY,
        ).start()
        try:
            stub = ferry.publisher()
            for i in range(CAP - 2):
                ev = event(topic, f"e-{i:02d}", key=f"k{i % 3}".encode())
                publish(stub, ev)
                accepted[ev.event_id] = ev

            # A batch that does not fit is refused whole.
            too_big = [event(topic, f"x-{i}") for i in range(3)]
            with pytest.raises(grpc.RpcError) as info:
                stub.PublishBatch(pb.PublishBatchRequest(events=too_big), timeout=10)
            _assert_exhausted(info.value)
            assert last_sequence(data_dir) == CAP - 2

            fits = [event(topic, f"e-{i:02d}") for i in (CAP - 2, CAP - 1)]
            stub.PublishBatch(pb.PublishBatchRequest(events=fits), timeout=10)
            accepted.update((ev.event_id, ev) for ev in fits)
            assert ferry.pending_rows() == CAP

            with pytest.raises(grpc.RpcError) as info:
                publish(stub, event(topic, "one-too-many"))
            _assert_exhausted(info.value)
            with pytest.raises(grpc.RpcError) as info:
                publish(stub, event(topic, "one-too-many"), ack_level=pb.ACK_LEVEL_KAFKA)
            _assert_exhausted(info.value)
            assert last_sequence(data_dir) == CAP, "a refused event was written"

            # A retry of an event already logged needs no room: it is a duplicate.
            again = publish(stub, accepted["e-00"]).result
            assert again.duplicate

            ensure_running(cluster)
            ferry.wait_drained(60)
            after = event(topic, "after-drain")
            publish(stub, after, ack_level=pb.ACK_LEVEL_KAFKA, timeout=30)
            accepted[after.event_id] = after
            ferry.wait_drained(30)
            assert ferry.terminate() == 0
        finally:
            ferry.kill()
    delivery = Delivery(read_topic(kafka.bootstrap, topic, expect=len(accepted), quiet=1.5))
    delivery.assert_contents(accepted)
    assert set(delivery.by_id) == set(accepted)
    assert delivery.duplicates == 0
