"""Settlements waiting for the writer, handed out a bounded amount per commit.

The forwarder reports what Kafka answered as settlements (model.Settlement):
watermarks per topic, delivered client ids, parked events. The writer takes
whole settlements, up to a budget of rows per commit, so that a publish
never waits behind a large retirement; each settlement's future resolves
once it committed. Pure bookkeeping: no I/O, no threads.
"""

from __future__ import annotations

import concurrent.futures
from collections import deque
from dataclasses import dataclass, field

from sidecar.model import DeliveredEvent, Parked, Settlement


@dataclass(slots=True)
class RetireRequest:
    """One settlement and the future its sender may wait on."""

    settlement: Settlement
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True, slots=True)
class RetireSlice:
    """The settlements one commit records, merged."""

    requests: list[RetireRequest]
    settled_to: dict[str, int]
    delivered_ids: list[DeliveredEvent]
    parked: list[Parked]

    @property
    def empty(self) -> bool:
        return not self.requests


class RetireBacklog:
    """Requests in arrival order; `rows` counts what is still to record."""

    def __init__(self) -> None:
        self._requests: deque[RetireRequest] = deque()
        self.rows = 0

    def __bool__(self) -> bool:
        return bool(self._requests)

    def add(self, request: RetireRequest) -> None:
        self._requests.append(request)
        self.rows += request.settlement.cost

    def take(self, budget: int) -> RetireSlice:
        """The oldest whole settlements: at least one, more while within `budget` rows."""
        taken: list[RetireRequest] = []
        settled_to: dict[str, int] = {}
        delivered: list[DeliveredEvent] = []
        parked: list[Parked] = []
        cost = 0
        for request in self._requests:
            settlement = request.settlement
            if taken and cost + settlement.cost > budget:
                break
            taken.append(request)
            cost += settlement.cost
            for topic, seq in settlement.settled_to.items():
                if seq > settled_to.get(topic, 0):
                    settled_to[topic] = seq
            delivered.extend(settlement.delivered_ids)
            parked.extend(settlement.parked)
        return RetireSlice(taken, settled_to, delivered, parked)

    def committed(self, taken: RetireSlice) -> list[RetireRequest]:
        """Record that `taken` committed; return its requests, now done."""
        return self._remove(taken)

    def drop(self, taken: RetireSlice) -> list[RetireRequest]:
        """Give up on the requests in `taken` (their commit failed for good); return them."""
        return self._remove(taken)

    def _remove(self, taken: RetireSlice) -> list[RetireRequest]:
        ids = {id(r) for r in taken.requests}
        self._requests = deque(r for r in self._requests if id(r) not in ids)
        self.rows -= sum(r.settlement.cost for r in taken.requests)
        return taken.requests
