"""The publish use case: validated events → write-ahead log → (optionally) wait for Kafka.

Plain async logic with no gRPC in it; the servicer translates messages and
status codes around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sidecar.errors import KafkaWaitTimeout, LogCommitTimeout, ShuttingDown
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
        self,
        events: Sequence[OutgoingEvent],
        level: AckLevel,
        kafka_wait_s: float,
        commit_wait_s: float | None = None,
    ) -> list[Outcome]:
        """Log `events`; with AckLevel.KAFKA also wait up to `kafka_wait_s` for Kafka.

        `commit_wait_s` bounds the wait for the log commit (the call's deadline): past it the
        answer is LogCommitTimeout with the events' ids, so that a retry with them creates no
        duplicate, whether or not the commit then happens.
        """
        if not self._accepting:
            raise ShuttingDown("Ferry is shutting down; publish to another instance or retry")
        self.in_progress += 1
        try:
            if level is AckLevel.DURABLE:
                return await self._append(events, commit_wait_s)
            return await self._publish_and_wait(events, kafka_wait_s, commit_wait_s)
        finally:
            self.in_progress -= 1

    async def _append(
        self, events: Sequence[OutgoingEvent], commit_wait_s: float | None
    ) -> list[Outcome]:
        committed = self._writer.submit(events)
        if commit_wait_s is None:
            return await committed
        # asyncio.wait on a future adds no task; the commit goes on without this caller.
        done, _ = await asyncio.wait({committed}, timeout=max(0.0, commit_wait_s))
        if not done:
            raise LogCommitTimeout(
                f"the call's deadline came before the log commit of {len(events)} events; they "
                "may or may not be logged: publish again with the same event ids",
                [e.event_id for e in events],
            )
        return committed.result()

    async def _publish_and_wait(
        self, events: Sequence[OutgoingEvent], kafka_wait_s: float, commit_wait_s: float | None
    ) -> list[Outcome]:
        ids = [e.event_id for e in events]
        futures = self._waiters.register(ids)
        try:
            outcomes = await self._append(events, commit_wait_s)
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
        return outcome._replace(position=future.result())
    return outcome
