"""The v1 wire against a real Ferry and Kafka: records exactly as published, publish times,
undecodable requests, and the transport's own size limit."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1.record_pb2 import TIMESTAMP_TYPE_CREATE_TIME
from testkit.ferry_process import running_ferry
from testkit.grpc_errors import bad_request_fields, error_reason
from testkit.kafka_read import read_topic
from testkit.publishing import event, event_headers, publish
from testkit.stream_client import open_stream
from testkit.subscribe_calls import APPLIED, open_request, unique_subscription
from testkit.wal_files import last_sequence
from tests.conftest import KafkaHandle

BINARY_HEADERS = [("a", b"\xff\x00"), ("a", None), ("b", b""), ("a", b"last")]


def test_published_records_are_exact_in_kafka_and_at_the_subscriber(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("v1-exact", partitions=1)
    events = [
        event(topic, "binary", payload=b"", headers=BINARY_HEADERS),  # null key, empty payload
        event(topic, "tombstone", key=b"k"),
        event(topic, "empty-key", key=b"", payload=b"v"),
    ]
    events[1].ClearField("payload")  # a null value: a tombstone on a compacted topic
    before_ms = time.time() * 1000
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        results = {
            ev.event_id: publish(ferry.publisher(), ev, ack_level=pb.ACK_LEVEL_KAFKA).result
            for ev in events
        }
        for result in results.values():
            assert before_ms - 1000 <= result.publish_time.ToMilliseconds() <= time.time() * 1000
        records = {r.event_id: r for r in read_topic(kafka.bootstrap, topic, expect=3, quiet=1)}
        client = open_stream(ferry, open_request(unique_subscription("v1"), [topic], lease_s=30))
        received = {r.event_id: r for r in client.take(timeout=30, at_least=3)}
        assert {x.status for x in client.ack(r.ack_id for r in received.values())} == {APPLIED}
        client.cancel()

    for ev in events:
        key = ev.key if ev.HasField("key") else None
        value = ev.payload if ev.HasField("payload") else None
        record = records[ev.event_id]
        assert (record.key, record.value) == (key, value), ev.event_id
        assert record.user_headers == event_headers(ev), ev.event_id
        delivered = received[ev.event_id].delivery.event
        assert delivered.published_by_ferry
        assert (delivered.key if delivered.HasField("key") else None) == key
        assert (delivered.payload if delivered.HasField("payload") else None) == value
        assert event_headers(delivered) == event_headers(ev)
        assert delivered.publish_time == results[ev.event_id].publish_time
        assert delivered.kafka_time_type == TIMESTAMP_TYPE_CREATE_TIME
    assert event_headers(events[0]) == BINARY_HEADERS


def test_a_duplicate_answers_the_original_publish_time(kafka: KafkaHandle, data_dir: Path) -> None:
    topic = kafka.topic("v1-dup", partitions=1)
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        first = publish(ferry.publisher(), event(topic, "same")).result
        time.sleep(0.05)
        again = publish(ferry.publisher(), event(topic, "same")).result
        ferry.wait_drained(30)
        delivered = publish(ferry.publisher(), event(topic, "same")).result
    assert (again.duplicate, delivered.duplicate) == (True, True)
    assert again.publish_time == first.publish_time == delivered.publish_time
    assert delivered.kafka_position.offset == 0


def test_undecodable_request_is_invalid_argument_and_nothing_is_written(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("v1-undecodable", partitions=1)
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        publish(ferry.publisher(), event(topic, "before"))
        seq = last_sequence(ferry.data_dir)
        for method in ("/ferry.v1.Publisher/Publish", "/ferry.v1.Publisher/PublishBatch"):
            with pytest.raises(grpc.RpcError) as info:
                ferry.channel().unary_unary(method)(b"\xff\xff\xff", timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
            assert error_reason(info.value) == "REQUEST_UNDECODABLE"
            assert bad_request_fields(info.value) == ["request"]
            assert "Error" not in (info.value.details() or ""), "a Python class name leaked"
        assert last_sequence(ferry.data_dir) == seq
        publish(ferry.publisher(), event(topic, "after"))  # Ferry keeps serving
        ferry.wait_drained(30)
    assert [r.event_id for r in read_topic(kafka.bootstrap, topic, quiet=1)] == ["before", "after"]


def test_the_receive_limit_follows_the_event_limits(kafka: KafkaHandle, data_dir: Path) -> None:
    """The largest valid batch passes the transport; anything larger is refused by it, with no
    ErrorInfo (permanent), unlike the log's own RESOURCE_EXHAUSTED."""
    topic = kafka.topic("v1-limit", partitions=1)
    flags = ("--max-event-bytes", "1000", "--max-batch-events", "3")
    with running_ferry(data_dir, kafka.bootstrap, *flags) as ferry:
        stub = ferry.publisher()
        largest = [event(topic, f"{'i' * 120}{n}", payload=b"x" * 1000, key=None) for n in range(3)]
        reply = stub.PublishBatch(pb.PublishBatchRequest(events=largest), timeout=10)
        assert [e.WhichOneof("outcome") for e in reply.entries] == ["result"] * 3
        seq = last_sequence(ferry.data_dir)
        with pytest.raises(grpc.RpcError) as info:
            publish(stub, event(topic, "huge", payload=b"x" * 64 * 1024))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rpc_status.from_call(info.value) is None  # type: ignore[arg-type]
        assert last_sequence(ferry.data_dir) == seq
