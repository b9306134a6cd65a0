"""One Kafka consumer on its own thread, for one subscription (one consumer group).

The thread owns the confluent-kafka Consumer: it polls, serves the rebalance callbacks
(`consumer_rebalance`) and carries out the commands (commit, hold) that the subscription
posts. It decides nothing: records and assignments go to a `ConsumerSink` on the event loop
(`consumer_handoff`), and on revoke it asks the sink, and waits for, the offsets to commit
before letting the partitions go. Auto-commit and auto offset store are off
(`consumer_config`): only offsets the subscription hands over are committed. While the
subscription holds all it may, the thread takes no records (`consumer_hold`).

It also feeds a `ConsumerWatchdog` and, when the watchdog finds the consumer
stuck outside its group (librdkafka issue #2944), replaces it: queued commits
run first, closing revokes whatever the consumer still owns exactly like a
rebalance (the acked prefix is committed, leases are dropped and redelivered),
then a new consumer joins the same group.

`ConsumerThread` and `consumer_config` are what the app builds a subscription's consumer from.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import Consumer

from sidecar import failpoints
from sidecar.clock import SystemClock
from sidecar.kafka.consumer_config import consumer_config
from sidecar.kafka.consumer_handoff import LoopHandoff
from sidecar.kafka.consumer_hold import FetchHold
from sidecar.kafka.consumer_messages import report_errors, to_record
from sidecar.kafka.consumer_rebalance import ConsumerCommand, RebalanceHandler, commit
from sidecar.kafka.lag import committed_lag
from sidecar.kafka.ports import CommitOffset, ConsumerSink
from sidecar.kafka.watchdog import ConsumerWatchdog
from sidecar.lifecycle import supervised
from sidecar.observability.kafka_logs import KafkaClientLog

__all__ = ["ConsumerThread", "consumer_config"]

log = structlog.get_logger(__name__)

BATCH = 500
POLL_S = 0.05
# A consumer owning nothing and showing no life for this many session timeouts is replaced;
# the limit doubles with each replacement in a row, up to the cap.
STALL_SESSIONS = 3
MAX_STALL_S = 600.0
WATCHDOG_EVERY_S = 1.0
CLOSE_TIMEOUT_S = 30.0
REPLACED_CLOSE_WAIT_S = 2.0


class ConsumerThread:
    """Polls Kafka for one subscription and executes its commands between polls."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        loop: asyncio.AbstractEventLoop,
        sink: ConsumerSink,
    ) -> None:
        self._config = config
        self._group = str(config["group.id"])
        self._topics = list(topics)
        self._sink = sink
        self._commands: queue.SimpleQueue[ConsumerCommand] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._wanted = False
        stall_s = STALL_SESSIONS * int(config.get("session.timeout.ms", 10_000)) / 1000
        # Owned by the consumer thread, like everything below.
        self._watchdog = ConsumerWatchdog(SystemClock(), stall_s, max(stall_s, MAX_STALL_S))
        self._handoff = LoopHandoff(loop, self._group)
        self._hold = FetchHold(self._group)
        self._rebalance = RebalanceHandler(
            self._group, sink, self._handoff, self._commands, self._hold, self._watchdog
        )
        self._generation = 0
        self._group_state = ("", "")
        self._lag: int | None = None
        self.replacements = 0
        name = f"consumer-{self._group}"
        self._thread = threading.Thread(target=supervised(name, self._run), name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def commit(self, offsets: Sequence[CommitOffset]) -> None:
        if offsets:
            self._commands.put(lambda c: commit(c, offsets, asynchronous=True))

    def hold_records(self, holding: bool) -> None:
        """While `holding`, hand over no records; the command wakes a waiting thread at once."""
        self._commands.put(lambda c: self._hold.hold(c, holding, self._rebalance.owned))

    def want_records(self, wanted: bool) -> None:
        """Whether subscribers wait for records: only then is a stuck consumer replaced."""
        self._wanted = wanted

    def stop(self) -> None:
        """Leave the group: the revoke callback commits the acked prefix. Blocks; call off-loop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        consumer = self._open()
        next_check = time.monotonic() + WATCHDOG_EVERY_S
        try:
            while not self._stopping.is_set():
                self._run_commands(consumer)
                if not self._hold.consuming(consumer, self._rebalance.owned):
                    self._run_commands(consumer, wait_s=POLL_S)
                    messages = []
                else:
                    # consume(n, timeout) waits for all n records or the whole timeout: at a
                    # steady trickle every batch would wait POLL_S. Take what is there, else
                    # wait for one.
                    messages = consumer.consume(BATCH, timeout=0) or consumer.consume(
                        1, timeout=POLL_S
                    )
                if messages:
                    records = [r for r in map(to_record, messages) if r is not None]
                    if len(records) < len(messages):
                        self._consume_errors(messages)
                    if records:
                        failpoints.hit("consumer.crash")  # escapes: the thread dies (fault tests)
                        self._watchdog.fetched()
                        self._handoff.post(self._sink.on_records, records)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + WATCHDOG_EVERY_S
                    consumer = self._check_watchdog(consumer)
            self._run_commands(consumer)
        except BaseException:
            # Ferry stops on a dead consumer thread (sidecar/lifecycle.py): leave the group
            # briefly, so that what is acked is committed, without holding that up.
            self._close(consumer, REPLACED_CLOSE_WAIT_S)
            raise
        self._close(consumer)

    def _open(self) -> Consumer:
        generation = self._generation

        def current(callback: Callable[..., None]) -> Callable[..., None]:
            # A replaced consumer whose close was abandoned must not touch the new one's state.
            def guarded(*args: Any) -> None:
                if generation == self._generation:
                    callback(*args)

            return guarded

        # Its log lines and error reports are delivered by consume(), on this thread.
        logs = KafkaClientLog("consumer", self._config, group=self._group)
        consumer = Consumer(
            {
                **self._config,
                "error_cb": logs.on_error,
                "logger": logs.logger,
                "stats_cb": current(self._on_statistics),
            }
        )
        rebalance = self._rebalance
        consumer.subscribe(
            self._topics,
            on_assign=current(rebalance.on_assign),
            on_revoke=current(lambda c, ps: rebalance.on_revoke(c, ps, lost=False)),
            on_lost=current(lambda c, ps: rebalance.on_revoke(c, ps, lost=True)),
        )
        return consumer

    def _close(self, consumer: Consumer, wait_s: float = CLOSE_TIMEOUT_S) -> None:
        """Close (runs on_revoke: the final commit of the acked prefix), waiting up to `wait_s`."""
        closer = threading.Thread(target=consumer.close, name=f"close-{self._group}", daemon=True)
        closer.start()
        closer.join(wait_s)
        if closer.is_alive():
            log.warning("consumer_close_abandoned", group=self._group, after_s=wait_s)
        else:
            log.info("consumer_closed", group=self._group)

    def _check_watchdog(self, consumer: Consumer) -> Consumer:
        stall = self._watchdog.check(self._wanted)
        if stall is None:
            return consumer
        self.replacements += 1
        log.warning(
            "consumer_replaced",
            group=self._group,
            reason=stall.reason,
            stalled_s=round(stall.stalled_s, 1),
            group_state=stall.group_state,
            replacements_in_a_row=stall.replacements_in_a_row,
            replacements_total=self.replacements,
        )
        self._run_commands(consumer)  # commits of acked offsets first, while we can
        # A stuck consumer's close can hang as long as the consumer would have (30 s seen in
        # wait-unassign-to-complete): give it a moment, then let it finish on its own thread.
        self._close(consumer, REPLACED_CLOSE_WAIT_S)
        self._generation += 1
        self._rebalance.drop_owned_as_lost(consumer)  # the close was abandoned before revoking
        self._hold.replaced()
        self._watchdog.replaced()
        self._handoff.post(lambda _: self._sink.on_consumer_replaced(), None)
        return self._open()

    def _consume_errors(self, messages: list[Any]) -> None:
        if report_errors(messages, self._group):
            self._watchdog.offsets_unfetched()

    def _run_commands(self, consumer: Consumer, wait_s: float = 0.0) -> None:
        """Run the queued commands; with `wait_s`, first wait that long at most for one."""
        while True:
            try:
                if wait_s > 0:
                    command = self._commands.get(timeout=wait_s)
                    wait_s = 0.0
                else:
                    command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command(consumer)
            except Exception as exc:  # a failed commit is retried by the next one
                log.warning("consumer_command_failed", error=str(exc))

    def _on_statistics(self, stats_json: str) -> None:
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        lag = committed_lag(stats, self._rebalance.owned)
        if lag != self._lag:
            self._lag = lag
            self._handoff.post(self._sink.on_committed_lag, lag)
        group = stats.get("cgrp") or {}
        state = (str(group.get("state")), str(group.get("join_state")))
        if state != self._group_state:
            self._group_state = state
            log.debug("consumer_group_state", group=self._group, state=state[0], join=state[1])
        self._watchdog.group_reported(*state)
