"""Plain value types that travel between the API, the write-ahead log and the forwarder."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Headers = tuple[tuple[str, str], ...]


class AckLevel(Enum):
    """When a publish is answered."""

    DURABLE = 1
    KAFKA = 2


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """A validated event on its way into the log; `event_id` is always set."""

    event_id: str
    topic: str
    key: bytes | None
    payload: bytes
    headers: Headers
    #: True when Ferry made the id up: it cannot collide, so dedupe look-ups are skipped.
    assigned_id: bool = False

    @property
    def size(self) -> int:
        """Bytes the event costs on the wire and against the log's cap."""
        header_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in self.headers)
        return len(self.payload) + len(self.key or b"") + header_bytes


@dataclass(frozen=True, slots=True)
class KafkaPosition:
    """Where Kafka stored a record."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event the log holds (or held, if already delivered)."""

    event_id: str
    sequence: int
    duplicate: bool
    position: KafkaPosition | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event of a batch that was not written, and why."""

    error: Exception


Outcome = Accepted | Rejected


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A logged event the forwarder still has to get acknowledged by Kafka."""

    sequence: int
    event_id: str
    topic: str
    key: bytes | None
    payload: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class Delivered:
    """Kafka acknowledged a logged event."""

    sequence: int
    event_id: str
    position: KafkaPosition
