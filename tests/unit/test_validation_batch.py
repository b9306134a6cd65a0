"""A request's events checked on the parsed messages: which field an error names, the order of
the checks, the ids drawn, and the events and bytes handed on (test_validation.py has the rules
themselves)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar.errors import InvalidArgument, TopicNotAllowed
from sidecar.ids import parse_id
from sidecar.model import OutgoingEvent
from sidecar.validation import EventLimits, check_event, check_events
from tests.unit.test_validation import message as client_event

LIMITS = EventLimits(max_event_bytes=1000, max_headers=8)


def message(topic: str = "orders", **fields: Any) -> pb.Event:
    """A client's event (tests.unit.test_validation), with no event id unless given."""
    return client_event(topic, **{"event_id": "", **fields})


def refusal(messages: list[pb.Event], limits: EventLimits = LIMITS) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check_events(messages, limits)
    return info.value


SEVEN_GOOD = tuple((f"h{i}", b"v") for i in range(7))


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("ferry-x", "header 'ferry-x': the 'ferry-' prefix is reserved"),
        ("", "header names must not be empty"),
        ("h" * 257, "header names are at most 256 characters"),
    ],
)
def test_a_bad_eighth_header_of_the_fourth_event_names_that_event(
    name: str, description: str
) -> None:
    bad = message(headers=(*SEVEN_GOOD, (name, b"v")))
    error = refusal([message(), message(), message(), bad, message()])
    assert (error.field, error.description) == ("events[3].headers", description)


def test_too_many_headers_names_the_event() -> None:
    error = refusal([message(), message(headers=(*SEVEN_GOOD, ("h7", b"v"), ("h8", b"v")))])
    assert (error.field, error.description) == ("events[1].headers", "at most 8 headers")


def test_each_field_is_named_within_its_event_in_a_batch() -> None:
    assert refusal([message(), message(""), message()]).field == "events[1].topic"
    assert refusal([message(event_id="bad id")]).field == "events[0].event_id"
    too_large = refusal([message(), message(), message(payload=b"p" * 1000)])
    assert too_large.field == "events[2]"
    assert too_large.description == "payload + key + headers is 1001 bytes; the limit is 1000"


def test_a_topic_outside_the_allow_list_names_its_event() -> None:
    limits = EventLimits(1000, 8, frozenset({"orders"}))
    with pytest.raises(TopicNotAllowed) as info:
        check_events([message(), message("refunds")], limits)
    assert info.value.field == "events[1].topic"


def test_a_publish_names_its_one_event_field() -> None:
    cases = [
        (message("__x"), "event.topic"),
        (message(event_id="x" * 129), "event.event_id"),
        (message(headers=(("Ferry-id", b"v"),)), "event.headers"),
        (message(payload=b"p" * 1000), "event"),
    ]
    for sent, field in cases:
        with pytest.raises(InvalidArgument) as info:
            check_event(sent, LIMITS)
        assert info.value.field == field


def test_the_first_bad_event_is_the_one_named() -> None:
    error = refusal([message(), message(event_id="bad id"), message(""), message("__x")])
    assert error.field == "events[1].event_id"


def test_within_an_event_topic_then_id_then_headers_then_size_are_checked() -> None:
    bad_header = (("", b"v"),)
    bad_id = "bad id"
    assert refusal([message("", event_id=bad_id)]).field == "events[0].topic"
    assert refusal([message(event_id=bad_id, headers=bad_header)]).field == "events[0].event_id"
    assert refusal([message(payload=b"p" * 2000, headers=bad_header)]).field == "events[0].headers"


def test_assigned_ids_come_from_one_block_in_event_order() -> None:
    sent = [message(), message(event_id="mine"), message(), message()]
    events = check_events(sent, LIMITS).events
    assert [e.assigned_id for e in events] == [True, False, True, True]
    assert events[1].event_id == "mine"
    parsed = [parse_id(events[i].event_id) for i in (0, 2, 3)]
    assert all(p is not None for p in parsed)
    stamps = [p[0] for p in parsed if p is not None]
    # The block holds one stamp per event of the request; an event's id is its own stamp.
    assert stamps == [stamps[0], stamps[0] + 2, stamps[0] + 3]
    assert len({p[1] for p in parsed if p is not None}) == 1


def test_a_request_of_client_ids_draws_no_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_block(count: int) -> None:
        raise AssertionError(f"drew a block of {count} ids")

    monkeypatch.setattr("sidecar.validation.new_id_block", no_block)
    events = check_events([message(event_id="a"), message(event_id="b")], LIMITS).events
    assert [e.event_id for e in events] == ["a", "b"]


# -- what is handed on, against the messages read field by field -----------------------------


def expected(sent: pb.Event) -> tuple[object, ...]:
    """The event's fields read one by one, as the log and Kafka take them."""
    has = sent.HasField
    return (
        sent.topic,
        sent.key if has("key") else None,
        sent.payload if has("payload") else None,
        tuple((h.key, h.value if h.HasField("value") else None) for h in sent.headers),
        not sent.event_id,
        sent.SerializeToString(),
    )


def handed_on(event: OutgoingEvent) -> tuple[object, ...]:
    return (event.topic, event.key, event.payload, event.headers, event.assigned_id, event.encoded)


BYTES = st.one_of(st.none(), st.binary(max_size=40))
NAMES = st.text(min_size=1, max_size=12).filter(lambda n: not n.lower().startswith("ferry-"))
EVENTS = st.builds(
    message,
    st.sampled_from(["orders", "a.b-c_d"]),
    key=BYTES,
    payload=BYTES,
    headers=st.lists(st.tuples(NAMES, BYTES), max_size=5).map(tuple),
    event_id=st.sampled_from(["", "id-1", "x" * 128]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, min_size=1, max_size=6), st.integers(0, 300))
def test_property_events_and_bytes_match_the_messages(
    sent: list[pb.Event], max_event_bytes: int
) -> None:
    limits = EventLimits(max_event_bytes, 8)
    sizes = [
        len(e.key) + len(e.payload) + sum(len(h.key.encode()) + len(h.value) for h in e.headers)
        for e in sent
    ]
    over = [i for i, size in enumerate(sizes) if size > max_event_bytes]
    if over:
        error = refusal(sent, limits)
        assert error.field == f"events[{over[0]}]"
        assert str(sizes[over[0]]) in error.description
        return
    checked = check_events(sent, limits)
    assert [handed_on(e) for e in checked.events] == [expected(m) for m in sent]
    assert [e.size for e in checked.events] == sizes
    assert checked.size == sum(sizes)
    for event, original in zip(checked.events, sent, strict=True):
        assert event.event_id == (original.event_id or event.event_id)
        assert (parse_id(event.event_id) is not None) == event.assigned_id
