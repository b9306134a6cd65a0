"""How a Kafka record presents itself to subscribers: its stable event id and user headers."""

from __future__ import annotations

from sidecar.forward.forwarder import EVENT_ID_HEADER
from sidecar.kafka.ports import FetchedRecord


def presentation(record: FetchedRecord) -> tuple[str, bool, dict[str, str]]:
    """`event_id_of`, whether Ferry published it, and `user_headers`, in one pass over headers."""
    ferry_id: str | None = None
    seen_id = False
    headers: dict[str, str] = {}
    for name, value in record.headers:
        if name == EVENT_ID_HEADER:
            if not seen_id and value is not None:
                seen_id = True
                try:
                    ferry_id = value.decode()
                except UnicodeDecodeError:
                    ferry_id = None
            continue
        try:
            headers[name] = (value or b"").decode()
        except UnicodeDecodeError:
            continue
    event_id = ferry_id or f"{record.topic}/{record.partition}/{record.offset}"
    return event_id, ferry_id is not None, headers


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
