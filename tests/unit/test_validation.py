"""Client input checks: topics, event ids, headers, size limits, assigned ids."""

from __future__ import annotations

import string
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import record_pb2
from sidecar.errors import InvalidArgument
from sidecar.ids import COUNTER_BITS, EventIds, IdBlock, format_id, parse_id
from sidecar.model import Headers, OutgoingEvent
from sidecar.validation import (
    MAX_HEADER_NAME,
    EventLimits,
    check_event,
    check_events,
    check_subscription,
    check_topic,
)

LIMITS = EventLimits(max_event_bytes=1000, max_headers=4)
KAFKA_TOPIC_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


def message(
    topic: str = "orders",
    *,
    key: bytes | None = b"k",
    payload: bytes | None = b"p",
    headers: Headers = (),
    event_id: str = "id-1",
) -> pb.Event:
    """A ferry.v1.Event as a client sends it: None leaves key, payload or a header value unset."""
    event = pb.Event(topic=topic, key=key, payload=payload, event_id=event_id)
    event.headers.extend(record_pb2.Header(key=k, value=v) for k, v in headers)
    return event


def event(field: str = "event", limits: EventLimits = LIMITS, **fields: Any) -> OutgoingEvent:
    """The event checked as a Publish's (`field` "event") or at index i of a batch
    ("events[i]", after i good events)."""
    sent = message(**fields)
    if field == "event":
        return check_event(sent, limits)
    index = int(field.removeprefix("events[").removesuffix("]"))
    return check_events([message(event_id="")] * index + [sent], limits).events[index]


def rejected(expect: str, /, **overrides: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        event(**overrides)
    assert info.value.field == expect, info.value
    return info.value


# -- topics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["a", "orders", "Orders.v2", "my_topic-1", "_private", "a" * 249, "...", ".a", "a..b"],
)
def test_legal_topics_are_accepted(topic: str) -> None:
    assert check_topic(topic, "topic") == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "empty"),
        ("a" * 250, "249"),
        ("has space", "a-zA-Z0-9"),
        ("slash/topic", "a-zA-Z0-9"),
        ("colon:topic", "a-zA-Z0-9"),
        ("ünïcode", "a-zA-Z0-9"),
        ("tab\t", "a-zA-Z0-9"),
        ("newline\n", "a-zA-Z0-9"),
        ("star*", "a-zA-Z0-9"),
        (".", "'.'"),
        ("..", "'.'"),
        ("__x", "internal"),
        ("__consumer_offsets", "internal"),
    ],
)
def test_illegal_topics_are_rejected(topic: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason) as info:
        check_topic(topic, "events[3].topic")
    assert info.value.field == "events[3].topic"


def test_topic_allowlist() -> None:
    allowed = frozenset({"orders", "payments"})
    assert check_topic("orders", "topic", allowed) == "orders"
    with pytest.raises(InvalidArgument, match="allow-list") as info:
        check_topic("other", "topic", allowed)
    assert info.value.field == "topic"
    # An empty allow-list allows every legal topic.
    assert check_topic("other", "topic", frozenset()) == "other"


def test_allowlist_applies_to_events() -> None:
    limits = EventLimits(1000, 4, frozenset({"orders"}))
    assert event(limits=limits).topic == "orders"
    rejected("event.topic", topic="refunds", limits=limits)


def kafka_accepts(topic: str) -> bool:
    """Kafka's topic rules (plus Ferry's refusal of internal "__" names), stated independently."""
    return (
        0 < len(topic) <= 249
        and all(c in KAFKA_TOPIC_CHARS for c in topic)
        and topic not in {".", ".."}
        and topic[:2] != "__"
    )


TOPIC_ALPHABET = st.sampled_from(sorted(KAFKA_TOPIC_CHARS) + list(" /:\\*?\n\t\x00é日+@#,"))
TOPICS = st.one_of(
    st.text(TOPIC_ALPHABET, max_size=260),
    st.text(st.sampled_from("._"), min_size=1, max_size=4),
    st.integers(245, 253).map(lambda n: "t" * n),
    st.text(),
)


