"""Capped exponential backoff with jitter, and the retry bookkeeping of one logical call."""

from __future__ import annotations

import logging
import random
import time

import grpc

from ferry_client.errors import FerryError

log = logging.getLogger("ferry_client")


class Backoff:
    """Delays of `initial` doubling up to `maximum`, each drawn from [ceiling/2, ceiling]."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial, self.maximum = initial, maximum
        self._failures = 0

    def next(self, at_least: float | None = None) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self._failures, 32))
        self._failures += 1
        return max(random.uniform(ceiling / 2, ceiling), at_least or 0.0)

    def reset(self) -> None:
        self._failures = 0


class Attempts:
    """One call's retries: an overall deadline, a timeout per attempt, a backoff."""

    def __init__(self, deadline: float, attempt_timeout: float) -> None:
        self._end = time.monotonic() + deadline
        self._attempt_timeout = attempt_timeout
        self._backoff = Backoff()
        self.count = 0

    def timeout(self) -> float:
        """The timeout of the next attempt: the per-attempt one, cut to the time left."""
        self.count += 1
        return max(0.001, min(self._attempt_timeout, self._end - time.monotonic()))

    def wait_after(self, rpc_error: grpc.RpcError, caller_cancelled: bool) -> float:
        """Seconds to wait before the next attempt; raises FerryError when there is none."""
        error = FerryError.from_rpc_error(rpc_error)
        if caller_cancelled or not error.retryable:
            raise error from rpc_error
        delay = self._backoff.next(error.retry_delay)  # RetryInfo is a floor, never shortened
        if time.monotonic() + delay >= self._end:
            error.add_note(f"gave up after {self.count} attempts: the call's deadline passed")
            raise error from rpc_error
        log.info("attempt %d failed (%s); retrying in %.2fs", self.count, error, delay)
        return delay
