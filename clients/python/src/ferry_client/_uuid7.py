"""UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then a counter, then random bits.

Ids made by one process are strictly increasing: within one millisecond the 12-bit
`rand_a` field counts up from a random start (method 1 of RFC 9562, section 6.2).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A new, time-ordered UUID version 7."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(2)) & 0x7FF  # room to count up
        elif _counter < 0xFFF:
            _counter += 1
        else:  # 4096 ids in one millisecond: borrow the next one
            _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & (1 << 62) - 1
    value = (ms & (1 << 48) - 1) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
