"""The consumer thread's way to the event loop, where the subscription lives.

`post` hands values over in order, without waiting; `ask` runs a coroutine on the loop and
blocks for its result (the revoke callback must have the offsets to commit before it returns).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

# Every log line of a subscription's consumer carries one logger name, whichever part logs it.
log = structlog.get_logger("sidecar.kafka.consumer")

T = TypeVar("T")


class LoopHandoff:
    """Hands work from one consumer thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, group: str) -> None:
        self._loop = loop
        self._group = group
        # What the thread hands to the loop, in order. One wake-up of the loop drains all of it:
        # a wake-up per consumed batch (a pipe write each) cost more than the batch's records.
        self._outbox: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        self._drain_scheduled = False

    def post(self, handler: Callable[[Any], None], value: Any) -> None:
        """Run `handler(value)` on the loop, after everything posted before."""
        self._outbox.append((handler, value))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def ask(self, work: Awaitable[T], timeout_s: float) -> T:
        """`work`'s result, awaited on the loop; raises if the loop is gone or `timeout_s`
        passes. Blocks: call off-loop."""
        return asyncio.run_coroutine_threadsafe(_await(work), self._loop).result(timeout_s)

    def _drain(self) -> None:
        # Cleared before draining: an item posted meanwhile is drained here or schedules anew.
        self._drain_scheduled = False
        outbox = self._outbox
        while outbox:
            handler, value = outbox.popleft()
            try:
                handler(value)
            except Exception:  # one failed hand-off must not hold back the ones behind it
                log.exception("consumer_handoff_failed", group=self._group)


async def _await(work: Awaitable[T]) -> T:
    return await work
