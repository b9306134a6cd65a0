"""The publish use case: log, optionally wait for Kafka, refuse work while draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from sidecar.errors import (
    EventIdConflict,
    KafkaWaitTimeout,
    LogCommitTimeout,
    ShuttingDown,
    WalFull,
)
from sidecar.model import (
    Accepted,
    AckLevel,
    DeliveredEvent,
    KafkaPosition,
    OutgoingEvent,
    Rejected,
    Settlement,
)
from sidecar.publish.kafka_waiters import KafkaAckWaiters
from sidecar.publish.service import PublishService
from sidecar.wal.writer import WalLimits, WalWriter

LIMITS = WalLimits(max_rows=10, max_bytes=1 << 20, dedupe_window_s=3600.0)
NOW_S = 1_700_000_000.0
T = int(NOW_S * 1000)


def ev(event_id: str, payload: bytes = b"p", topic: str = "orders") -> OutgoingEvent:
    return OutgoingEvent(event_id, topic, None, payload, ())


class Delivered(NamedTuple):
    """A delivery as a test tells it: the event's log sequence and where Kafka stored it."""

    sequence: int
    event_id: str
    position: KafkaPosition

    def reported(self) -> DeliveredEvent:
        return (self.event_id, *self.position)


@dataclass
class Rig:
    writer: WalWriter
    waiters: KafkaAckWaiters
    publish: PublishService
    commits: list[dict[str, int]]
    #: called on the writer thread right after each commit, before the append is answered
    hooks: list[Callable[[dict[str, int]], None]]

    def deliver_from_another_thread(self, *delivered: Delivered) -> None:
        """As the forwarder thread does."""
        reported = [d.reported() for d in delivered]
        thread = threading.Thread(target=self.waiters.delivered, args=(reported,))
        thread.start()
        thread.join()

    async def retire(self, *delivered: Delivered, topic: str = "orders") -> None:
        """Settle `topic` up to the highest of `delivered`, as the forwarder reports it."""
        settlement = Settlement(
            {topic: max(d.sequence for d in delivered)},
            [d.reported() for d in delivered],
            [],
        )
        await asyncio.wrap_future(self.writer.retire(settlement))


@pytest.fixture
async def rig(data_dir: Path) -> AsyncIterator[Rig]:
    waiters = KafkaAckWaiters(asyncio.get_running_loop())
    commits: list[dict[str, int]] = []
    hooks: list[Callable[[dict[str, int]], None]] = []

    def on_commit(topics: dict[str, int]) -> None:
        commits.append(topics)
        for hook in hooks:
            hook(topics)

    writer = WalWriter(data_dir, LIMITS, on_commit=on_commit, wall_clock=lambda: NOW_S)
    yield Rig(writer, waiters, PublishService(writer, waiters), commits, hooks)
    await asyncio.to_thread(writer.close)


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for what another thread (the writer) does, however busy the machine is."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def waiting_count(waiters: KafkaAckWaiters) -> int:
    return waiters.waiting


async def test_durable_answers_once_logged(rig: Rig) -> None:
    outcomes = await rig.publish.publish([ev("a"), ev("b")], AckLevel.DURABLE, 0.01)
    assert outcomes == [Accepted("a", 1, False, T), Accepted("b", 2, False, T)]
    assert rig.writer.pending_rows == 2


async def test_shutting_down_after_stop_accepting(rig: Rig) -> None:
    rig.publish.stop_accepting()
    for level in AckLevel:
        with pytest.raises(ShuttingDown):
            await rig.publish.publish([ev("a")], level, 1.0)
    assert rig.writer.pending_rows == 0
    assert rig.commits == []


async def test_kafka_level_waits_for_the_delivery(rig: Rig) -> None:
    task = asyncio.create_task(rig.publish.publish([ev("a"), ev("b")], AckLevel.KAFKA, 5.0))
    await until(lambda: rig.writer.pending_rows == 2)  # logged (a busy machine takes a while)
    assert not task.done()  # logged, but Kafka has not answered
    rig.deliver_from_another_thread(Delivered(1, "a", KafkaPosition(3, 30)))
    await asyncio.sleep(0.02)
    assert not task.done()  # one of two is not enough
    rig.deliver_from_another_thread(Delivered(2, "b", KafkaPosition(1, 10)))
    outcomes = await asyncio.wait_for(task, 2)
    assert outcomes == [
        Accepted("a", 1, False, T, KafkaPosition(3, 30)),
        Accepted("b", 2, False, T, KafkaPosition(1, 10)),
    ]
    assert waiting_count(rig.waiters) == 0


async def test_kafka_wait_times_out_but_the_event_stays_logged(rig: Rig) -> None:
    with pytest.raises(KafkaWaitTimeout) as info:
        await rig.publish.publish([ev("a"), ev("b")], AckLevel.KAFKA, 0.05)
    message = str(info.value)
    assert "will still be delivered" in message
    assert "2 of 2" in message
    assert rig.writer.pending_rows == 2
    assert waiting_count(rig.waiters) == 0  # no leaked waiters


@pytest.mark.parametrize("level", [AckLevel.DURABLE, AckLevel.KAFKA])
async def test_a_commit_slower_than_the_deadline_answers_the_event_ids(
    rig: Rig, level: AckLevel
) -> None:
    committed = threading.Event()
    rig.hooks.append(lambda topics: time.sleep(0.3) or committed.set())
    with pytest.raises(LogCommitTimeout) as info:
        await rig.publish.publish([ev("a"), ev("b")], level, 5.0, commit_wait_s=0.05)
    assert info.value.event_ids == ["a", "b"]
    assert "publish again with the same event ids" in str(info.value)
    assert waiting_count(rig.waiters) == 0
    # The commit goes on without the caller; a retry with the ids is then a duplicate.
    assert await asyncio.to_thread(committed.wait, 5)
    again = await rig.publish.publish([ev("a"), ev("b")], AckLevel.DURABLE, 1.0)
    assert [accepted.duplicate for accepted in again] == [True, True]  # type: ignore[union-attr]
    assert rig.writer.pending_rows == 2


