"""How a Kafka record presents itself to subscribers: its stable event id and user headers."""

from __future__ import annotations

from sidecar.forward.forwarder import EVENT_ID_HEADER
from sidecar.kafka.consumer import FetchedRecord
from sidecar.validation import RESERVED_HEADER_PREFIX


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
    """Headers without Ferry's own; values that are not UTF-8 are left out (last one wins)."""
    headers: dict[str, str] = {}
    for name, value in record.headers:
        if name.lower().startswith(RESERVED_HEADER_PREFIX):
            continue
        try:
            headers[name] = (value or b"").decode()
        except UnicodeDecodeError:
            continue
    return headers
