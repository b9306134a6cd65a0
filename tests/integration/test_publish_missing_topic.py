"""A topic Kafka does not have (auto-create is off) holds only its own events."""

from __future__ import annotations

import time
from pathlib import Path

from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from testkit.delivery import Delivery
from testkit.ferry_process import running_ferry
from testkit.kafka_admin import create_topic, unique_topic
from testkit.kafka_read import read_topic
from testkit.publishing import FAST_RETRY, event, publish
from testkit.waiting import wait_for
from tests.conftest import KafkaHandle

PROMPT_S = 10.0


def _publish_prompt(stub: object, topic: str, prefix: str, count: int) -> dict[str, pb.Event]:
    """Publish with ACK_LEVEL_KAFKA; each must be acknowledged by Kafka within PROMPT_S."""
    done = {}
    for i in range(count):
        ev = event(topic, f"{prefix}-{i}", key=f"k{i % 3}".encode())
        started = time.monotonic()
        reply = publish(
            stub,
            ev,
            ack_level=pb.ACK_LEVEL_KAFKA,
            kafka_wait=duration_pb2.Duration(seconds=int(PROMPT_S)),
            timeout=PROMPT_S + 5,
        )
        assert reply.result.HasField("kafka_position")
        assert time.monotonic() - started < PROMPT_S
        done[ev.event_id] = ev
    return done


def test_missing_topic_does_not_block_other_topics(kafka: KafkaHandle, data_dir: Path) -> None:
    existing = kafka.topic("present", partitions=3)
    missing = unique_topic("missing")
    held: dict[str, pb.Event] = {}
    with running_ferry(data_dir, kafka.bootstrap, *FAST_RETRY) as ferry:
        stub = ferry.publisher()
        for i in range(20):
            ev = event(missing, f"held-{i:02d}", key=f"k{i % 2}".encode())
            publish(stub, ev)
            held[ev.event_id] = ev
        arrived = _publish_prompt(stub, existing, "early", 10)
        # Long enough for the missing topic's lane to fail, back off and try again.
        time.sleep(12)
        arrived.update(_publish_prompt(stub, existing, "late", 10))
        # (the last ACK_LEVEL_KAFKA answer may come just before its row is retired)
        wait_for(lambda: ferry.pending_rows() == len(held), 5, what="only held events pending")
        assert ferry.proc is not None
        assert ferry.proc.poll() is None

        create_topic(kafka.bootstrap, missing, partitions=2)
        ferry.wait_drained(60)
        arrived.update(_publish_prompt(stub, existing, "after", 5))
        assert ferry.terminate() == 0
    present = Delivery(read_topic(kafka.bootstrap, existing, expect=len(arrived), quiet=1.5))
    present.assert_contents(arrived)
    created = Delivery(read_topic(kafka.bootstrap, missing, expect=len(held), quiet=1.5))
    created.assert_contents(held)
    per_key: dict[bytes, list[str]] = {}
    for ev in held.values():
        per_key.setdefault(ev.key, []).append(ev.event_id)
    assert created.order_violations(per_key) == []