async def test_partial_delivery_still_times_out_naming_what_is_missing(rig: Rig) -> None:
    task = asyncio.create_task(rig.publish.publish([ev("a"), ev("b")], AckLevel.KAFKA, 0.2))
    await asyncio.sleep(0.02)
    rig.deliver_from_another_thread(Delivered(1, "a", KafkaPosition(0, 0)))
    with pytest.raises(KafkaWaitTimeout, match="1 of 2"):
        await task


async def test_a_delivery_right_after_commit_is_not_missed(rig: Rig) -> None:
    # The forwarder may report the delivery before publish() even resumes after the append:
    # the waiter must already be registered by then.
    rig.hooks.append(lambda topics: rig.waiters.delivered([("fast", 2, 9)]))
    outcomes = await rig.publish.publish([ev("fast")], AckLevel.KAFKA, 1.0)
    assert outcomes == [Accepted("fast", 1, False, T, KafkaPosition(2, 9))]


async def test_duplicate_already_delivered_returns_its_position_without_waiting(
    rig: Rig,
) -> None:
    await rig.publish.publish([ev("a")], AckLevel.DURABLE, 1.0)
    await rig.retire(Delivered(1, "a", KafkaPosition(4, 44)))
    # A wait this short would time out if publish() waited for anything.
    outcomes = await rig.publish.publish([ev("a")], AckLevel.KAFKA, 0.001)
    assert outcomes == [Accepted("a", 1, True, T, KafkaPosition(4, 44), delivered=True)]
    assert waiting_count(rig.waiters) == 0


async def test_mixed_batch_waits_only_for_what_is_not_delivered(rig: Rig) -> None:
    await rig.publish.publish([ev("old")], AckLevel.DURABLE, 1.0)
    await rig.retire(Delivered(1, "old", KafkaPosition(0, 1)))
    task = asyncio.create_task(rig.publish.publish([ev("old"), ev("new")], AckLevel.KAFKA, 5.0))
    await asyncio.sleep(0.05)
    assert not task.done()
    rig.deliver_from_another_thread(Delivered(2, "new", KafkaPosition(0, 2)))
    assert await asyncio.wait_for(task, 2) == [
        Accepted("old", 1, True, T, KafkaPosition(0, 1), delivered=True),
        Accepted("new", 2, False, T, KafkaPosition(0, 2)),
    ]


async def test_duplicate_still_pending_waits_for_the_delivery(rig: Rig) -> None:
    await rig.publish.publish([ev("a")], AckLevel.DURABLE, 1.0)
    task = asyncio.create_task(rig.publish.publish([ev("a")], AckLevel.KAFKA, 5.0))
    await asyncio.sleep(0.05)
    assert not task.done()
    rig.deliver_from_another_thread(Delivered(1, "a", KafkaPosition(0, 7)))
    assert await asyncio.wait_for(task, 2) == [Accepted("a", 1, True, T, KafkaPosition(0, 7))]


async def test_rejected_events_are_not_waited_for(rig: Rig) -> None:
    await rig.publish.publish([ev("a")], AckLevel.DURABLE, 1.0)
    [outcome] = await rig.publish.publish([ev("a", payload=b"other")], AckLevel.KAFKA, 0.001)
    assert isinstance(outcome, Rejected)
    assert isinstance(outcome.error, EventIdConflict)
    assert waiting_count(rig.waiters) == 0


async def test_wal_full_propagates_and_leaves_no_waiters(rig: Rig) -> None:
    with pytest.raises(WalFull):
        await rig.publish.publish([ev(f"e{i}") for i in range(11)], AckLevel.KAFKA, 1.0)
    assert waiting_count(rig.waiters) == 0
    assert rig.writer.pending_rows == 0


async def test_cancelled_wait_leaves_no_waiters(rig: Rig) -> None:
    task = asyncio.create_task(rig.publish.publish([ev("a")], AckLevel.KAFKA, 5.0))
    await asyncio.sleep(0.05)
    assert waiting_count(rig.waiters) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waiting_count(rig.waiters) == 0
    await until(lambda: rig.writer.pending_rows == 1)  # the event is logged all the same


async def test_submit_queues_for_the_log_in_call_order(rig: Rig) -> None:
    # A stream submits one request after another without awaiting: the log keeps that order
    # whatever order the answers are awaited in.
    answers = [rig.publish.submit([ev(f"e{i}")], AckLevel.DURABLE, 1.0) for i in range(5)]
    outcomes = [(await answer)[0] for answer in reversed(answers)]
    assert [o.event_id for o in outcomes] == ["e4", "e3", "e2", "e1", "e0"]
    assert [o.sequence for o in outcomes] == [5, 4, 3, 2, 1]  # type: ignore[union-attr]


async def test_draining_returns_once_accepting_stopped(rig: Rig) -> None:
    waiting = asyncio.create_task(rig.publish.draining())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    rig.publish.stop_accepting()
    await asyncio.wait_for(waiting, 1)
    with pytest.raises(ShuttingDown):
        rig.publish.submit([ev("a")], AckLevel.DURABLE, 1.0)
