"""The rebalance callbacks of a subscription's consumer, and its commits.

The callbacks decide nothing: assignments go to the `ConsumerSink` on the event loop, and on
revoke the sink is asked, and waited for, the offsets to commit before the partitions are let
go. Only offsets the subscription hands over are committed. Runs on the consumer thread, inside
consume() (or close()), like every confluent-kafka callback.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Awaitable, Callable, Sequence

import structlog
from confluent_kafka import Consumer, TopicPartition

from sidecar.kafka.consumer_handoff import LoopHandoff
from sidecar.kafka.consumer_hold import FetchHold
from sidecar.kafka.ports import AssignedPartition, CommitOffset, ConsumerSink, TopicPartitionKey
from sidecar.kafka.watchdog import ConsumerWatchdog

# Every log line of a subscription's consumer carries one logger name, whichever part logs it.
log = structlog.get_logger("sidecar.kafka.consumer")

REVOKE_TIMEOUT_S = 15.0

#: Work for the consumer thread, run between polls with the Consumer it owns.
ConsumerCommand = Callable[[Consumer], None]


class RebalanceHandler:
    """Which partitions the consumer owns, kept by its rebalance callbacks."""

    def __init__(
        self,
        group: str,
        sink: ConsumerSink,
        handoff: LoopHandoff,
        commands: queue.SimpleQueue[ConsumerCommand],
        hold: FetchHold,
        watchdog: ConsumerWatchdog,
    ) -> None:
        self._group = group
        self._sink = sink
        self._handoff = handoff
        self._commands = commands
        self._hold = hold
        self._watchdog = watchdog
        self.owned: set[TopicPartitionKey] = set()

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed: list[TopicPartition] = partitions
        with contextlib.suppress(Exception):  # unknown committed offsets: start from reset policy
            committed = consumer.committed(partitions, timeout=10)
        assigned = [
            AssignedPartition(
                tp.topic,
                tp.partition,
                tp.offset if tp.offset >= 0 else None,
                getattr(tp, "metadata", None) or "",
            )
            for tp in committed
        ]
        keys = [(a.topic, a.partition) for a in assigned]
        self.owned.update(keys)
        # After the callback: confluent-kafka assigns the partitions once it returns.
        self._commands.put(lambda c: self._hold.settle_assigned(c, keys, self.owned))
        self._watchdog.rebalanced(len(self.owned))
        log.info(
            "partitions_assigned",
            group=self._group,
            partitions=[(a.topic, a.partition) for a in assigned],
        )
        self._handoff.post(self._sink.on_assigned, assigned)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition], lost: bool) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.owned.difference_update(keys)
        self._watchdog.rebalanced(len(self.owned))
        log.info("partitions_revoked", group=self._group, partitions=keys, lost=lost)
        offsets = self._ask_loop(self._sink.on_revoked(keys, lost))
        if offsets and not lost:
            try:
                commit(consumer, offsets, asynchronous=False)
            except Exception as exc:  # the next owner redelivers from the older commit
                log.warning("revoke_commit_failed", error=str(exc))

    def drop_owned_as_lost(self, consumer: Consumer) -> None:
        """Revoke, as lost, what a consumer abandoned in its close still owned."""
        if self.owned:
            self.on_revoke(consumer, [TopicPartition(t, p) for t, p in self.owned], lost=True)

    def _ask_loop(self, work: Awaitable[list[CommitOffset]]) -> list[CommitOffset]:
        try:
            return self._handoff.ask(work, REVOKE_TIMEOUT_S)
        except Exception as exc:  # the loop is gone (process exit): commit nothing new
            log.warning("revoke_without_loop", error=str(exc))
            return []


def commit(consumer: Consumer, offsets: Sequence[CommitOffset], *, asynchronous: bool) -> None:
    partitions = [TopicPartition(o.topic, o.partition, o.offset, o.metadata) for o in offsets]
    if asynchronous:
        consumer.commit(offsets=partitions, asynchronous=True)
    else:
        consumer.commit(offsets=partitions, asynchronous=False)
