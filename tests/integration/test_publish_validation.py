"""Malformed input is refused with INVALID_ARGUMENT naming the field, and nothing is written.

"Nothing written" is checked three ways: the log's highest sequence does not move, its
pending rows do not change, and two sentinel events published to the (1-partition) topic
right before and right after the bad call land on consecutive Kafka offsets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.ferry_process import FerryProcess, running_ferry
from testkit.grpc_errors import bad_request_fields
from testkit.kafka_read import read_topic
from testkit.publishing import event, event_headers, publish
from testkit.wal_files import last_sequence
from tests.conftest import KafkaHandle

MAX_EVENT_BYTES = 1024 * 1024 - 64 * 1024  # the default --max-event-bytes
MAX_HEADERS = 64
MAX_BATCH = 1000


@dataclass
class Target:
    ferry: FerryProcess
    topic: str
    sentinels: int = 0

    def sentinel_offset(self) -> int:
        self.sentinels += 1
        reply = publish(
            self.ferry.publisher(),
            event(self.topic, f"sentinel-{self.sentinels}"),
            ack_level=pb.ACK_LEVEL_KAFKA,
        )
        assert reply.result.kafka_position.partition == 0
        return int(reply.result.kafka_position.offset)


@pytest.fixture(scope="module")
def target(kafka: KafkaHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    topic = kafka.topic("valid", partitions=1)
    data_dir = tmp_path_factory.mktemp("validation") / "wal"
    with running_ferry(data_dir, kafka.bootstrap) as ferry:
        yield Target(ferry, topic)


def _publish(ev: pb.Event | None = None, **fields: Any) -> Callable[[Any], Any]:
    request = pb.PublishRequest(**fields) if ev is None else pb.PublishRequest(event=ev, **fields)
    return lambda stub: stub.Publish(request, timeout=10)


def _batch(events: list[pb.Event], **fields: Any) -> Callable[[Any], Any]:
    request = pb.PublishBatchRequest(events=events, **fields)
    return lambda stub: stub.PublishBatch(request, timeout=10)


def _good(topic: str, n: int) -> list[pb.Event]:
    return [event(topic, f"good-{os.urandom(4).hex()}-{i}") for i in range(n)]


def _with_bad(topic: str, index: int, bad: pb.Event) -> list[pb.Event]:
    events = _good(topic, 5)
    events[index] = bad
    return events


# (id, builder of the call given the sentinel topic, expected BadRequest field)
CASES: list[tuple[str, Callable[[str], Callable[[Any], Any]], str]] = [
    ("empty-topic", lambda t: _publish(event("", "e1")), "event.topic"),
    ("topic-250-chars", lambda t: _publish(event("t" * 250, "e1")), "event.topic"),
    ("topic-slash", lambda t: _publish(event("a/b", "e1")), "event.topic"),
    ("topic-space", lambda t: _publish(event("a b", "e1")), "event.topic"),
    ("topic-non-ascii", lambda t: _publish(event("tópico", "e1")), "event.topic"),
    ("topic-colon", lambda t: _publish(event("a:b", "e1")), "event.topic"),
    ("topic-dot", lambda t: _publish(event(".", "e1")), "event.topic"),
    ("topic-dotdot", lambda t: _publish(event("..", "e1")), "event.topic"),
    ("topic-internal", lambda t: _publish(event("__consumer_offsets", "e1")), "event.topic"),
    ("topic-internal-other", lambda t: _publish(event("__ferry", "e1")), "event.topic"),
    (
        "payload-over-max",
        lambda t: _publish(event(t, "e1", payload=b"x" * (MAX_EVENT_BYTES + 1))),
        "event",
    ),
    (
        "key-plus-payload-over-max",
        lambda t: _publish(event(t, "e1", key=b"k" * 10, payload=b"x" * (MAX_EVENT_BYTES - 9))),
        "event",
    ),
    (
        "too-many-headers",
        lambda t: _publish(event(t, "e1", headers={f"h{i}": "v" for i in range(MAX_HEADERS + 1)})),
        "event.headers",
    ),
    (
        "empty-header-name",
        lambda t: _publish(event(t, "e1", headers={"": "v"})),
        "event.headers",
    ),
    (
        "reserved-header",
        lambda t: _publish(event(t, "e1", headers={"ferry-event-id": "forged"})),
        "event.headers",
    ),
    (
        "reserved-header-upper-case",
        lambda t: _publish(event(t, "e1", headers={"FERRY-Trace": "v"})),
        "event.headers",
    ),
    ("event-id-non-ascii", lambda t: _publish(event(t, "ordér-1")), "event.event_id"),
    ("event-id-129-chars", lambda t: _publish(event(t, "i" * 129)), "event.event_id"),
    ("event-id-space", lambda t: _publish(event(t, "has space")), "event.event_id"),
    ("event-id-control", lambda t: _publish(event(t, "tab\there")), "event.event_id"),
    ("missing-event", lambda t: _publish(), "event"),
    ("unknown-ack-level", lambda t: _publish(event(t, "e1"), ack_level=7), "ack_level"),
    (
        "negative-kafka-wait",
        lambda t: _publish(
            event(t, "e1"),
            ack_level=pb.ACK_LEVEL_KAFKA,
            kafka_wait=duration_pb2.Duration(seconds=-1),
        ),
        "kafka_wait",
    ),
    (
        "duration-nanos-over-a-second",
        lambda t: _publish(
            event(t, "e1"),
            ack_level=pb.ACK_LEVEL_KAFKA,
            kafka_wait=duration_pb2.Duration(seconds=1, nanos=1_000_000_000),
        ),
        "kafka_wait",
    ),
    (
        "duration-signs-differ",
        lambda t: _publish(
            event(t, "e1"),
            ack_level=pb.ACK_LEVEL_KAFKA,
            kafka_wait=duration_pb2.Duration(seconds=2, nanos=-5),
        ),
        "kafka_wait",
    ),
    ("empty-batch", lambda t: _batch([]), "events"),
    ("batch-over-max", lambda t: _batch(_good(t, MAX_BATCH + 1)), "events"),
    (
        "batch-one-bad-topic",
        lambda t: _batch(_with_bad(t, 3, event("bad topic", "e1"))),
        "events[3].topic",
    ),
    (
        "batch-one-bad-header",
        lambda t: _batch(_with_bad(t, 0, event(t, "e1", headers={"ferry-x": "v"}))),
        "events[0].headers",
    ),
    (
        "batch-one-bad-id",
        lambda t: _batch(_with_bad(t, 4, event(t, "é"))),
        "events[4].event_id",
    ),
    (
        "batch-one-too-big",
        lambda t: _batch(_with_bad(t, 2, event(t, "e1", payload=b"x" * (MAX_EVENT_BYTES + 1)))),
        "events[2]",
    ),
    (
        "batch-unknown-ack-level",
        lambda t: _batch(_good(t, 2), ack_level=99),
        "ack_level",
    ),
]


@pytest.mark.parametrize(("build", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_invalid_argument_and_writes_nothing(
    target: Target, build: Callable[[str], Callable[[Any], Any]], field: str
) -> None:
    ferry = target.ferry
    before = target.sentinel_offset()
    ferry.wait_drained(10)
    seq, pending = last_sequence(ferry.data_dir), ferry.pending_rows()

    with pytest.raises(grpc.RpcError) as info:
        build(target.topic)(ferry.publisher())

    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert bad_request_fields(error) == [field]
    assert (error.details() or "").startswith(f"{field}:"), error.details()
    assert last_sequence(ferry.data_dir) == seq, "a rejected request wrote to the log"
    assert ferry.pending_rows() == pending
    assert target.sentinel_offset() == before + 1, "something reached the topic"


def test_limits_are_inclusive(kafka: KafkaHandle, target: Target) -> None:
    """The largest valid values are accepted and delivered intact."""
    long_topic = kafka.topic("v" * 236, partitions=1)  # 236 + "-" + 12 hex = 249 characters
    assert len(long_topic) == 249
    headers = {f"h{i:02d}": "v" for i in range(MAX_HEADERS)}
    biggest = os.urandom(MAX_EVENT_BYTES - sum(len(k) + len(v) for k, v in headers.items()) - 3)
    events = {
        "i" * 128: event(target.topic, "i" * 128),
        "big": event(target.topic, "big", key=b"key", payload=biggest, headers=headers),
        "~!#$%&'()*+,-./:;<=>?@[]^_`{|}": event(target.topic, "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
        "long-topic": event(long_topic, "long-topic"),
        "empty": event(target.topic, "empty", payload=b""),
    }
    stub = target.ferry.publisher()
    for ev in events.values():
        reply = publish(stub, ev, ack_level=pb.ACK_LEVEL_KAFKA, timeout=30)
        assert reply.result.HasField("kafka_position"), ev.event_id
    found = {r.event_id: r for r in read_topic(kafka.bootstrap, target.topic, quiet=1.5)}
    found.update({r.event_id: r for r in read_topic(kafka.bootstrap, long_topic, quiet=1)})
    for event_id, ev in events.items():
        record = found[event_id]
        assert record.value == ev.payload
        assert record.key == (ev.key if ev.HasField("key") else None)
        assert record.user_headers == event_headers(ev)


def test_topic_allowlist(kafka: KafkaHandle, tmp_path: Path) -> None:
    allowed_a, allowed_b = kafka.topic("allow-a", 1), kafka.topic("allow-b", 1)
    other = kafka.topic("allow-other", 1)
    with running_ferry(
        tmp_path / "wal", kafka.bootstrap, "--topic-allowlist", f"{allowed_a},{allowed_b}"
    ) as ferry:
        stub = ferry.publisher()
        publish(stub, event(allowed_a, "a-1"), ack_level=pb.ACK_LEVEL_KAFKA)
        publish(stub, event(allowed_b, "b-1"), ack_level=pb.ACK_LEVEL_KAFKA)
        seq = last_sequence(ferry.data_dir)
        with pytest.raises(grpc.RpcError) as info:
            publish(stub, event(other, "o-1"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(info.value) == ["event.topic"]
        assert "allow-list" in (info.value.details() or "")
        with pytest.raises(grpc.RpcError) as info:
            stub.PublishBatch(
                pb.PublishBatchRequest(
                    events=[event(allowed_a, "a-2"), event(other, "o-2"), event(allowed_b, "b-2")]
                ),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(info.value) == ["events[1].topic"]
        assert last_sequence(ferry.data_dir) == seq
        ferry.wait_drained(20)
    assert [r.event_id for r in read_topic(kafka.bootstrap, allowed_a, quiet=1)] == ["a-1"]
    assert [r.event_id for r in read_topic(kafka.bootstrap, allowed_b, quiet=1)] == ["b-1"]
    assert read_topic(kafka.bootstrap, other, quiet=1) == []
