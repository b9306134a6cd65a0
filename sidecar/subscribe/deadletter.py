"""The dead letter of a record that used up its delivery attempts.

A dead letter is an ordinary event for Ferry's durable publish path (same
log, same guarantees). Its id is derived from the subscription and the
record's coordinates, so writing it twice (a retry, a restart) is deduplicated
by the log's idempotency window instead of producing two dead letters.
"""

from __future__ import annotations

from sidecar.kafka.ports import FetchedRecord
from sidecar.model import OutgoingEvent
from sidecar.subscribe.records import event_id_of, user_headers

PREFIX = "ferry-dead-letter-"


def dead_letter_event(
    record: FetchedRecord, subscription: str, topic: str, attempts: int, reason: str
) -> OutgoingEvent:
    """The event to publish to `topic` for `record`, with headers naming where it came from."""
    metadata = {
        f"{PREFIX}subscription": subscription,
        f"{PREFIX}original-topic": record.topic,
        f"{PREFIX}original-partition": str(record.partition),
        f"{PREFIX}original-offset": str(record.offset),
        f"{PREFIX}original-event-id": event_id_of(record),
        f"{PREFIX}delivery-attempts": str(attempts),
        f"{PREFIX}reason": reason,
    }
    headers = {**user_headers(record), **metadata}
    return OutgoingEvent(
        event_id=f"dead-letter/{subscription}/{record.topic}/{record.partition}/{record.offset}",
        topic=topic,
        key=record.key,
        payload=record.value or b"",
        headers=tuple(sorted(headers.items())),
    )
