"""The ids Ferry assigns to events: UUIDv7 strings, handed out in blocks.

An id is 48-bit Unix milliseconds, a 12-bit counter and a 62-bit random tail
drawn once per process (and again after fork). Milliseconds and counter read
together as one 60-bit *stamp*; within a process stamps never repeat and only
grow: a counter that runs out carries into the millisecond (stamp + 1), and a
clock that steps back is ignored until it catches up. A request's ids come as
one block of consecutive stamps, so the log can store a block as (first stamp,
tail) instead of one id per event. Across processes the random tail keeps ids
apart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

COUNTER_BITS = 12
COUNTER_MASK = (1 << COUNTER_BITS) - 1
_HEX1 = [f"{n:x}" for n in range(16)]
_HEX2 = [f"{n:02x}" for n in range(256)]


class IdBlock(NamedTuple):
    """`size` ids with consecutive stamps from `first`, all with the same tail."""

    first: int
    size: int
    tail: str

    def ids(self) -> list[str]:
        """`format_id` of each stamp, in order. The ids of one millisecond share all but their
        counter, so that part is formatted once per millisecond, and the counter's three hex
        digits come from two small tables (formatting a number per id costs more than the rest
        of the id)."""
        ids: list[str] = []
        stamp, end, tail = self.first, self.first + self.size, self.tail
        while stamp < end:
            ms = stamp >> COUNTER_BITS
            upto = min(end, (ms + 1) << COUNTER_BITS)  # the stamps of this millisecond
            hex_ms = f"{ms:012x}"
            head = f"{hex_ms[:8]}-{hex_ms[8:]}-7"
            ids += [
                f"{head}{_HEX1[counter >> 8]}{_HEX2[counter & 0xFF]}-{tail}"
                for counter in range(stamp & COUNTER_MASK, ((upto - 1) & COUNTER_MASK) + 1)
            ]
            stamp = upto
        return ids


class EventIds:
    """Hands out blocks of ids; thread-safe."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._last = -1  # the highest stamp handed out
        self._tail = ""
        self.reseed()

    def reseed(self) -> None:
        # RFC 9562 variant bits (0b10) above 62 random bits.
        tail = f"{int.from_bytes(os.urandom(8), 'big') >> 2 | 2 << 62:016x}"
        self._tail = f"{tail[:4]}-{tail[4:]}"

    def block(self, count: int) -> IdBlock:
        """`count` fresh ids (count >= 1)."""
        now = (self._clock_ns() // 1_000_000) << COUNTER_BITS
        with self._lock:
            first = max(now, self._last + 1)
            self._last = first + count - 1
        return IdBlock(first, count, self._tail)

    def next(self) -> str:
        return self.block(1).ids()[0]


def format_id(stamp: int, tail: str) -> str:
    ms = f"{stamp >> COUNTER_BITS:012x}"
    return f"{ms[:8]}-{ms[8:]}-7{stamp & COUNTER_MASK:03x}-{tail}"


def parse_id(event_id: str) -> tuple[int, str] | None:
    """(stamp, tail) of an id in Ferry's format; None for any other string."""
    if len(event_id) != 36 or event_id[14] != "7":
        return None
    try:
        stamp = int(event_id[0:8] + event_id[9:13], 16) << COUNTER_BITS | int(event_id[15:18], 16)
    except ValueError:
        return None
    tail = event_id[19:]
    if format_id(stamp, tail) != event_id:
        return None
    return stamp, tail


_ids = EventIds()
os.register_at_fork(after_in_child=_ids.reseed)  # a forked child must not repeat the parent's ids
new_id_block = _ids.block
