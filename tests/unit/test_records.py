"""What a subscriber sees of a Kafka record, and what a dead letter carries: byte for byte."""

from __future__ import annotations

import pytest

from sidecar.kafka.ports import fetched_record
from sidecar.subscribe.deadletter import dead_letter_event
from sidecar.subscribe.records import Presentation, presentation

TOPIC = "orders"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            (("ferry-event-id", b"e-1"), ("ferry-publish-time", b"1700000000123"), ("a", b"1")),
            Presentation("e-1", True, (("a", b"1"),), 1_700_000_000_123),
        ),
        # A foreign record: binary values, a repeated key, a null value, order kept.
        (
            (("b", b"\xff\x00"), ("a", None), ("b", b""), ("a", b"2")),
            Presentation(
                "orders/0/3", False, (("b", b"\xff\x00"), ("a", None), ("b", b""), ("a", b"2")), 0
            ),
        ),
        # A dead letter's origin headers stay visible.
        (
            (("ferry-dead-letter-reason", b"nacked"),),
            Presentation("orders/0/3", False, (("ferry-dead-letter-reason", b"nacked"),), 0),
        ),
        # An event id that is no text is no Ferry id; a publish time that is no number is none.
        (
            (("ferry-event-id", b"\xff"), ("ferry-publish-time", b"soon")),
            Presentation("orders/0/3", False, (), 0),
        ),
        # The first event id wins.
        (
            (("ferry-event-id", b"first"), ("ferry-event-id", b"second")),
            Presentation("first", True, (), 0),
        ),
    ],
)
def test_presentation(headers: tuple, expected: Presentation) -> None:
    assert presentation(fetched_record(TOPIC, 0, 3, None, b"", headers)) == expected


def test_record_size_counts_key_value_and_headers() -> None:
    record = fetched_record(TOPIC, 0, 3, b"kk", b"vvv", (("h", b"12"), ("hh", None)))
    assert record.size == 2 + 3 + (1 + 2) + 2


def test_dead_letter_keeps_the_record_exactly_and_names_its_origin() -> None:
    record = fetched_record(
        TOPIC, 2, 7, None, None, (("ferry-event-id", b"e-9"), ("bin", b"\xfe"), ("bin", None))
    )
    event = dead_letter_event(record, "readers", "orders.dlq", 3, "nacked")
    assert event.key is None
    assert event.payload is None  # a tombstone stays a tombstone
    assert event.topic == "orders.dlq"
    assert event.event_id == "dead-letter/readers/orders/2/7"
    assert event.headers[:2] == (("bin", b"\xfe"), ("bin", None))
    origin = dict(event.headers[2:])
    assert origin["ferry-dead-letter-original-event-id"] == b"e-9"
    assert origin["ferry-dead-letter-original-partition"] == b"2"
    assert origin["ferry-dead-letter-reason"] == b"nacked"


def test_a_dead_letter_of_a_dead_letter_names_its_latest_origin_only() -> None:
    first = fetched_record(TOPIC, 0, 1, b"k", b"v", (("ferry-dead-letter-reason", b"old"),))
    event = dead_letter_event(first, "s", "dlq2", 2, "max_delivery_attempts")
    assert [v for k, v in event.headers if k == "ferry-dead-letter-reason"] == [
        b"max_delivery_attempts"
    ]
