"""Retirements waiting for the writer, handed out a bounded number of rows per commit.

The forwarder may report tens of thousands of deliveries at once (a drained
backlog). Retiring them in one transaction would hold up every publish behind
it, so the writer takes a slice of rows per commit and publishes never wait
for more than a slice. A request's future resolves once all its rows are
retired. Pure bookkeeping: no I/O, no threads.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sidecar.model import Delivered, Parked


@dataclass(slots=True)
class RetireRequest:
    """Rows Kafka acknowledged (or refused for good: parked); `done` of them are settled so far."""

    delivered: Sequence[Delivered | Parked]
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)
    done: int = 0


@dataclass(frozen=True, slots=True)
class RetireSlice:
    """The rows one commit retires, and how far each request will be once it committed."""

    rows: list[Delivered | Parked]
    reach: list[tuple[RetireRequest, int]]


class RetireBacklog:
    """Requests in arrival order; `rows` counts what is still to retire."""

    def __init__(self) -> None:
        self._requests: deque[RetireRequest] = deque()
        self.rows = 0

    def __bool__(self) -> bool:
        return bool(self._requests)

    def add(self, request: RetireRequest) -> None:
        self._requests.append(request)
        self.rows += len(request.delivered) - request.done

    def take(self, budget: int) -> RetireSlice:
        """The oldest rows, at most `budget` of them (whole requests where they fit)."""
        rows: list[Delivered | Parked] = []
        reach: list[tuple[RetireRequest, int]] = []
        for request in self._requests:
            room = budget - len(rows)
            if room <= 0:
                break
            end = min(len(request.delivered), request.done + room)
            rows.extend(request.delivered[request.done : end])
            reach.append((request, end))
        return RetireSlice(rows, reach)

    def committed(self, taken: RetireSlice) -> list[RetireRequest]:
        """Record that `taken` committed; return the requests now fully retired."""
        for request, end in taken.reach:
            self.rows -= end - request.done
            request.done = end
        finished: list[RetireRequest] = []
        while self._requests and self._requests[0].done >= len(self._requests[0].delivered):
            finished.append(self._requests.popleft())
        return finished

    def drop(self, taken: RetireSlice) -> list[RetireRequest]:
        """Give up on the requests in `taken` (their commit failed for good); return them."""
        dropped = [request for request, _ in taken.reach]
        for request in dropped:
            self.rows -= len(request.delivered) - request.done
        ids = {id(r) for r in dropped}
        self._requests = deque(r for r in self._requests if id(r) not in ids)
        return dropped
