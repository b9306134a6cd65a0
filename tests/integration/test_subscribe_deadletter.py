"""A poison event: delivered max_delivery_attempts times, then dead-lettered, and the
subscription moves on past it."""

from __future__ import annotations

import time

from testkit.acking_worker import AckingWorker
from testkit.consumer_offsets import wait_committed_to_end
from testkit.ferry_process import Ferries
from testkit.kafka_read import read_topic
from testkit.publishing import publish_through_ferry
from testkit.stream_client import open_stream
from testkit.subscribe_calls import group_of, open_request, unique_subscription
from tests.conftest import KafkaHandle

FERRY_ARGS = ("--subscription-linger-s", "1")
MAX_ATTEMPTS = 3


def test_poison_event_is_dead_lettered_after_max_attempts(
    kafka: KafkaHandle, ferries: Ferries
) -> None:
    topic = kafka.topic("sub-poison", partitions=1)
    dead = kafka.topic("sub-poison-dlq", partitions=1)
    ferry = ferries.start(*FERRY_ARGS)
    published = publish_through_ferry(ferry, topic, 20, prefix="p")
    poison = published[7]
    subscription = unique_subscription("poison")

    client = open_stream(
        ferry,
        open_request(
            subscription,
            [topic],
            lease_s=30,
            max_attempts=MAX_ATTEMPTS,
            dead_letter_topic=dead,
        ),
    )
    # Nacked at once each time (no delay): only the attempt limit stops it.
    worker = AckingWorker(client, ack_filter=lambda r: r.event_id != poison, nack=True).start()

    [letter] = read_topic(kafka.bootstrap, dead, expect=1, timeout=30, quiet=1.0)
    deliveries = [r for r in client.received if r.event_id == poison]
    assert [r.attempt for r in deliveries] == [1, 2, 3]
    assert len({r.ack_id for r in deliveries}) == MAX_ATTEMPTS
    original = deliveries[0].delivery

    headers = {k: v.decode() for k, v in letter.headers.items()}
    assert headers["ferry-dead-letter-original-topic"] == topic
    assert headers["ferry-dead-letter-original-partition"] == str(original.partition)
    assert headers["ferry-dead-letter-original-offset"] == str(original.offset)
    assert headers["ferry-dead-letter-original-event-id"] == poison
    assert headers["ferry-dead-letter-delivery-attempts"] == str(MAX_ATTEMPTS)
    assert headers["ferry-dead-letter-subscription"] == subscription
    assert headers["ferry-dead-letter-reason"] == "nacked by subscriber"
    assert letter.value == original.event.payload == f"payload-{poison}".encode()
    assert letter.key == original.event.key

    # The subscription moved on: everything else acked, no 4th delivery, commits past it.
    deadline = time.monotonic() + 15
    while len(worker.applied) < len(published) - 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(worker.applied) == set(published) - {poison}
    wait_committed_to_end(kafka.bootstrap, group_of(subscription), topic)
    time.sleep(1.5)
    worker.stop()
    assert len([r for r in client.received if r.event_id == poison]) == MAX_ATTEMPTS
    assert len(read_topic(kafka.bootstrap, dead, timeout=10, quiet=1.0)) == 1
    assert not worker.errors
    assert not client.violations
    client.cancel()
