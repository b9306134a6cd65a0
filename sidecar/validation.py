"""Pure checks of client input. Each raises InvalidArgument naming the field; none does I/O.

The rules follow Kafka's own: topic names are 1-249 characters of
[a-zA-Z0-9._-], not "." or "..", and names starting with "__" are Kafka's
internal topics. Headers starting with "ferry-" are Ferry's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import publisher_pb2, record_pb2
from sidecar.errors import InvalidArgument, TopicNotAllowed
from sidecar.ids import new_id_block
from sidecar.model import Headers, OutgoingEvent

TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")
SUBSCRIPTION_RE = re.compile(r"[a-zA-Z0-9._-]{1,200}")
EVENT_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
RESERVED_HEADER_PREFIX = "ferry-"
MAX_HEADER_NAME = 256


@dataclass(frozen=True, slots=True)
class EventLimits:
    """What one event may carry."""

    max_event_bytes: int
    max_headers: int
    topic_allowlist: frozenset[str] = frozenset()


def check_topic(topic: str, field: str, allowlist: frozenset[str] = frozenset()) -> str:
    """Return `topic` if Kafka would accept it as a topic name (and it is allowed)."""
    if not topic:
        raise InvalidArgument(field, "must not be empty")
    if not TOPIC_RE.fullmatch(topic):
        raise InvalidArgument(field, "must be 1-249 characters of [a-zA-Z0-9._-]")
    if topic in {".", ".."}:
        raise InvalidArgument(field, "must not be '.' or '..'")
    if topic.startswith("__"):
        raise InvalidArgument(field, "names starting with '__' are Kafka's internal topics")
    if allowlist and topic not in allowlist:
        raise TopicNotAllowed(field, f"topic {topic!r} is not in the allow-list")
    return topic


@lru_cache(maxsize=1024)
def _accepted_topic(topic: str, allowlist: frozenset[str]) -> bool:
    """Remembers topics that passed: a publisher sends to few topics, many times over."""
    check_topic(topic, "topic", allowlist)
    return True


def check_subscription(name: str, field: str) -> str:
    """Return `name` if it is a valid subscription (consumer group) name."""
    if not SUBSCRIPTION_RE.fullmatch(name):
        raise InvalidArgument(field, "must be 1-200 characters of [a-zA-Z0-9._-]")
    return name


class CheckedEvents(NamedTuple):
    """A request's events, validated and with their ids, and their bytes (payload + key +
    headers, as `OutgoingEvent.size` counts them) all together."""

    events: list[OutgoingEvent]
    size: int


def check_event(message: publisher_pb2.Event, limits: EventLimits) -> OutgoingEvent:
    """Validate a Publish's event (field `event`); see `check_events`."""
    return _checked((message,), limits, _publish_field).events[0]


def check_events(messages: Sequence[publisher_pb2.Event], limits: EventLimits) -> CheckedEvents:
    """Validate a batch's events (fields `events[i]`), giving each without an id one of a
    block of ids drawn for the request (sidecar/ids.py). Raises on the first bad event.

    An event keeps its client's encoding (`OutgoingEvent.encoded`), which the log stores as it
    is (wal/slices.py).
    """
    return _checked(messages, limits, _batch_field)


def _publish_field(_index: int) -> str:
    return "event"


def _batch_field(index: int) -> str:
    return f"events[{index}]"


def _checked(
    messages: Sequence[publisher_pb2.Event], limits: EventLimits, field: Callable[[int], str]
) -> CheckedEvents:
    """The checks run on the parsed messages, once per event; `field` names an event's field
    path only when one of them fails."""
    allowlist, max_bytes = limits.topic_allowlist, limits.max_event_bytes
    accepted_topic, valid_id = _accepted_topic, EVENT_ID_RE.fullmatch
    # One block of ids per request (event i may take the block's i-th), drawn when the first
    # event without an id of its own comes.
    ids: list[str] = []
    events: list[OutgoingEvent] = []
    append = events.append
    total = 0
    for index, message in enumerate(messages):
        topic = message.topic
        try:
            accepted_topic(topic, allowlist)
        except InvalidArgument:
            check_topic(topic, f"{field(index)}.topic", allowlist)  # raises, naming the field
        event_id = message.event_id
        if not event_id:
            if not ids:
                ids = new_id_block(len(messages)).ids()
        elif not valid_id(event_id):
            raise InvalidArgument(
                f"{field(index)}.event_id", "must be 1-128 printable ASCII characters"
            )
        # An unset key or payload reads as b"": presence tells null from empty.
        key_bytes, payload_bytes = message.key, message.payload
        size = len(key_bytes) + len(payload_bytes)
        key = key_bytes if key_bytes or message.HasField("key") else None
        payload = payload_bytes if payload_bytes or message.HasField("payload") else None
        headers: Headers = ()
        if message_headers := message.headers:
            headers, header_bytes = _headers(message_headers, limits, field, index)
            size += header_bytes
        if size > max_bytes:
            raise InvalidArgument(
                field(index), f"payload + key + headers is {size} bytes; the limit is {max_bytes}"
            )
        total += size
        append(
            OutgoingEvent(
                event_id or ids[index],
                topic,
                key,
                payload,
                headers,
                not event_id,
                message.SerializeToString(),
            )
        )
    return CheckedEvents(events, total)


def _headers(
    messages: Sequence[record_pb2.Header],
    limits: EventLimits,
    field: Callable[[int], str],
    index: int,
) -> tuple[Headers, int]:
    """An event's headers as Kafka takes them, checked, and their bytes."""
    if len(messages) > limits.max_headers:
        raise InvalidArgument(f"{field(index)}.headers", f"at most {limits.max_headers} headers")
    headers: list[tuple[str, bytes | None]] = []
    size = 0
    for message in messages:
        name = message.key
        if not name:
            raise InvalidArgument(f"{field(index)}.headers", "header names must not be empty")
        if len(name) > MAX_HEADER_NAME:
            raise InvalidArgument(
                f"{field(index)}.headers",
                f"header names are at most {MAX_HEADER_NAME} characters",
            )
        if name.lower().startswith(RESERVED_HEADER_PREFIX):
            raise InvalidArgument(
                f"{field(index)}.headers", f"header {name!r}: the 'ferry-' prefix is reserved"
            )
        value: bytes | None = message.value
        if value:
            size += len(value)
        elif not message.HasField("value"):
            value = None
        size += len(name.encode())
        headers.append((name, value))
    return tuple(headers), size


#: google.protobuf.Duration's own range: +-10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000


def duration_seconds(value: duration_pb2.Duration, field: str, low: float, high: float) -> float:
    """A normalised Duration's length in seconds, between `low` and `high`.

    Normalised as the Duration spec says: nanos below one second, with the sign of seconds.
    """
    seconds, nanos = value.seconds, value.nanos
    if not -999_999_999 <= nanos <= 999_999_999 or abs(seconds) > MAX_DURATION_SECONDS:
        raise InvalidArgument(field, "is not a normalised Duration (nanos must be below 1 s)")
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise InvalidArgument(
            field, "is not a normalised Duration (seconds and nanos differ in sign)"
        )
    total = seconds + nanos / 1e9
    if not low <= total <= high:
        raise InvalidArgument(field, f"must be between {low:g}s and {high:g}s")
    return total
