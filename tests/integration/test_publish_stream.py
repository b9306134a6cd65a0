"""PublishStream against a real Ferry and Kafka: pipelined requests keep per-key order, every
answered event reaches Kafka, Kafka-level answers carry the stored position, drain ends it."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.ferry_process import running_ferry
from testkit.grpc_errors import error_reason
from testkit.kafka_read import read_topic
from testkit.publishing import event
from tests.conftest import KafkaHandle

KEYS = 8


def answers(responses: Iterable[pb.PublishStreamResponse]) -> list[pb.PublishStreamAnswer]:
    return [answer for response in responses for answer in response.answers]


def test_pipelined_requests_reach_kafka_in_stream_order_per_key(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("stream-order", partitions=3)
    # Mixed shapes: mostly one event per request (the cheap path), some small batches.
    requests: list[pb.PublishStreamRequest] = []
    for r in range(1, 1501):
        size = 1 if r % 10 else 5
        events = [
            event(
                topic, f"s{r}-{i}", key=f"k{(r + i) % KEYS}".encode(), payload=f"{r}.{i}".encode()
            )
            for i in range(size)
        ]
        requests.append(pb.PublishStreamRequest(request_id=r, events=events))
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        # Every request goes out without waiting for an answer.
        responses = answers(ferry.publisher().PublishStream(iter(requests), timeout=120))
        ferry.wait_drained(60)
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    for request, response in zip(requests, responses, strict=True):
        assert not response.HasField("error"), response
        assert [e.result.event_id for e in response.entries] == [e.event_id for e in request.events]
    sent = [e for r in requests for e in r.events]
    records = read_topic(kafka.bootstrap, topic, expect=len(sent), quiet=1.5)
    assert sorted(r.event_id or "" for r in records) == sorted(e.event_id for e in sent)
    order = {e.event_id: n for n, e in enumerate(sent)}
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key].append(order[record.event_id or ""])
    assert len(by_key) == KEYS
    for key, sent_order in by_key.items():
        assert sent_order == sorted(sent_order), f"key {key!r} out of stream order"


def test_kafka_level_answers_carry_the_stored_position(kafka: KafkaHandle, data_dir: Path) -> None:
    topic = kafka.topic("stream-kafka", partitions=2)
    requests = [
        pb.PublishStreamRequest(
            request_id=r,
            events=[event(topic, f"kafka-{r}-{i}", key=f"k{i}".encode()) for i in range(3)],
            ack_level=pb.ACK_LEVEL_KAFKA,
        )
        for r in range(1, 21)
    ]
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        responses = answers(ferry.publisher().PublishStream(iter(requests), timeout=60))
    positions = {
        entry.result.event_id: (
            entry.result.kafka_position.partition,
            entry.result.kafka_position.offset,
        )
        for response in responses
        for entry in response.entries
    }
    assert len(responses) == 20
    assert len(positions) == 60
    assert all(entry.result.HasField("kafka_position") for r in responses for entry in r.entries)
    records = read_topic(kafka.bootstrap, topic, expect=60, quiet=1.5)
    assert {r.event_id: (r.partition, r.offset) for r in records} == positions


def test_a_drain_answers_what_was_read_then_ends_the_stream_shutting_down(
    kafka: KafkaHandle, data_dir: Path
) -> None:
    topic = kafka.topic("stream-drain")
    outgoing: queue.Queue[pb.PublishStreamRequest | None] = queue.Queue()

    def client_messages() -> Iterator[pb.PublishStreamRequest]:
        while (item := outgoing.get()) is not None:
            yield item

    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        stream = ferry.publisher().PublishStream(client_messages(), timeout=60)
        for r in range(1, 4):
            outgoing.put(pb.PublishStreamRequest(request_id=r, events=[event(topic, f"d{r}")]))
        answered: list[int] = []
        while len(answered) < 3:
            answered += [a.request_id for a in next(stream).answers]
        assert answered == [1, 2, 3]
        exit_codes: list[int] = []
        stopper = threading.Thread(target=lambda: exit_codes.append(ferry.terminate()))
        stopper.start()
        with pytest.raises(grpc.RpcError) as ended:
            next(stream)
        outgoing.put(None)
        stopper.join(60)
    assert exit_codes == [0]
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(ended.value) == "SHUTTING_DOWN"
    records = read_topic(kafka.bootstrap, topic, expect=3, quiet=1.0)
    assert sorted(r.event_id or "" for r in records) == ["d1", "d2", "d3"]
