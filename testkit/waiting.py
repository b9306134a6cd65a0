"""Polling for a condition: `wait_until` reports whether it came, `wait_for` fails when not."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` every `interval` s for up to `timeout` s; whether it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


def wait_for(
    predicate: Callable[[], object], timeout: float, interval: float = 0.1, what: str = ""
) -> float:
    """Poll `predicate` until it is true and return the seconds that took; an AssertionError
    naming `what` when it is still false after `timeout` s."""
    started = time.monotonic()
    if not wait_until(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
    return time.monotonic() - started
