"""The forwarder: sends logged events to Kafka until Kafka acknowledges them, then retires them.

One thread of the forwarder process (sidecar/forward/child.py) owns a producer
and a read connection to the log; it learns of committed rows and asks for
retirements through channels (sidecar/forward/channels.py). Events travel
in lanes, one per topic, each in log order, so that events with the same key
reach their partition in publish order. A delivery error means "outcome
unknown": the row is kept, the lane stops, backs off, and after everything
it had in flight has reported, it starts again from its oldest unretired row
(a possible duplicate, never a loss). A failing topic never holds up the
others. No retry budget ever drops an event; a row leaves the log only after
a successful delivery report, or parked: when Kafka refuses a row for good
(too large for its topic, not authorised), the lane resends one row per wave
until the refused row is alone, then moves it to the log's parked table
(counted and logged, released by an operator) and flows on past it.

Per-key order across failures rests on two things. The producer never times a
send out (sidecar/kafka/producer.py), so its idempotent retries keep each
partition in order and a send fails only together with every later send of its
partition. And every record of one wave carries the same timestamp, so a broker
that refuses timestamps (a clock that jumped) refuses the whole wave, never its
older half alone.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from sidecar import failpoints
from sidecar.backoff import backoff_delay
from sidecar.forward.channels import CommittedRows, Retirements
from sidecar.forward.counters import ForwarderCounters, ForwarderStatus, LaneStatus
from sidecar.forward.lanes import UNKNOWN_END, Lane
from sidecar.forward.reachability import KafkaReachability
from sidecar.forward.resend_check import ResendCheck
from sidecar.kafka.ports import ProducerFactory, ProducerPort
from sidecar.kafka.producer import refused_for_good
from sidecar.lifecycle import supervised
from sidecar.model import (
    EVENT_ID_HEADER,
    PUBLISH_TIME_HEADER,
    DeliveredEvent,
    Parked,
    PendingEvent,
    Settlement,
)
from sidecar.wal.store import Statements, connect

log = structlog.get_logger(__name__)

PAGE = 500
IDLE_WAIT_S = 0.2


class Forwarder:
    """Moves events from the log to Kafka. Start with start(); stop with stop(grace)."""

    def __init__(
        self,
        data_dir: Path,
        committed: CommittedRows,
        retirements: Retirements,
        make_producer: ProducerFactory,
        *,
        max_in_flight: int,
        max_backoff_s: float,
        on_delivered: Callable[[list[DeliveredEvent]], None] = lambda _: None,
        resend_check: ResendCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._data_dir = data_dir
        self._committed = committed
        self._retirements = retirements
        self._make_producer = make_producer
        self._max_in_flight = max_in_flight
        self._lane_cap = max(1, max_in_flight // 2)  # one stuck topic leaves room for others
        self._max_backoff_s = max_backoff_s
        self._on_delivered = on_delivered
        self._resend_check = resend_check
        self._clock = clock
        self._wall_clock_ms = wall_clock_ms
        self._lanes: dict[str, Lane] = {}
        self._wake = committed.wake
        self._stopping = threading.Event()
        self._drain_deadline = 0.0
        self._in_flight = 0
        self._generation = 0
        self._fatal: Any = None
        self._delivered: list[DeliveredEvent] = []
        self._delivered_ids: list[DeliveredEvent] = []  # client ids among them
        self._parked: list[Parked] = []
        self._retiring: list[concurrent.futures.Future[None]] = []
        self._reachability = KafkaReachability(clock)
        self.delivered_total = 0
        self.resent_total = 0
        self.parked_total = 0
        self.counters = ForwarderCounters()
        self._producer: ProducerPort | None = None
        self._thread = threading.Thread(
            target=supervised("forwarder", self._run), name="forwarder", daemon=True
        )
        self._prober = threading.Thread(
            target=supervised("kafka-probe", self._probe), name="kafka-probe", daemon=True
        )

    # -- called from other threads ---------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._prober.start()

    def stop(self, grace_s: float) -> None:
        """Drain for up to `grace_s` seconds, then stop; what is left stays in the log."""
        self._drain_deadline = self._clock() + grace_s
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._prober.is_alive():
            self._prober.join()

    def status(self) -> ForwarderStatus:
        lanes = list(self._lanes.values())
        return ForwarderStatus(
            kafka_reachable=bool(self._reachability.reachable),
            in_flight=self._in_flight,
            delivered_total=self.delivered_total,
            resent_total=self.resent_total,
            parked_total=self.parked_total,
            failing_topics={lane.topic: lane.last_error for lane in lanes if lane.failed},
            lanes=tuple(LaneStatus.of(lane, self._clock()) for lane in lanes),
        )

    # -- the forwarder thread ----------------------------------------------------------------

    def _run(self) -> None:
        reader = Statements(connect(self._data_dir, readonly=True))
        settled_to = reader.settled_to()
        for topic in reader.topics():
            mark = settled_to.get(topic, 0)
            self._lanes[topic] = Lane(topic, cursor=mark, settled_to=mark, reported_to=mark)
        self._skip_found_in_kafka(reader)
        producer = self._new_producer()
        try:
            while True:
                # Notifications first: rows committed just before stop() still count as work.
                self._take_notifications()
                if self._finished():
                    break
                if self._fatal is not None:
                    producer = self._replace_producer(producer)
                self._restart_due_lanes()
                sent = self._fill(producer, reader)
                if sent:
                    failpoints.hit("forwarder.crash")  # escapes: the thread dies (fault tests)
                if self._in_flight:
                    producer.poll(0 if sent else 0.05)
                else:
                    self._wake.wait(0 if sent else IDLE_WAIT_S)
                    self._wake.clear()
                    # Nothing to report, but librdkafka's log lines and error reports wait in
                    # the producer's queue until a poll serves them (kafka_logs.py).
                    producer.poll(0)
                self._settle_deliveries()
        finally:
            self._settle_deliveries()
            if self._retiring:
                self._retirements.retire_now()
                concurrent.futures.wait(self._retiring, timeout=5.0)
            reader.conn.close()
            log.info("forwarder_stopped", in_flight=self._in_flight)

    def _skip_found_in_kafka(self, reader: Statements) -> None:
        """Settle the rows a previous run sent that are in Kafka already (resend_check.py)."""
        if self._resend_check is None:
            return
        try:
            found = self._resend_check.run(reader, self._lanes.values())
        except Exception as exc:  # only a find changes anything: without one, all is resent
            log.warning("resend_check_failed", error=str(exc))
            return
        for topic, rows in found.items():
            self._lanes[topic].skip_found(rows.through, rows.later)
            self._delivered += rows.delivered
            self._delivered_ids += rows.client_ids
            self.counters.found_in_kafka += len(rows.delivered)

    def _finished(self) -> bool:
        if not self._stopping.is_set():
            return False
        # A failed lane waiting out its backoff still holds rows: keep retrying until the deadline.
        idle = self._in_flight == 0 and not any(
            lane.has_work or lane.failed for lane in self._lanes.values()
        )
        return idle or self._clock() >= self._drain_deadline

    def _take_notifications(self) -> None:
        for topic, seq in self._committed.take().items():
            lane = self._lanes.get(topic)
            if lane is None:
                self._lanes[topic] = lane = Lane(topic, known_end=seq)
            elif lane.known_end < seq:
                lane.known_end = seq

    def _fill(self, producer: ProducerPort, reader: Statements) -> int:
        sent = 0
        stamp = self._wall_clock_ms()  # one timestamp per wave: refused all together or not at all
        for lane in list(self._lanes.values()):
            if lane.in_flight:
                # One wave per lane: rows in flight together were handed over together and time
                # out together, so a newer row can never get through while an older one failed
                # and is resent after it (that would break per-key order).
                continue
            while lane.has_work and self._in_flight < self._max_in_flight:
                room = min(
                    1 if lane.single else PAGE,
                    self._lane_cap - lane.in_flight,
                    self._max_in_flight - self._in_flight,
                )
                if room <= 0:
                    break
                rows = reader.pending_for_topic(lane.topic, lane.cursor, room)
                if len(rows) < room:
                    # Caught up with what is committed; a notification reopens the lane.
                    lane.known_end = rows[-1].sequence if rows else lane.cursor
                produced = self._produce(producer, lane, rows, stamp)
                sent += produced
                self.counters.sent_events += produced
                if lane.failed or lane.single:
                    break  # produce() refused a row (only this lane stops), or one row a wave
                if produced < len(rows):
                    lane.known_end = max(lane.known_end, rows[-1].sequence)
                    return sent  # the producer's queue is full: poll before sending more
        return sent

    def _produce(
        self, producer: ProducerPort, lane: Lane, rows: list[PendingEvent], stamp: int
    ) -> int:
        generation, alone = self._generation, lane.single
        produce, callback = producer.produce, self._callback
        for count, row in enumerate(rows):
            if row.sequence in lane.settled:
                # Delivered before the lane restarted, behind an event that failed: not again.
                lane.cursor = row.sequence
                lane.sent.append(row.sequence)
                continue
            try:
                produce(
                    row.topic,
                    row.payload,
                    row.key,
                    headers=[
                        (EVENT_ID_HEADER, row.event_id),
                        (PUBLISH_TIME_HEADER, str(row.publish_time_ms)),
                        *row.headers,
                    ],
                    timestamp=stamp,
                    on_delivery=callback(lane, row, generation, alone),
                )
            except BufferError:
                return count  # backpressure, not failure: the row is sent on the next round
            except Exception as exc:
                # produce() also refuses synchronously (KafkaException: _UNKNOWN_TOPIC once Kafka
                # said the topic does not exist, MSG_SIZE_TOO_LARGE, ...). Like a failed
                # delivery, that stops this lane only; escaping would kill the forwarder thread.
                if refused_for_good(exc):
                    self._park(lane, row, str(exc))  # about this very row
                else:
                    self._fail_lane(lane, str(exc))
                return count
            lane.cursor = row.sequence
            lane.sent.append(row.sequence)
            lane.in_flight += 1
            self._in_flight += 1
            if row.sequence <= lane.high_water:
                self.resent_total += 1
            else:
                lane.high_water = row.sequence
        return len(rows)

    def _callback(
        self, lane: Lane, row: PendingEvent, generation: int, alone: bool
    ) -> Callable[[Any, Any], None]:
        """The delivery report handler of `row`; `alone`: it was sent in a wave of its own."""

        def on_delivery(err: Any, msg: Any) -> None:
            if generation != self._generation:
                return  # a report from a producer that was replaced; its lanes restarted
            lane.in_flight -= 1
            self._in_flight -= 1
            if err is None:  # the per-event path: keep it short (reachability: _settle_deliveries)
                lane.failures = 0
                lane.single = False
                delivered = (row.event_id, msg.partition(), msg.offset())
                self._delivered.append(delivered)
                if not row.assigned_id:
                    self._delivered_ids.append(delivered)
                lane.settle(row.sequence)
            elif not refused_for_good(err):
                self._fail_lane(lane, str(err))
            elif alone:
                self._park(lane, row, str(err))
            else:
                # Refused for good, but maybe for the size of the whole batch: resend one row
                # per wave, at once, until the refused row is found or the lane flows again.
                lane.single = True
                self._fail_lane(lane, str(err), backoff=False)

        return on_delivery

    def _park(self, lane: Lane, row: PendingEvent, reason: str) -> None:
        """Kafka refused `row` for good: take it out of the lane's way (it waits in the log's
        parked table for an operator) and restart the lane right after it."""
        self._parked.append(Parked(row, reason))
        lane.settle(row.sequence)
        self.parked_total += 1
        lane.single = False
        log.error(
            "event_parked",
            topic=lane.topic,
            event_id=row.event_id,
            sequence=row.sequence,
            reason=reason,
            hint="ferry parked release, once the cause is fixed",
        )
        self._fail_lane(lane, reason, backoff=False)

    def _fail_lane(self, lane: Lane, error: str, *, backoff: bool = True) -> None:
        """Stop the lane; it restarts from its oldest unretired row once everything it had in
        flight has reported, after a backoff (or at once, to step past a refused row)."""
        if lane.failed:
            return
        self.counters.failed(error)
        lane.failed = True
        lane.last_error = error
        delay = 0.0
        if backoff:
            lane.failures += 1
            delay = backoff_delay(lane.failures, cap=self._max_backoff_s)
        lane.retry_at = self._clock() + delay
        log.warning("delivery_failed", topic=lane.topic, error=error, retry_in_s=round(delay, 2))

    def _restart_due_lanes(self) -> None:
        now = self._clock()
        due = [
            lane
            for lane in self._lanes.values()
            if lane.failed and lane.in_flight == 0 and now >= lane.retry_at
        ]
        if not due:
            return
        self.counters.lane_restarts += len(due)
        for lane in due:
            # From the first unsettled event; those settled behind it are skipped (_produce).
            lane.failed = False
            lane.cursor = lane.settled_to
            lane.sent.clear()
            lane.known_end = UNKNOWN_END
            log.info("lane_restarted", topic=lane.topic, attempt=lane.failures)

    def _settle_deliveries(self) -> None:
        self._retiring = [f for f in self._retiring if not f.done()]
        marks = {
            lane.topic: lane.settled_to
            for lane in self._lanes.values()
            if lane.settled_to > lane.reported_to
        }
        if not self._delivered and not self._parked and not marks:
            return
        delivered, self._delivered = self._delivered, []
        if delivered:
            failpoints.hit("forwarder.after_ack")
            self._reachability.delivered()
            self.delivered_total += len(delivered)
        settlement = Settlement(marks, self._delivered_ids, self._parked)
        self._delivered_ids, self._parked = [], []
        for topic, mark in marks.items():
            self._lanes[topic].reported_to = mark
        self._retiring.append(self._retirements.retire(settlement))
        if delivered:
            self._on_delivered(delivered)

    def _probe(self) -> None:
        self._reachability.probe_until(self._stopping, lambda: self._producer)

    def _new_producer(self) -> ProducerPort:
        self._fatal = None
        self._producer = self._make_producer(self._on_error)
        return self._producer

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = err
        self._reachability.producer_error(err)

    def _replace_producer(self, old: ProducerPort) -> ProducerPort:
        log.error("producer_fatal_error", error=str(self._fatal))
        self._generation += 1
        old.purge(in_queue=True, in_flight=True, blocking=False)
        self._in_flight = 0
        for lane in self._lanes.values():
            lane.in_flight = 0
            self._fail_lane(lane, f"producer recreated after: {self._fatal}")
        return self._new_producer()
