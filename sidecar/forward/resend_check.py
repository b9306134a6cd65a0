"""The forwarder's first step: which rows it would send again are in Kafka already.

What a kill -9 costs in duplicates is the rows Kafka acknowledged but the log had not retired
yet: the next forwarder starts each lane at its retirement watermark and would send them again.
Before its first send, it looks for the first rows of each lane in Kafka, by the event id and
publish time headers every record carries (sidecar/kafka/find_sent.py), and treats those it
finds as delivered: they retire, and publishers waiting for Kafka learn where they are, as if
their delivery report had come.

A lane's unbroken run of found rows from its watermark settles at once. A found row behind one
that is not found waits in the lane's `settled` set: the lane skips it when it gets there and
retires it right after the rows before it (Lane.settle). That keeps the log's rule that a lane
retires only an unbroken prefix.

Only finds change anything, and a find is proof the record is in Kafka: a missed record (time
up, no read permission on the topic, an error) is sent again, which is a duplicate at worst.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from sidecar.forward.lanes import Lane
from sidecar.kafka.ports import FoundAt, SentBefore, SentEvent, SentFinder
from sidecar.model import DeliveredEvent, PendingEvent
from sidecar.wal.store import Statements

log = structlog.get_logger(__name__)

PAGE = 500
#: How much earlier than a row's publish time its record may be stamped and still be looked
#: for: both come from one wall clock (the record is stamped when it is sent, after the row was
#: logged), so this only covers a clock stepped back a little in between.
CLOCK_SLACK_MS = 1_000


@dataclass(slots=True)
class FoundInKafka:
    """One lane's rows found in Kafka."""

    #: The last row of the unbroken run of found rows from the lane's watermark (0: none).
    through: int = 0
    #: Found rows behind a row that was not found.
    later: set[int] = field(default_factory=set)
    delivered: list[DeliveredEvent] = field(default_factory=list)
    #: Those of `delivered` whose id a client chose (the log remembers them for dedupe).
    client_ids: list[DeliveredEvent] = field(default_factory=list)


class ResendCheck:
    """Looks for each lane's first `limit` unretired rows in Kafka, within `timeout_s` in all."""

    def __init__(
        self,
        finder: SentFinder,
        *,
        timeout_s: float,
        limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._finder = finder
        self._timeout_s = timeout_s
        self._limit = limit
        self._clock = clock

    def run(self, reader: Statements, lanes: Iterable[Lane]) -> dict[str, FoundInKafka]:
        """Per topic, its rows found in Kafka; raises what the finder raises."""
        rows = {lane.topic: self._unretired(reader, lane) for lane in lanes}
        wanted = {topic: _wanted(events) for topic, events in rows.items()}
        wanted = {topic: sent for topic, sent in wanted.items() if sent.events}
        if not wanted or self._timeout_s <= 0:
            return {}
        started = self._clock()
        places = self._finder.find(wanted, self._timeout_s)
        found = {topic: _found(rows[topic], places.get(topic, {})) for topic in wanted}
        log.info(
            "resend_check",
            checked=sum(len(sent.events) for sent in wanted.values()),
            found=sum(len(f.delivered) for f in found.values()),
            seconds=round(self._clock() - started, 3),
        )
        return found

    def _unretired(self, reader: Statements, lane: Lane) -> list[PendingEvent]:
        """The lane's first `limit` unretired rows, in order, without their payloads."""
        events: list[PendingEvent] = []
        after = lane.settled_to
        while len(events) < self._limit:
            page = reader.pending_for_topic(lane.topic, after, min(PAGE, self._limit - len(events)))
            if not page:
                break
            events += [e._replace(payload=None, key=None, headers=()) for e in page]
            after = page[-1].sequence
        return events


def _sent_event(event: PendingEvent) -> SentEvent:
    return event.event_id, str(event.publish_time_ms)


def _wanted(events: list[PendingEvent]) -> SentBefore:
    """What to look for: each row by its headers, except a row logged by an older release (no
    publish time) and rows that share their headers (a client id published twice with dedupe
    off): a record would not say which of them it is, so they are all sent again."""
    counts = Counter(_sent_event(e) for e in events if e.publish_time_ms > 0)
    unique = frozenset(event for event, n in counts.items() if n == 1)
    since = min((int(time_ms) for _, time_ms in unique), default=0)
    return SentBefore(since - CLOCK_SLACK_MS, unique)


def _found(events: list[PendingEvent], places: dict[SentEvent, FoundAt]) -> FoundInKafka:
    """`events` in order: an unbroken run of found ones from the first, then the others."""
    found = FoundInKafka()
    unbroken = True
    for event in events:
        place = places.get(_sent_event(event))
        if place is None:
            unbroken = False
            continue
        delivered = (event.event_id, place[0], place[1])
        found.delivered.append(delivered)
        if not event.assigned_id:
            found.client_ids.append(delivered)
        if unbroken:
            found.through = event.sequence
        else:
            found.later.add(event.sequence)
    return found
