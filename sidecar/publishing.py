"""The publish use case: validated events → write-ahead log → (optionally) wait for Kafka.

Plain async logic with no gRPC in it; the servicer translates messages and
status codes around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sidecar.errors import KafkaWaitTimeout, ShuttingDown
from sidecar.forward.waiters import DeliveryWaiters
from sidecar.model import Accepted, AckLevel, KafkaPosition, Outcome, OutgoingEvent
from sidecar.wal.writer import WalWriter


class Publishing:
    """Accepts events while open; refuses new ones once draining starts."""

    def __init__(self, writer: WalWriter, waiters: DeliveryWaiters) -> None:
        self._writer = writer
        self._waiters = waiters
        self._accepting = True
        self.in_progress = 0

    def stop_accepting(self) -> None:
        self._accepting = False

    async def publish(
        self, events: Sequence[OutgoingEvent], level: AckLevel, kafka_wait_s: float
    ) -> list[Outcome]:
        """Log `events`; with AckLevel.KAFKA also wait up to `kafka_wait_s` for Kafka."""
        if not self._accepting:
            raise ShuttingDown("Ferry is shutting down; publish to another instance or retry")
        self.in_progress += 1
        try:
            if level is AckLevel.DURABLE:
                return await self._writer.append(events)
            return await self._publish_and_wait(events, kafka_wait_s)
        finally:
            self.in_progress -= 1

    async def _publish_and_wait(
        self, events: Sequence[OutgoingEvent], kafka_wait_s: float
    ) -> list[Outcome]:
        ids = [e.event_id for e in events]
        futures = self._waiters.register(ids)
        try:
            outcomes = await self._writer.append(events)
            waiting = [
                f
                for f, o in zip(futures, outcomes, strict=True)
                if isinstance(o, Accepted) and o.position is None
            ]
            if waiting:
                _, not_done = await asyncio.wait(waiting, timeout=kafka_wait_s)
                if not_done:
                    raise KafkaWaitTimeout(
                        f"{len(not_done)} of {len(events)} events are durably logged but Kafka "
                        f"has not acknowledged them within {kafka_wait_s:.1f}s; they stay queued "
                        "and will still be delivered",
                        ids,
                    )
            return [_with_position(o, f) for o, f in zip(outcomes, futures, strict=True)]
        finally:
            self._waiters.unregister(ids, futures)


def _with_position(outcome: Outcome, future: asyncio.Future[KafkaPosition]) -> Outcome:
    if isinstance(outcome, Accepted) and outcome.position is None and future.done():
        return Accepted(outcome.event_id, outcome.sequence, outcome.duplicate, future.result())
    return outcome
