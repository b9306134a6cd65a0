"""The dead letter of a record: one that used up its delivery attempts, or was nacked as poison.

A dead letter is an ordinary event for Ferry's durable publish path (same
log, same guarantees). Its id is derived from the subscription and the
record's coordinates, so writing it twice (a retry, a restart) is deduplicated
by the log's idempotency window instead of producing two dead letters. Key,
value and headers are the record's own, byte for byte, followed by headers
naming where it came from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from sidecar.kafka.ports import FetchedRecord
from sidecar.model import Accepted, Outcome, OutgoingEvent
from sidecar.subscribe.records import presentation

log = structlog.get_logger(__name__)

PREFIX = "ferry-dead-letter-"
RETRY_S = 1.0

#: The durable publish path, as dead letters use it.
DeadLetterSink = Callable[[list[OutgoingEvent]], Awaitable[list[Outcome]]]


async def write_dead_letter(sink: DeadLetterSink, event: OutgoingEvent) -> None:
    """Log `event` through `sink`, retrying every RETRY_S until the log took it.

    The record it stands for stays unacked meanwhile: a full or closing log delays the dead
    letter, it never drops it.
    """
    while True:
        try:
            [outcome] = await sink([event])
            if isinstance(outcome, Accepted):
                return
            log.error("dead_letter_rejected", error=str(outcome.error))
        except Exception as exc:  # the log is full or closing: keep the record, retry
            log.warning("dead_letter_retry", error=str(exc), topic=event.topic)
        await asyncio.sleep(RETRY_S)


def dead_letter_event(
    record: FetchedRecord, subscription: str, topic: str, attempts: int, reason: str
) -> OutgoingEvent:
    """The event to publish to `topic` for `record`, with headers naming where it came from."""
    shown = presentation(record)
    metadata = {
        f"{PREFIX}subscription": subscription,
        f"{PREFIX}original-topic": record.topic,
        f"{PREFIX}original-partition": str(record.partition),
        f"{PREFIX}original-offset": str(record.offset),
        f"{PREFIX}original-event-id": shown.event_id,
        f"{PREFIX}delivery-attempts": str(attempts),
        f"{PREFIX}reason": reason,
    }
    # A dead letter of a dead letter names its latest origin only.
    kept = tuple((k, v) for k, v in shown.headers if not k.startswith(PREFIX))
    return OutgoingEvent(
        event_id=f"dead-letter/{subscription}/{record.topic}/{record.partition}/{record.offset}",
        topic=topic,
        key=record.key,
        payload=record.value,
        headers=kept + tuple((k, v.encode()) for k, v in metadata.items()),
    )
