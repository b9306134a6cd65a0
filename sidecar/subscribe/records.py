"""How a Kafka record presents itself to subscribers: its stable event id, the time Ferry logged
it, and the user's headers exactly as Kafka holds them (order, repeats, bytes, nulls).

Ferry's own `ferry-event-id` and `ferry-publish-time` headers become fields and are left out
of the headers; every other header, a dead letter's `ferry-dead-letter-*` ones included, stays.
"""

from __future__ import annotations

from typing import NamedTuple

from sidecar.kafka.ports import FetchedRecord, RecordHeaders
from sidecar.model import EVENT_ID_HEADER, PUBLISH_TIME_HEADER


class Presentation(NamedTuple):
    event_id: str
    published_by_ferry: bool
    headers: RecordHeaders
    publish_time_ms: int  # 0: not published through Ferry, or logged by an older release


def presentation(record: FetchedRecord) -> Presentation:
    """Everything a delivery shows of `record`, in one pass over its headers."""
    if not record.headers:
        return Presentation(_position_id(record), False, (), 0)
    ferry_id: str | None = None
    publish_ms = 0
    user: list[tuple[str, bytes | None]] = []
    for name, value in record.headers:
        if name == EVENT_ID_HEADER:
            if ferry_id is None and value is not None:
                ferry_id = _text(value)
        elif name == PUBLISH_TIME_HEADER:
            if value is not None and value.isdigit():
                publish_ms = int(value)
        else:
            user.append((name, value))
    event_id = ferry_id or _position_id(record)
    return Presentation(event_id, ferry_id is not None, tuple(user), publish_ms)


def _position_id(record: FetchedRecord) -> str:
    """The event id of a record not published through Ferry: its Kafka position."""
    return f"{record.topic}/{record.partition}/{record.offset}"


def _text(value: bytes) -> str | None:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None