@settings(max_examples=400, deadline=None)
@given(TOPICS)
def test_property_topic_accepted_iff_kafka_rules_hold(topic: str) -> None:
    if kafka_accepts(topic):
        assert check_topic(topic, "topic") == topic
    else:
        with pytest.raises(InvalidArgument):
            check_topic(topic, "topic")


def test_subscription_names() -> None:
    assert check_subscription("group-1.a_b", "subscription") == "group-1.a_b"
    assert check_subscription("g" * 200, "subscription") == "g" * 200
    for bad in ("", "g" * 201, "has space", "é"):
        with pytest.raises(InvalidArgument) as info:
            check_subscription(bad, "subscription")
        assert info.value.field == "subscription"


# -- event ids ------------------------------------------------------------------------------


def test_event_id_up_to_128_printable_ascii_is_kept() -> None:
    for event_id in ("x" * 128, "!~", "a-b_c.d:e/f"):
        result = event(event_id=event_id)
        assert result.event_id == event_id
        assert result.assigned_id is False


@pytest.mark.parametrize("event_id", ["x" * 129, "café", "with space", "tab\t", "\x7f", "日本"])
def test_bad_event_ids_are_rejected(event_id: str) -> None:
    err = rejected("events[3].event_id", event_id=event_id, field="events[3]")
    assert "128" in err.description


# -- headers --------------------------------------------------------------------------------


def test_header_count_limit() -> None:
    four = tuple((f"h{i}", b"v") for i in range(4))
    assert len(event(headers=four).headers) == 4
    five = tuple(("h", b"v") for _ in range(5))
    err = rejected("events[0].headers", headers=five, field="events[0]")
    assert "4" in err.description


def test_empty_header_name_rejected() -> None:
    rejected("event.headers", headers=(("", b"v"),))


def test_header_name_length_limit() -> None:
    ok = "h" * MAX_HEADER_NAME
    assert event(headers=((ok, b"v"),)).headers == ((ok, b"v"),)
    rejected("event.headers", headers=(("h" * (MAX_HEADER_NAME + 1), b"v"),))


@pytest.mark.parametrize("name", ["ferry-event-id", "Ferry-X", "FERRY-", "fErRy-anything"])
def test_reserved_header_prefix_any_case(name: str) -> None:
    err = rejected("events[7].headers", headers=((name, b"v"),), field="events[7]")
    assert "reserved" in err.description


@pytest.mark.parametrize("name", ["ferry", "ferryman", "x-ferry-id", "ferry_id"])
def test_names_merely_resembling_the_prefix_are_allowed(name: str) -> None:
    assert event(headers=((name, b"v"),)).headers == ((name, b"v"),)


def test_headers_keep_order_repeats_bytes_and_nulls() -> None:
    headers = (("b", b"\xff"), ("a", None), ("b", b""), ("a", b"1"))
    assert event(headers=headers).headers == headers


@pytest.mark.parametrize("value", [None, b""])
def test_null_and_empty_key_and_payload_stay_apart(value: bytes | None) -> None:
    result = event(key=value, payload=value)
    assert result.key is value
    assert result.payload is value


# -- size ------------------------------------------------------------------------------------


def test_size_counts_payload_key_and_headers_in_utf8_bytes_at_the_boundary() -> None:
    # header: "ké" (3 bytes) + "日" (3 bytes) = 6; key 10; payload fills up to the limit.
    headers = (("ké", "日".encode()),)
    payload = b"p" * (LIMITS.max_event_bytes - 10 - 6)
    at_limit = event(key=b"k" * 10, payload=payload, headers=headers)
    assert at_limit.size == LIMITS.max_event_bytes

    err = rejected(
        "events[3]", key=b"k" * 10, payload=payload + b"p", headers=headers, field="events[3]"
    )
    assert str(LIMITS.max_event_bytes + 1) in err.description
    # One more byte in the header value (not in the payload) tips it over too.
    rejected("event", key=b"k" * 10, payload=payload, headers=(("ké", "日a".encode()),))
    # ...and so does one more key byte.
    rejected("event", key=b"k" * 11, payload=payload, headers=headers)


