"""The time source for deadlines, leases and delays.

This module owns one idea: "how many seconds have passed", read from a monotonic clock.
Leases and redelivery delays are measured on it on purpose: a wall-clock jump (NTP step,
operator fixing the date, VM resume) must neither expire every lease at once nor keep every
lease alive forever. A monotonic reading means nothing outside this process, so it must never be
stored, sent to a client or compared across restarts; convert to wall time at the API edge.

Domain code takes a `Clock` by injection and never calls `time` itself, so tests drive time with
`ManualClock` instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells monotonic time in seconds."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary fixed point; never decreases."""
        ...


class SystemClock:
    """The process's monotonic clock."""

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back (advance by {seconds})")
        self._now += seconds

    def set(self, t: float) -> None:
        """Jump to time `t`, which must not be earlier than now."""
        if t < self._now:
            raise ValueError(f"a monotonic clock cannot go back (from {self._now} to {t})")
        self._now = t
