"""Publishers waiting for Kafka's acknowledgement (ACK_LEVEL_KAFKA), keyed by event id.

Waiters are registered before the append, so a delivery can never slip by
unseen. The forwarder reports every delivery; one hop per batch moves them
onto the event loop.
"""

from __future__ import annotations

import asyncio

from sidecar.model import DeliveredEvent, KafkaPosition


class KafkaAckWaiters:
    """Futures resolved with the Kafka position once an event id is delivered."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[str, list[asyncio.Future[KafkaPosition]]] = {}

    @property
    def waiting(self) -> int:
        """How many futures wait (a publish that ended leaves none behind)."""
        return sum(len(futures) for futures in self._waiting.values())

    def register(self, event_ids: list[str]) -> list[asyncio.Future[KafkaPosition]]:
        futures: list[asyncio.Future[KafkaPosition]] = []
        for event_id in event_ids:
            future: asyncio.Future[KafkaPosition] = self._loop.create_future()
            self._waiting.setdefault(event_id, []).append(future)
            futures.append(future)
        return futures

    def unregister(
        self, event_ids: list[str], futures: list[asyncio.Future[KafkaPosition]]
    ) -> None:
        for event_id, future in zip(event_ids, futures, strict=True):
            waiting = self._waiting.get(event_id)
            if waiting is None:
                continue
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                del self._waiting[event_id]

    def delivered(self, delivered: list[DeliveredEvent]) -> None:
        """Called from the thread that hears the forwarder's reports."""
        if not self._waiting:  # the common case: nobody asked for ACK_LEVEL_KAFKA
            return
        self._loop.call_soon_threadsafe(self._resolve, delivered)

    def _resolve(self, delivered: list[DeliveredEvent]) -> None:
        waiting = self._waiting
        for event_id, partition, offset in delivered:
            futures = waiting.pop(event_id, None)
            if futures is None:
                continue
            for future in futures:
                if not future.done():
                    future.set_result(KafkaPosition(partition, offset))