def test_null_header_values_count_nothing() -> None:
    assert event(key=None, payload=None, headers=(("abc", None),)).size == 3


def test_payload_alone_at_limit_is_ok() -> None:
    assert event(key=b"", payload=b"x" * 1000).size == 1000
    rejected("event", key=b"", payload=b"x" * 1001)


def test_invalid_argument_carries_field_and_description() -> None:
    err = rejected("events[3].topic", topic="", field="events[3]")
    assert err.description == "must not be empty"
    assert str(err) == "events[3].topic: must not be empty"


# -- assigned ids ----------------------------------------------------------------------------


def test_missing_event_id_is_assigned_a_time_ordered_uuid7() -> None:
    before_ms = int(time.time() * 1000)
    ids = [event(event_id="").event_id for _ in range(200)]
    after_ms = int(time.time() * 1000)
    assert all(event(event_id="").assigned_id for _ in range(3))
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 for u in parsed)
    assert all(u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "UUIDv7 strings must sort in creation order"
    # Ids sharing a millisecond count up in the 12 bits after the version; only when 4096 of
    # them share one does the millisecond field move on, so the embedded time stays close.
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)
    assert before_ms <= millis[0]
    assert millis[-1] <= after_ms + len(ids)


def uuid7_parts(event_id: str) -> tuple[int, int, int]:
    u = uuid.UUID(event_id)
    assert (u.version, u.variant) == (7, uuid.RFC_4122)
    return u.int >> 80, (u.int >> 64) & 0xFFF, u.int & ((1 << 62) - 1)


def test_ids_in_one_millisecond_count_up_and_overflow_into_the_next() -> None:
    ids = EventIds(clock_ns=lambda: 5_000_000_000)
    parts = [uuid7_parts(ids.next()) for _ in range(4097)]
    assert [p[:2] for p in parts[:3]] == [(5000, 0), (5000, 1), (5000, 2)]
    assert parts[4095][:2] == (5000, 4095)
    assert parts[4096][:2] == (5001, 0)
    assert len({p[2] for p in parts}) == 1, "one random tail per process"


def test_ids_stay_ordered_when_the_clock_steps_back() -> None:
    now = [9_000_000_000]
    ids = EventIds(clock_ns=lambda: now[0])
    first = ids.next()
    now[0] -= 2_000_000_000
    later = [ids.next() for _ in range(3)]
    assert [first, *later] == sorted([first, *later])
    assert len({first, *later}) == 4
    now[0] += 10_000_000_000
    assert uuid7_parts(ids.next())[:2] == (17_000, 0)


def test_every_process_draws_its_own_random_tail() -> None:
    tails = {uuid7_parts(EventIds(clock_ns=lambda: 0).next())[2] for _ in range(50)}
    assert len(tails) == 50


@pytest.mark.parametrize(
    ("counter", "size"),
    [(0, 1), (0x0AB, 300), (4090, 100), (4095, 1), (4095, 2), (17, 3 * 4096 + 5)],
)
def test_a_blocks_ids_are_its_stamps_formatted_in_order(counter: int, size: int) -> None:
    # Blocks that start anywhere in a millisecond and run into the next ones.
    tail = EventIds(clock_ns=lambda: 0).block(1).tail
    block = IdBlock((1_700_000_000_123 << COUNTER_BITS) + counter, size, tail)
    stamps = range(block.first, block.first + size)
    ids = block.ids()
    assert ids == [format_id(stamp, tail) for stamp in stamps]
    assert [parse_id(i) for i in ids] == [(stamp, tail) for stamp in stamps]
