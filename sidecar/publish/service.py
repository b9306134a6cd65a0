"""The publish use case: validated events → write-ahead log → (optionally) wait for Kafka.

Plain async logic with no gRPC in it; the servicer translates messages and
status codes around it. Events are queued for the log synchronously, in the
order `submit` is called: a stream's requests are logged in arrival order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from sidecar.errors import KafkaWaitTimeout, LogCommitTimeout, ShuttingDown
from sidecar.model import Accepted, AckLevel, KafkaPosition, Outcome, OutgoingEvent
from sidecar.publish.kafka_waiters import KafkaAckWaiters
from sidecar.wal.writer import WalWriter

Answer = Coroutine[Any, Any, list[Outcome]]


class PublishService:
    """Accepts events while open; refuses new ones once draining starts."""

    def __init__(self, writer: WalWriter, waiters: KafkaAckWaiters) -> None:
        self._writer = writer
        self._waiters = waiters
        self._draining = asyncio.Event()

    def stop_accepting(self) -> None:
        self._draining.set()

    @property
    def is_draining(self) -> bool:
        return self._draining.is_set()

    async def draining(self) -> None:
        """Returns once draining started: open publish streams stop reading then."""
        await self._draining.wait()

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
        return await self.submit(events, level, kafka_wait_s, commit_wait_s)

    def submit(
        self,
        events: Sequence[OutgoingEvent],
        level: AckLevel,
        kafka_wait_s: float,
        commit_wait_s: float | None = None,
    ) -> Answer:
        """Queue `events` for the log now; the coroutine returned answers as `publish` does.

        The caller must await the coroutine: it also releases the Kafka waiters.
        """
        if self._draining.is_set():
            raise ShuttingDown("Ferry is shutting down; publish to another instance or retry")
        if level is AckLevel.DURABLE:
            return _committed(self._writer.submit(events), events, commit_wait_s)
        ids = [e.event_id for e in events]
        # Registered before the append, so that a delivery can never slip by unseen.
        futures = self._waiters.register(ids)
        try:
            committed = self._writer.submit(events)
        except BaseException:
            self._waiters.unregister(ids, futures)
            raise
        return self._delivered(committed, events, futures, kafka_wait_s, commit_wait_s)

    async def _delivered(
        self,
        committed: asyncio.Future[list[Outcome]],
        events: Sequence[OutgoingEvent],
        futures: list[asyncio.Future[KafkaPosition]],
        kafka_wait_s: float,
        commit_wait_s: float | None,
    ) -> list[Outcome]:
        ids = [e.event_id for e in events]
        try:
            outcomes = await _committed(committed, events, commit_wait_s)
            waiting = [
                f
                for f, o in zip(futures, outcomes, strict=True)
                # Delivered without a known position: an id Ferry assigned, sent back after its
                # slice retired (the log keeps no per-event position for those).
                if isinstance(o, Accepted) and o.position is None and not o.delivered
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


async def _committed(
    committed: asyncio.Future[list[Outcome]],
    events: Sequence[OutgoingEvent],
    commit_wait_s: float | None,
) -> list[Outcome]:
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


def _with_position(outcome: Outcome, future: asyncio.Future[KafkaPosition]) -> Outcome:
    if isinstance(outcome, Accepted) and outcome.position is None and future.done():
        return outcome._replace(position=future.result())
    return outcome
