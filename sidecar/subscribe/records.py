"""How a Kafka record presents itself to subscribers: its stable event id and user headers."""

from __future__ import annotations

from sidecar.forward.forwarder import EVENT_ID_HEADER
from sidecar.kafka.consumer import FetchedRecord


def ferry_event_id(record: FetchedRecord) -> str | None:
    """The publisher's event id, for records Ferry produced."""
    for name, value in record.headers:
        if name == EVENT_ID_HEADER and value is not None:
            try:
                return value.decode()
            except UnicodeDecodeError:
                return None
    return None


def event_id_of(record: FetchedRecord) -> str:
    """A stable id: the publisher's, or the record's coordinates for foreign producers."""
    return ferry_event_id(record) or f"{record.topic}/{record.partition}/{record.offset}"


def user_headers(record: FetchedRecord) -> dict[str, str]:
    """Headers but the event id (carried as event_id); values that are not UTF-8 are left out.

    Ferry's other headers stay visible: a dead letter's `ferry-dead-letter-*` headers tell its
    reader where it came from.
    """
    headers: dict[str, str] = {}
    for name, value in record.headers:
        if name == EVENT_ID_HEADER:
            continue
        try:
            headers[name] = (value or b"").decode()
        except UnicodeDecodeError:
            continue
    return headers
