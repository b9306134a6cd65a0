"""The consumer thread's holds: no records while young, a pause once old, resumes (no Kafka)."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from sidecar.kafka.consumer import ConsumerThread, consumer_config
from sidecar.kafka.consumer_hold import HOLD_BEFORE_PAUSE_S
from tests.unit.test_consumer_handoff import RecordingSink


class RecordingConsumer:
    """Stands in for confluent-kafka's Consumer: remembers pauses and resumes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("pause", sorted((p.topic, p.partition) for p in partitions)))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", sorted((p.topic, p.partition) for p in partitions)))


def make_thread() -> ConsumerThread:
    loop = asyncio.get_running_loop()
    thread = ConsumerThread(
        consumer_config("127.0.0.1:1", "g", False, {}), ["t"], loop, RecordingSink()
    )
    thread._rebalance.owned.update({("t", 0), ("t", 1)})
    return thread


def run_commands(thread: ConsumerThread, consumer: Any) -> None:
    thread._run_commands(consumer)


def consuming(thread: ConsumerThread, consumer: Any) -> bool:
    return thread._hold.consuming(consumer, thread._rebalance.owned)


def settle_assigned(
    thread: ConsumerThread, consumer: Any, partitions: list[tuple[str, int]]
) -> None:
    thread._hold.settle_assigned(consumer, partitions, thread._rebalance.owned)


async def test_a_young_hold_takes_nothing_and_keeps_the_prefetch() -> None:
    thread, consumer = make_thread(), RecordingConsumer()
    assert consuming(thread, consumer)
    thread.hold_records(True)
    run_commands(thread, consumer)
    assert not consuming(thread, consumer)
    thread.hold_records(False)
    run_commands(thread, consumer)
    assert consuming(thread, consumer)
    assert consumer.calls == []  # never paused: librdkafka's prefetch stays


async def test_an_old_hold_pauses_the_partitions_and_taking_again_resumes_them() -> None:
    thread, consumer = make_thread(), RecordingConsumer()
    thread.hold_records(True)
    run_commands(thread, consumer)
    thread._hold._held_since -= HOLD_BEFORE_PAUSE_S  # the hold has lasted
    assert consuming(thread, consumer)  # consumes again, to serve callbacks
    assert consumer.calls == [("pause", [("t", 0), ("t", 1)])]
    assert consuming(thread, consumer)
    assert len(consumer.calls) == 1  # paused once
    thread.hold_records(False)
    run_commands(thread, consumer)
    assert consumer.calls[1:] == [("resume", [("t", 0), ("t", 1)])]


async def test_partitions_assigned_while_paused_are_paused_and_otherwise_resumed() -> None:
    thread, consumer = make_thread(), RecordingConsumer()
    settle_assigned(thread, consumer, [("t", 1)])
    assert consumer.calls == [("resume", [("t", 1)])]  # librdkafka may keep it paused
    thread.hold_records(True)
    run_commands(thread, consumer)
    thread._hold._held_since -= HOLD_BEFORE_PAUSE_S
    consuming(thread, consumer)
    thread._rebalance.owned.add(("t", 2))
    settle_assigned(thread, consumer, [("t", 2), ("t", 3)])  # t/3 was revoked meanwhile
    assert consumer.calls[-1] == ("pause", [("t", 2)])


async def test_a_waiting_thread_wakes_for_a_command() -> None:
    thread, consumer = make_thread(), RecordingConsumer()
    thread.hold_records(True)
    thread._run_commands(consumer, wait_s=30.0)  # returns at once: a command was queued
    assert thread._hold.holding


class ErrorMessage:
    """A consume() result that carries an error instead of a record."""

    def __init__(self, code: int) -> None:
        self._error = KafkaError(code)

    def error(self) -> KafkaError:
        return self._error


async def test_a_failed_committed_offset_fetch_reaches_the_watchdog_and_other_errors_do_not() -> (
    None
):
    thread = make_thread()
    thread._watchdog.rebalanced(2)
    thread._consume_errors(
        [ErrorMessage(KafkaError._PARTITION_EOF), ErrorMessage(KafkaError._TRANSPORT)]
    )
    assert thread._watchdog._offsets_unfetched_at is None
    thread._consume_errors([ErrorMessage(KafkaError.NOT_COORDINATOR)])
    assert thread._watchdog._offsets_unfetched_at is not None
