"""Plain value types that travel between the API, the write-ahead log and the forwarder.

The ones made per event are NamedTuples: a frozen dataclass costs several times more to
build, and the publish and forward paths build a few of them for every event.

Also the source of the ids Ferry assigns to events (UUIDv7).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
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

    @property
    def size(self) -> int:
        """Bytes the event costs on the wire and against the log's cap."""
        size = len(self.payload or b"") + len(self.key or b"")
        if self.headers:
            size += sum(len(k.encode()) + len(v or b"") for k, v in self.headers)
        return size


class EventIds:
    """UUIDv7 strings: 48-bit Unix milliseconds, a 12-bit counter, 62 random bits per process.

    One random draw per process (and again after fork) instead of one per id, which was a
    syscall per event. Within a process, (millisecond, counter) never repeats and only grows:
    a counter that runs out moves the millisecond on by one, and a clock that steps back is
    ignored until it catches up. Across processes the random tail keeps ids apart.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._tail = ""
        self.reseed()

    def reseed(self) -> None:
        # RFC 9562 variant bits (0b10) above 62 random bits.
        tail = f"{int.from_bytes(os.urandom(8), 'big') >> 2 | 2 << 62:016x}"
        self._tail = f"{tail[:4]}-{tail[4:]}"

    def next(self) -> str:
        ms = self._clock_ns() // 1_000_000
        with self._lock:
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, 0
            elif self._counter < 0xFFF:
                self._counter += 1
            else:
                self._last_ms, self._counter = self._last_ms + 1, 0
            ms, counter = self._last_ms, self._counter
        stamp = f"{ms:012x}"
        return f"{stamp[:8]}-{stamp[8:]}-7{counter:03x}-{self._tail}"


_ids = EventIds()
os.register_at_fork(after_in_child=_ids.reseed)  # a forked child must not repeat the parent's ids
new_event_id = _ids.next


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


class Delivered(NamedTuple):
    """Kafka acknowledged a logged event."""

    sequence: int
    event_id: str
    position: KafkaPosition


class Parked(NamedTuple):
    """Kafka refused a logged event for good (too large for its topic, not authorised): it
    leaves the forwarder's way and waits in the log until an operator releases or drops it."""

    sequence: int
    event_id: str
    reason: str
