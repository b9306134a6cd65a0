"""Rate limit for log lines that repeat: one line per distinct condition per interval.

A *condition* is any hashable key the caller builds (sidecar/observability/kafka_logs.py
and sidecar/observability/stderr.py say what theirs are). The first line of a condition
goes out; identical ones within `interval_s` after it are counted and dropped; the first
one after the interval goes out again, carrying how many were dropped (`repeated=N`).
A condition that stops repeating leaves nothing pending: its last dropped count is
reported only if it comes back.

`volatile_to_n` is the usual building block of a condition: numbers that change from one
report of the same failure to the next (durations, counts) become `N` ("after 12ms" reads
"after Nms"), while numbers that name something (addresses, ports, versions, client ids)
stay.

Thread-safe (librdkafka lines arrive on the forwarder's and each consumer's thread), and
bounded: past `max_conditions` the condition let through longest ago is forgotten.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Hashable
from dataclasses import dataclass

from sidecar.clock import Clock, SystemClock

#: How long identical lines stay suppressed after one went out.
REPEAT_INTERVAL_S = 30.0
MAX_CONDITIONS = 1000

# A number standing alone, with an optional unit: "after 12ms", "3 request(s)", "1/1 brokers".
# Digits joined to letters, dots, colons, '#' or '-' are part of a name and stay:
# "127.0.0.1:9092", "ipv4#10.0.0.1", "consumer-3", "v11".
_VOLATILE_NUMBER = re.compile(r"(?<![\w.:#-])\d+(?:\.\d+)?(?P<unit>ms|us|s)?(?![\w.:#-])")


def volatile_to_n(text: str) -> str:
    """`text` with its standalone numbers (and durations) replaced by N."""
    return _VOLATILE_NUMBER.sub(r"N\g<unit>", text)


@dataclass(slots=True)
class _Seen:
    since: float  # when the condition's last line went out
    dropped: int = 0  # lines dropped since


class RepeatLimiter:
    """Lets the first line of a condition through, then at most one per `interval_s`."""

    def __init__(
        self,
        interval_s: float = REPEAT_INTERVAL_S,
        clock: Clock | None = None,
        max_conditions: int = MAX_CONDITIONS,
    ) -> None:
        if interval_s < 0 or max_conditions < 1:
            raise ValueError("interval_s must be >= 0 and max_conditions >= 1")
        self._interval_s = interval_s
        self._clock = clock or SystemClock()
        self._max = max_conditions
        # Ordered by when each condition's last line went out, oldest first.
        self._seen: dict[Hashable, _Seen] = {}
        self._lock = threading.Lock()

    def admit(self, condition: Hashable) -> int | None:
        """None: drop this line. Otherwise log it; the int is how many were dropped before it."""
        now = self._clock.monotonic()
        with self._lock:
            seen = self._seen.get(condition)
            if seen is not None and now - seen.since < self._interval_s:
                seen.dropped += 1
                return None
            dropped = seen.dropped if seen is not None else 0
            self._seen.pop(condition, None)
            if len(self._seen) >= self._max:
                del self._seen[next(iter(self._seen))]
            self._seen[condition] = _Seen(now)
            return dropped
