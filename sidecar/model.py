"""Plain value types that travel between the API, the write-ahead log and the forwarder.

The ones made per event are NamedTuples: a frozen dataclass costs several times more to
build, and the publish and forward paths build a few of them for every event.

"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

#: Headers Ferry adds to every record it produces: the event's id, and the Unix milliseconds of
#: the commit that logged it (ASCII digits). Subscribers see them as fields, not as headers.
EVENT_ID_HEADER = "ferry-event-id"
PUBLISH_TIME_HEADER = "ferry-publish-time"

#: Kafka record headers as Kafka holds them: in order, keys may repeat, values raw or null.
Headers = tuple[tuple[str, bytes | None], ...]


class AckLevel(Enum):
    """When a publish is answered."""

    DURABLE = 1
    KAFKA = 2


class OutgoingEvent(NamedTuple):
    """A validated event on its way into the log; `event_id` is always set."""

    event_id: str
    topic: str
    key: bytes | None  # None: a null key, distinct from an empty one
    payload: bytes | None  # None: a null value (a tombstone), distinct from an empty one
    headers: Headers
    #: True when Ferry made the id up: it cannot collide, so dedupe look-ups are skipped.
    assigned_id: bool = False
    #: The event as its client encoded it (a ferry.v1.Event without an assigned id), which
    #: the log stores as it is; empty when the event did not come over the wire.
    encoded: bytes = b""

    @property
    def size(self) -> int:
        """Bytes the event costs on the wire and against the log's cap."""
        size = len(self.payload or b"") + len(self.key or b"")
        if self.headers:
            size += sum(len(k.encode()) + len(v or b"") for k, v in self.headers)
        return size


class KafkaPosition(NamedTuple):
    """Where Kafka stored a record."""

    partition: int
    offset: int


class Accepted(NamedTuple):
    """An event the log holds (or held, if already delivered)."""

    event_id: str
    sequence: int
    duplicate: bool
    #: Unix milliseconds of the commit that logged it; 0 when unknown (logged by an older release).
    publish_time_ms: int
    position: KafkaPosition | None = None
    #: Kafka acknowledged it already (its position may be unknown: ids in blocks keep none).
    delivered: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event of a batch that was not written, and why."""

    error: Exception


Outcome = Accepted | Rejected


class PendingEvent(NamedTuple):
    """A logged event the forwarder still has to get acknowledged by Kafka."""

    sequence: int
    event_id: str
    topic: str
    key: bytes | None
    payload: bytes | None
    headers: Headers
    publish_time_ms: int  # 0: unknown (logged by an older release)
    #: Ferry made the id up (the log remembers it in a block, not by itself).
    assigned_id: bool = False


#: An event Kafka acknowledged, as the forwarder reports it: (event id, partition, offset).
#: A plain tuple, because the forwarder process sends them in bulk and a tuple of a str and two
#: ints pickles in a tenth of the time a NamedTuple takes.
DeliveredEvent = tuple[str, int, int]


class Parked(NamedTuple):
    """Kafka refused a logged event for good (too large for its topic, not authorised): it
    leaves the forwarder's way and waits in the log until an operator releases or drops it."""

    event: PendingEvent
    reason: str


@dataclass(slots=True)
class Settlement:
    """What the forwarder tells the log once Kafka answered: the log retires by range."""

    #: Per topic: every event of the topic up to this sequence was delivered or parked.
    settled_to: dict[str, int]
    #: Client-supplied ids Kafka acknowledged, with where it stored them (for dedupe answers).
    delivered_ids: list[DeliveredEvent]
    #: Events Kafka refused for good, to keep aside in the log.
    parked: list[Parked]

    @property
    def cost(self) -> int:
        """Rows the log writes to record it."""
        return len(self.settled_to) + len(self.delivered_ids) + len(self.parked)
