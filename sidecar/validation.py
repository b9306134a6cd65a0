"""Pure checks of client input. Each raises InvalidArgument naming the field; none does I/O.

The rules follow Kafka's own: topic names are 1-249 characters of
[a-zA-Z0-9._-], not "." or "..", and names starting with "__" are Kafka's
internal topics. Headers starting with "ferry-" are Ferry's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from google.protobuf import duration_pb2

from sidecar.errors import InvalidArgument, TopicNotAllowed
from sidecar.ids import new_event_id
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


def check_event(
    *,
    topic: str,
    key: bytes | None,
    payload: bytes | None,
    headers: Headers,
    event_id: str,
    limits: EventLimits,
    field: str = "event",
    new_id: str = "",
    encoded: bytes = b"",
) -> OutgoingEvent:
    """Validate one event and give it an id if the client sent none: `new_id` (one of the
    request's block, sidecar/ids.py), else a fresh UUIDv7."""
    try:
        _accepted_topic(topic, limits.topic_allowlist)
    except InvalidArgument:
        check_topic(topic, f"{field}.topic", limits.topic_allowlist)  # raises, naming the field
    if event_id and not EVENT_ID_RE.fullmatch(event_id):
        raise InvalidArgument(f"{field}.event_id", "must be 1-128 printable ASCII characters")
    if headers:
        _check_headers(headers, limits, field)
    event = OutgoingEvent(
        event_id=event_id or new_id or new_event_id(),
        topic=topic,
        key=key,
        payload=payload,
        headers=headers,
        assigned_id=not event_id,
        encoded=encoded,
    )
    if event.size > limits.max_event_bytes:
        raise InvalidArgument(
            field,
            f"payload + key + headers is {event.size} bytes; the limit is {limits.max_event_bytes}",
        )
    return event


def _check_headers(headers: Headers, limits: EventLimits, field: str) -> None:
    if len(headers) > limits.max_headers:
        raise InvalidArgument(f"{field}.headers", f"at most {limits.max_headers} headers")
    for name, _ in headers:
        if not name:
            raise InvalidArgument(f"{field}.headers", "header names must not be empty")
        if len(name) > MAX_HEADER_NAME:
            raise InvalidArgument(
                f"{field}.headers", f"header names are at most {MAX_HEADER_NAME} characters"
            )
        if name.lower().startswith(RESERVED_HEADER_PREFIX):
            raise InvalidArgument(
                f"{field}.headers", f"header {name!r}: the 'ferry-' prefix is reserved"
            )


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
