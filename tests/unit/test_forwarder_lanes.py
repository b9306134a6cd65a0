"""The forwarder's per-topic lanes, against a fake producer and a real log in a temp directory.

The fake behaves like confluent-kafka where the forwarder relies on it: produce() only queues,
delivery reports and error callbacks fire inside poll() on the forwarder's own thread, and a
full queue raises BufferError.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from sidecar.clock import ManualClock
from sidecar.forward import reachability
from sidecar.forward.channels import CommittedRows
from sidecar.forward.forwarder import Forwarder
from sidecar.forward.resend_check import ResendCheck
from sidecar.kafka.ports import (
    DeliveryCallback,
    FoundAt,
    ProducerPort,
    SentBefore,
    SentEvent,
    SentFinder,
)
from sidecar.model import (
    EVENT_ID_HEADER,
    PUBLISH_TIME_HEADER,
    Accepted,
    DeliveredEvent,
    KafkaPosition,
    OutgoingEvent,
)
from sidecar.wal.store import Statements, connect
from sidecar.wal.writer import WalLimits, WalWriter

LIMITS = WalLimits(max_rows=100_000, max_bytes=1 << 30, dedupe_window_s=3600.0)
TINY_BACKOFF_S = 0.02


class FakeError:
    """Quacks like confluent_kafka.KafkaError."""

    def __init__(self, name: str = "_MSG_TIMED_OUT", *, fatal: bool = False) -> None:
        self._name = name
        self._fatal = fatal

    def fatal(self) -> bool:
        return self._fatal

    def name(self) -> str:
        return self._name

    def __str__(self) -> str:
        return f"KafkaError{{{self._name}}}"


class FakeMessage:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


HOLD = object()  # policy answer: do not report this message yet
Outcome = FakeError | object | None  # None: success


@dataclass
class Sent:
    producer: int
    topic: str
    event_id: str
    value: str | bytes | None
    key: str | bytes | None
    headers: list[tuple[str, str | bytes | None]]
    attempt: int  # 1 for the first produce() of this event id, 2 for its first resend, ...
    callback: Callable[[Any, Any], None] = field(repr=False)
    timestamp: int = 0


class FakeBroker:
    """Shared state of every fake producer the forwarder builds; the test steers it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.producers: list[FakeProducer] = []
        self.produced: list[Sent] = []
        self.policy: Callable[[Sent], Outcome] = lambda sent: None
        self.capacity: int | None = None  # BufferError once this many are unreported
        self.buffer_errors = 0
        self.produce_raises: Callable[[str], Exception | None] = lambda topic: None
        self.offsets: dict[str, int] = {}
        self.pending_errors: list[FakeError] = []
        self.purges: list[int] = []
        self.metadata_error: Exception | None = None  # list_topics() raises it when set
        #: when set, poll() blocks until the gate opens (and says so through `in_poll`)
        self.poll_gate: threading.Event | None = None
        self.in_poll = threading.Event()

    def factory(self, error_cb: Callable[[Any], None]) -> FakeProducer:
        with self.lock:
            producer = FakeProducer(self, len(self.producers), error_cb)
            self.producers.append(producer)
            return producer

    def raise_error(self, error: FakeError) -> None:
        """Report `error` through the current producer's error_cb at its next poll()."""
        with self.lock:
            self.pending_errors.append(error)

    def ids(self, topic: str, producer: int | None = None) -> list[str]:
        with self.lock:
            return [
                s.event_id
                for s in self.produced
                if s.topic == topic and (producer is None or s.producer == producer)
            ]

    def unreported(self) -> int:
        with self.lock:
            return sum(len(p.queue) for p in self.producers)


class FakeProducer:
    def __init__(self, broker: FakeBroker, number: int, error_cb: Callable[[Any], None]) -> None:
        self.broker = broker
        self.number = number
        self.error_cb = error_cb
        self.queue: list[Sent] = []

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: DeliveryCallback | None = None,
        on_delivery: DeliveryCallback | None = None,
        timestamp: int = 0,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        broker = self.broker
        with broker.lock:
            error = broker.produce_raises(topic)
            if error is not None:
                raise error
            if broker.capacity is not None and len(self.queue) >= broker.capacity:
                broker.buffer_errors += 1
                raise BufferError("Local: Queue full")
            assert headers is not None
            assert headers[0][0] == EVENT_ID_HEADER
            assert on_delivery is not None
            event_id = str(headers[0][1])
            attempt = 1 + sum(1 for s in broker.produced if s.event_id == event_id)
            sent = Sent(
                self.number, topic, event_id, value, key, headers, attempt, on_delivery, timestamp
            )
            broker.produced.append(sent)
            self.queue.append(sent)

    def poll(self, timeout: float = -1) -> int:
        broker = self.broker
        gate = broker.poll_gate
        if gate is not None:
            broker.in_poll.set()
            gate.wait(5.0)
        reports: list[tuple[Callable[[Any, Any], None], Any, Any]] = []
        with broker.lock:
            errors = broker.pending_errors if self is broker.producers[-1] else []
            broker.pending_errors = [] if errors else broker.pending_errors
            kept: list[Sent] = []
            for sent in self.queue:
                outcome = broker.policy(sent)
                if outcome is HOLD:
                    kept.append(sent)
                elif outcome is None:
                    offset = broker.offsets.get(sent.topic, 0)
                    broker.offsets[sent.topic] = offset + 1
                    reports.append((sent.callback, None, FakeMessage(0, offset)))
                else:
                    reports.append((sent.callback, outcome, None))
            self.queue = kept
        for error in errors:
            self.error_cb(error)
        for callback, err, msg in reports:
            callback(err, msg)
        if not reports and not errors and timeout:
            time.sleep(min(max(timeout, 0), 0.002))
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        return len(self.queue)

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        error = self.broker.metadata_error
        if error is not None:
            raise error
        return object()

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        with self.broker.lock:
            self.broker.purges.append(self.number)
            self.queue = []


def _fake_is_a_producer_port(fake: FakeProducer) -> ProducerPort:
    return fake  # mypy checks the fake against the protocol the forwarder uses


@dataclass
class Rig:
    writer: WalWriter
    broker: FakeBroker
    forwarder: Forwarder
    clock: ManualClock | None
    delivered: list[DeliveredEvent]

    async def publish(self, topic: str, count: int, start: int = 0) -> list[Accepted]:
        events = [
            OutgoingEvent(
                f"{topic}-{i}", topic, f"k{i % 3}".encode(), f"payload {i}".encode(), (("h", b"v"),)
            )
            for i in range(start, start + count)
        ]
        outcomes = await self.writer.append(events)
        assert all(isinstance(o, Accepted) and not o.duplicate for o in outcomes)
        return outcomes  # type: ignore[return-value]

    def status_failing(self) -> dict[str, str]:
        return self.forwarder.status().failing_topics


RigFactory = Callable[..., Rig]


async def wait_for(predicate: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.003)


def ids(topic: str, numbers: range) -> list[str]:
    return [f"{topic}-{i}" for i in numbers]


@pytest.fixture
async def make_rig(data_dir: Path) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    def make(
        *,
        max_in_flight: int = 1000,
        max_backoff_s: float = TINY_BACKOFF_S,
        manual_clock: bool = False,
        start: bool = True,
        notify: bool = True,
        wall_clock_ms: Callable[[], int] | None = None,
        resend_check: ResendCheck | None = None,
    ) -> Rig:
        committed = CommittedRows()

        def on_commit(topics: dict[str, int]) -> None:
            if notify:
                committed.report(topics)

        writer = WalWriter(data_dir, LIMITS, on_commit=on_commit)
        broker = FakeBroker()
        clock = ManualClock(1000.0) if manual_clock else None
        delivered: list[DeliveredEvent] = []
        forwarder = Forwarder(
            data_dir,
            committed,
            writer,
            broker.factory,
            max_in_flight=max_in_flight,
            max_backoff_s=max_backoff_s,
            on_delivered=delivered.extend,
            resend_check=resend_check,
            **({"clock": clock.monotonic} if clock else {}),
            **({"wall_clock_ms": wall_clock_ms} if wall_clock_ms else {}),
        )
        rig = Rig(writer, broker, forwarder, clock, delivered)
        rigs.append(rig)
        if start:
            forwarder.start()
        return rig

    yield make
    for rig in rigs:
        await asyncio.to_thread(rig.forwarder.stop, 0)
        await asyncio.to_thread(rig.writer.close)


# -- ordering ------------------------------------------------------------------------------------


async def test_events_of_a_topic_are_produced_in_log_order(make_rig: RigFactory) -> None:
    rig = make_rig(max_in_flight=64)  # small pages force several fill rounds
    for batch in range(6):
        await rig.publish("alpha", 50, start=batch * 50)
        await rig.publish("beta", 30, start=batch * 30)
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row retired")
    assert rig.broker.ids("alpha") == ids("alpha", range(300))
    assert rig.broker.ids("beta") == ids("beta", range(180))
    first = rig.broker.produced[0]
    i = int(first.event_id.rsplit("-", 1)[1])
    assert first.value == f"payload {i}".encode()
    assert first.key == f"k{i % 3}".encode()
    [(id_name, event_id), (time_name, published_ms), *user] = first.headers
    assert (id_name, event_id) == (EVENT_ID_HEADER, first.event_id)
    assert time_name == PUBLISH_TIME_HEADER
    assert abs(int(str(published_ms)) - time.time() * 1000) < 60_000
    assert user == [("h", b"v")]
    status = rig.forwarder.status()
    assert status.delivered_total == 480
    assert status.resent_total == 0
    assert status.in_flight == 0
    assert status.kafka_reachable is True


async def test_rows_already_logged_are_sent_at_start(make_rig: RigFactory) -> None:
    rig = make_rig(start=False, notify=False)  # as after a restart: no commit notifications
    await rig.publish("alpha", 20)
    await rig.publish("beta", 5)
    rig.forwarder.start()
    await wait_for(lambda: rig.writer.pending_rows == 0, "every logged row retired")
    assert rig.broker.ids("alpha") == ids("alpha", range(20))
    assert rig.broker.ids("beta") == ids("beta", range(5))


async def test_delivered_positions_reach_the_callback_and_the_log(make_rig: RigFactory) -> None:
    rig = make_rig()
    accepted = await rig.publish("alpha", 3)
    await wait_for(lambda: rig.writer.pending_rows == 0, "retired")
    await wait_for(lambda: len(rig.delivered) == 3, "on_delivered called")
    assert rig.delivered == [(a.event_id, 0, n) for n, a in enumerate(accepted)]
    # The log remembers where Kafka put it: a retry of the publish gets the position.
    [again] = await rig.writer.append(
        [OutgoingEvent("alpha-1", "alpha", b"k1", b"payload 1", (("h", b"v"),))]
    )
    assert isinstance(again, Accepted)
    assert again.duplicate
    assert again.position == KafkaPosition(0, 1)


# -- failures --------------------------------------------------------------------------------------


async def test_delivery_error_stops_the_lane_and_resends_from_the_oldest_unretired_row(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(manual_clock=True)
    assert rig.clock is not None

    def policy(sent: Sent) -> Outcome:
        if sent.event_id == "alpha-2":
            return FakeError("_MSG_TIMED_OUT") if sent.attempt == 1 else HOLD
        return None

    rig.broker.policy = policy
    await rig.publish("alpha", 5)
    # alpha-3 and alpha-4 were in flight with alpha-2 and succeeded: they are not sent again,
    # but the log retires a topic only up to its oldest unsettled event.
    await wait_for(lambda: rig.forwarder.status().delivered_total == 4, "all but alpha-2 sent")
    assert rig.writer.pending_rows == 5
    assert rig.broker.ids("alpha") == ids("alpha", range(5))
    assert "_MSG_TIMED_OUT" in rig.status_failing()["alpha"]

    # The lane stays stopped until its backoff has passed: nothing new goes out.
    await rig.publish("alpha", 2, start=5)
    await asyncio.sleep(0.05)
    assert rig.broker.ids("alpha") == ids("alpha", range(5))
    assert rig.writer.pending_rows == 7

    rig.clock.advance(TINY_BACKOFF_S + 0.001)
    await wait_for(lambda: len(rig.broker.ids("alpha")) == 8, "lane restarted")
    # The resend starts at the oldest unretired row, then continues in order.
    assert rig.broker.ids("alpha")[5:] == ["alpha-2", "alpha-5", "alpha-6"]
    assert rig.forwarder.status().resent_total == 1
    assert rig.status_failing() == {}
    # alpha-2 is held by the broker: nothing from it on is retired until it succeeds.
    await wait_for(lambda: rig.forwarder.status().delivered_total == 6, "the others delivered")
    await asyncio.sleep(0.02)
    assert rig.writer.pending_rows == 7
    rig.broker.policy = lambda sent: None
    await wait_for(lambda: rig.writer.pending_rows == 0, "alpha-2 retired after success")
    assert rig.forwarder.status().delivered_total == 7


async def test_other_topics_keep_flowing_while_one_fails(make_rig: RigFactory) -> None:
    rig = make_rig(manual_clock=True)
    assert rig.clock is not None
    broken = True
    rig.broker.policy = lambda sent: (
        FakeError("_MSG_TIMED_OUT") if broken and sent.topic == "bad" else None
    )
    await rig.publish("bad", 10)
    await wait_for(lambda: "bad" in rig.status_failing(), "bad lane failing")
    for round_ in range(5):
        await rig.publish("good", 20, start=round_ * 20)
    await wait_for(lambda: rig.writer.pending_rows == 10, "all of good retired")
    assert rig.broker.ids("good") == ids("good", range(100))
    assert "bad" in rig.status_failing()

    broken = False
    rig.clock.advance(TINY_BACKOFF_S + 0.001)
    await wait_for(lambda: rig.writer.pending_rows == 0, "bad drained after the fix")
    resent = rig.broker.ids("bad")[10:]
    assert resent == ids("bad", range(10))  # every row again, from the oldest, in order
    assert rig.forwarder.status().resent_total == 10


async def test_a_stuck_topic_leaves_room_for_the_others(make_rig: RigFactory) -> None:
    rig = make_rig(max_in_flight=8)  # one lane may hold at most half
    rig.broker.policy = lambda sent: HOLD if sent.topic == "stuck" else None
    await rig.publish("stuck", 20)
    await wait_for(lambda: len(rig.broker.ids("stuck")) == 4, "stuck lane at its cap")
    await rig.publish("free", 50)
    await wait_for(lambda: rig.writer.pending_rows == 20, "free topic delivered")
    assert rig.broker.ids("free") == ids("free", range(50))
    assert len(rig.broker.ids("stuck")) == 4


async def test_buffer_error_is_backpressure_not_failure(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.broker.capacity = 3
    await rig.publish("alpha", 40)
    await rig.publish("beta", 40)
    await wait_for(lambda: rig.writer.pending_rows == 0, "everything retired")
    assert rig.broker.buffer_errors > 0
    assert rig.broker.ids("alpha") == ids("alpha", range(40))  # each once, in order
    assert rig.broker.ids("beta") == ids("beta", range(40))
    assert rig.forwarder.status().resent_total == 0
    assert rig.status_failing() == {}


async def test_fatal_error_recreates_the_producer_and_resends_everything(
    make_rig: RigFactory,
) -> None:
    rig = make_rig(manual_clock=True)
    assert rig.clock is not None
    rig.broker.policy = lambda sent: HOLD  # nothing is acknowledged yet
    await rig.publish("alpha", 5)
    await rig.publish("beta", 3)
    await wait_for(lambda: rig.broker.unreported() == 8, "all in flight")
    assert len(rig.broker.producers) == 1

    rig.broker.raise_error(FakeError("_FENCED", fatal=True))
    await wait_for(lambda: len(rig.broker.producers) == 2, "producer recreated")
    assert rig.broker.purges == [0]
    failing = rig.status_failing()
    assert set(failing) == {"alpha", "beta"}
    assert "recreated" in failing["alpha"]
    assert rig.forwarder.status().in_flight == 0

    rig.broker.policy = lambda sent: None
    rig.clock.advance(TINY_BACKOFF_S + 0.001)
    await wait_for(lambda: rig.writer.pending_rows == 0, "everything resent and retired")
    assert rig.broker.ids("alpha", producer=1) == ids("alpha", range(5))
    assert rig.broker.ids("beta", producer=1) == ids("beta", range(3))
    assert rig.forwarder.status().resent_total == 8


async def test_every_record_of_a_wave_carries_the_same_timestamp(make_rig: RigFactory) -> None:
    """A broker refuses records by timestamp (log.message.timestamp.after.max.ms after a clock
    jump) batch by batch: were a wave stamped record by record, the clock could step back in
    the middle of it, the older records be refused and the newer ones accepted, and the resend
    land after them. With one timestamp per wave the broker takes it all or nothing."""
    ticks = iter(range(1_000_000, 2_000_000, 1000))
    rig = make_rig(max_in_flight=2000, start=False, wall_clock_ms=lambda: next(ticks))
    await rig.publish("alpha", 1800)  # a wave of 1000 (the lane's cap), in pages of 500
    first_wave = HOLD

    def hold_the_first_wave(sent: Sent) -> Outcome:
        return first_wave if sent.attempt == 1 and len(rig.broker.produced) <= 1000 else None

    rig.broker.policy = hold_the_first_wave
    rig.forwarder.start()
    await wait_for(lambda: len(rig.broker.produced) >= 1000, "the first wave handed over")
    await asyncio.sleep(0.1)  # the lane must not start another wave while this one is out
    assert len(rig.broker.produced) == 1000
    first_wave = None
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row retired")
    stamps = [sent.timestamp for sent in rig.broker.produced]
    assert len(set(stamps[:1000])) == 1, "one wave, one timestamp"
    assert len(set(stamps[1000:])) == 1
    assert stamps[1000] > stamps[0], "a later wave is stamped afresh"


async def test_a_silent_kafka_is_noticed_and_its_return_too(make_rig: RigFactory) -> None:
    """Sends never time out, so an unreachable Kafka shows up only as silence: the probe asks
    for metadata when no delivery has been reported for a while, in flight or idle."""
    rig = make_rig()
    await rig.publish("alpha", 1)
    await wait_for(lambda: rig.forwarder.status().kafka_reachable, "reachable after delivery")
    rig.broker.policy = lambda sent: HOLD  # nothing is reported any more...
    rig.broker.metadata_error = RuntimeError("Local: Broker transport failure")
    await rig.publish("alpha", 1, start=1)
    await wait_for(lambda: not rig.forwarder.status().kafka_reachable, "unreachable", within=10)
    rig.broker.metadata_error = None
    await wait_for(lambda: rig.forwarder.status().kafka_reachable, "reachable again", within=10)
    rig.broker.policy = lambda sent: None
    await wait_for(lambda: rig.writer.pending_rows == 0, "delivered once Kafka answers")


async def test_non_fatal_errors_only_change_reachability(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.publish("alpha", 1)
    await wait_for(lambda: rig.forwarder.status().kafka_reachable, "reachable after delivery")
    rig.broker.raise_error(FakeError("_ALL_BROKERS_DOWN"))
    rig.broker.policy = lambda sent: HOLD
    await rig.publish("alpha", 1, start=1)  # something in flight: the forwarder polls
    await wait_for(lambda: not rig.forwarder.status().kafka_reachable, "unreachable")
    assert len(rig.broker.producers) == 1
    rig.broker.policy = lambda sent: None
    await wait_for(lambda: rig.forwarder.status().kafka_reachable, "reachable again")


@pytest.mark.parametrize("code", ["_AUTHENTICATION", "_SSL", "CLUSTER_AUTHORIZATION_FAILED"])
async def test_a_refused_login_makes_kafka_unreachable_and_keeps_the_rows(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """A wrong password or an untrusted certificate: librdkafka retries without end and
    reports it through error_cb, which alone turns Kafka unreachable here (no probe runs)."""
    monkeypatch.setattr(reachability, "PROBE_EVERY_S", 3600.0)
    rig = make_rig()
    await rig.publish("alpha", 1)
    await wait_for(lambda: rig.forwarder.status().kafka_reachable, "reachable after delivery")
    # Its retirement too, or it would still count below among the rows kept.
    await wait_for(lambda: rig.writer.pending_rows == 0, "the delivered row retired")
    rig.broker.policy = lambda sent: HOLD
    rig.broker.raise_error(FakeError(code))
    await rig.publish("alpha", 3, start=1)  # something in flight: the forwarder polls
    await wait_for(lambda: not rig.forwarder.status().kafka_reachable, "unreachable")
    assert rig.writer.pending_rows == 3
    assert len(rig.broker.producers) == 1  # not fatal: the same producer keeps trying


async def test_a_produce_exception_fails_only_its_lane(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    rig = make_rig()
    rig.broker.produce_raises = lambda topic: (
        KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC)) if topic == "ghost" else None
    )
    await rig.publish("ghost", 2)
    await rig.publish("alpha", 3)
    try:
        await wait_for(lambda: rig.writer.pending_rows == 2, "alpha delivered")
        # The ghost lane keeps failing (between a restart and its next failure it flows again).
        await wait_for(lambda: "ghost" in rig.status_failing(), "ghost failing")
        assert rig.writer.pending_rows == 2
    finally:
        assert crashes == []


# -- stopping --------------------------------------------------------------------------------------


async def test_stop_returns_within_grace_with_events_in_flight(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.broker.policy = lambda sent: HOLD  # Kafka never answers
    await rig.publish("alpha", 10)
    await wait_for(lambda: rig.broker.unreported() == 10, "in flight")
    grace = 0.3
    started = time.monotonic()
    await asyncio.to_thread(rig.forwarder.stop, grace)
    elapsed = time.monotonic() - started
    assert grace <= elapsed < grace + 0.5, elapsed
    assert rig.writer.pending_rows == 10  # unacknowledged rows stay logged


async def test_stop_waits_for_acknowledgements_within_grace(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.broker.policy = lambda sent: HOLD
    await rig.publish("alpha", 30)
    await wait_for(lambda: rig.broker.unreported() == 30, "in flight")
    started = time.monotonic()
    stopping = asyncio.create_task(asyncio.to_thread(rig.forwarder.stop, 5.0))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # still waiting for Kafka
    rig.broker.policy = lambda sent: None
    await asyncio.wait_for(stopping, 3)
    assert time.monotonic() - started < 2.0  # stops as soon as it is idle, not at the deadline
    assert rig.writer.pending_rows == 0  # retirements landed before stop() returned
    assert rig.broker.ids("alpha") == ids("alpha", range(30))


async def test_stop_drains_events_committed_just_before_it(make_rig: RigFactory) -> None:
    rig = make_rig()
    rig.broker.policy = lambda sent: HOLD
    await rig.publish("alpha", 1)
    await wait_for(lambda: rig.broker.unreported() == 1, "alpha-0 in flight")
    # Hold the forwarder thread inside poll() while new events commit and stop() is called.
    gate = threading.Event()
    rig.broker.in_poll.clear()
    rig.broker.poll_gate = gate
    await asyncio.to_thread(rig.broker.in_poll.wait, 5.0)
    await rig.publish("beta", 3)  # notified while the forwarder is busy
    stopping = asyncio.create_task(asyncio.to_thread(rig.forwarder.stop, 5.0))
    await wait_for(rig.forwarder._stopping.is_set, "stop requested")
    rig.broker.policy = lambda sent: None
    rig.broker.poll_gate = None
    gate.set()
    await asyncio.wait_for(stopping, 6)
    assert rig.broker.ids("beta") == ids("beta", range(3))
    assert rig.writer.pending_rows == 0


async def test_stop_when_idle_is_immediate(make_rig: RigFactory) -> None:
    rig = make_rig()
    started = time.monotonic()
    await asyncio.to_thread(rig.forwarder.stop, 5.0)
    assert time.monotonic() - started < 1.0


async def test_a_row_refused_for_good_is_found_alone_and_parked(make_rig: RigFactory) -> None:
    """Kafka refuses whole waves that hold the poison row; one row per wave finds it, parks it,
    and the rest of its lane (same keys included) flows on."""
    rig = make_rig()
    refused = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    rig.broker.policy = lambda sent: (
        refused if any(s.event_id == "alpha-5" for s in rig.broker.producers[-1].queue) else None
    )
    await rig.publish("alpha", 10)
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row delivered or parked")
    delivered = {event_id for event_id, _, _ in rig.delivered}
    assert delivered == set(ids("alpha", range(10))) - {"alpha-5"}
    assert rig.writer.parked_rows == 1
    assert rig.forwarder.parked_total == 1
    reader = Statements(connect(rig.writer.data_dir, readonly=True))
    try:
        [parked] = reader.parked(None)
    finally:
        reader.conn.close()
    assert (parked.event_id, parked.topic) == ("alpha-5", "alpha")
    assert "MSG_SIZE_TOO_LARGE" in parked.reason


async def test_a_wave_refused_only_for_its_size_parks_nothing(make_rig: RigFactory) -> None:
    """A refusal that no lone row reproduces (the batch was too large, not a row) parks no row."""
    rig = make_rig()
    refused = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    rig.broker.policy = lambda sent: refused if len(rig.broker.producers[-1].queue) > 3 else None
    await rig.publish("alpha", 20)
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row delivered")
    assert {event_id for event_id, _, _ in rig.delivered} == set(ids("alpha", range(20)))
    assert rig.writer.parked_rows == 0


async def test_a_row_produce_refuses_for_good_is_parked_at_once(make_rig: RigFactory) -> None:
    rig = make_rig()
    too_large = KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    produced: list[str] = []

    def raises(topic: str) -> Exception | None:
        produced.append(topic)
        return too_large if len(produced) == 3 else None

    rig.broker.produce_raises = raises
    await rig.publish("alpha", 6)
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row delivered or parked")
    assert {event_id for event_id, _, _ in rig.delivered} == set(ids("alpha", range(6))) - {
        "alpha-2"
    }
    assert rig.writer.parked_rows == 1


# -- rows a killed run sent, found in Kafka at start ---------------------------------------------


class FakeFinder:
    """Answers the resend check from a set of event ids said to be in Kafka already."""

    def __init__(self, in_kafka: dict[str, FoundAt], error: Exception | None = None) -> None:
        self.in_kafka = in_kafka
        self.error = error
        self.asked: list[dict[str, SentBefore]] = []

    def find(
        self, wanted: dict[str, SentBefore], timeout_s: float
    ) -> dict[str, dict[SentEvent, FoundAt]]:
        self.asked.append(wanted)
        if self.error is not None:
            raise self.error
        return {
            topic: {e: self.in_kafka[e[0]] for e in sent.events if e[0] in self.in_kafka}
            for topic, sent in wanted.items()
        }


def _finder_is_a_port(fake: FakeFinder) -> SentFinder:
    return fake  # mypy checks the fake against the port


def check(finder: FakeFinder, timeout_s: float = 1.0) -> ResendCheck:
    return ResendCheck(finder, timeout_s=timeout_s, limit=1000)


async def test_rows_found_in_kafka_at_start_are_not_sent_again(make_rig: RigFactory) -> None:
    found = {f"alpha-{i}": (2, 70 + i) for i in (0, 1, 2, 3, 6)}
    finder = FakeFinder(found)
    rig = make_rig(start=False, notify=False, resend_check=check(finder))
    published = await rig.publish("alpha", 10)
    rig.forwarder.start()
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row retired")
    assert rig.broker.ids("alpha") == ["alpha-4", "alpha-5", "alpha-7", "alpha-8", "alpha-9"]
    [wanted] = finder.asked
    assert {e[0] for e in wanted["alpha"].events} == set(ids("alpha", range(10)))
    assert wanted["alpha"].since_ms < min(a.publish_time_ms for a in published)
    await wait_for(lambda: len(rig.delivered) == 10, "every position reported")
    assert {d for d in rig.delivered if d[0] in found} == {(i, *at) for i, at in found.items()}
    assert rig.forwarder.counters.found_in_kafka == 5
    # Client ids found in Kafka are remembered with their place, as delivered ones are.
    [again] = await rig.writer.append(
        [OutgoingEvent("alpha-6", "alpha", b"k0", b"payload 6", (("h", b"v"),))]
    )
    assert isinstance(again, Accepted)
    assert again.duplicate
    assert again.position == KafkaPosition(2, 76)


async def test_a_found_row_behind_a_missing_one_retires_only_after_it(
    make_rig: RigFactory,
) -> None:
    finder = FakeFinder({"alpha-1": (0, 5)})
    rig = make_rig(start=False, notify=False, resend_check=check(finder))
    rig.broker.policy = lambda sent: HOLD if sent.event_id == "alpha-0" else None
    for i in range(3):  # one slice each: each can retire on its own
        await rig.publish("alpha", 1, start=i)
    rig.forwarder.start()
    await wait_for(lambda: rig.broker.ids("alpha") == ["alpha-0", "alpha-2"], "the others sent")
    # alpha-1 counts as delivered: it was found in Kafka.
    await wait_for(lambda: rig.forwarder.status().delivered_total == 2, "alpha-2 delivered")
    await asyncio.sleep(0.05)
    assert rig.writer.pending_rows == 3, "retired past a row Kafka has not acknowledged"
    rig.broker.policy = lambda sent: None
    await wait_for(lambda: rig.writer.pending_rows == 0, "all retired once alpha-0 is in")
    assert rig.broker.ids("alpha") == ["alpha-0", "alpha-2"]


async def test_a_failed_check_sends_everything_again(make_rig: RigFactory) -> None:
    finder = FakeFinder({"alpha-0": (0, 0)}, error=RuntimeError("topic authorization failed"))
    rig = make_rig(start=False, notify=False, resend_check=check(finder))
    await rig.publish("alpha", 4)
    rig.forwarder.start()
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row retired")
    assert rig.broker.ids("alpha") == ids("alpha", range(4))
    assert rig.forwarder.counters.found_in_kafka == 0


async def test_no_check_when_no_row_waits(make_rig: RigFactory) -> None:
    finder = FakeFinder({})
    rig = make_rig(resend_check=check(finder))
    await rig.publish("alpha", 2)
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row retired")
    assert finder.asked == []


async def test_no_check_without_time_for_it(make_rig: RigFactory) -> None:
    finder = FakeFinder({"alpha-0": (0, 0)})
    rig = make_rig(start=False, notify=False, resend_check=check(finder, timeout_s=0))
    await rig.publish("alpha", 2)
    rig.forwarder.start()
    await wait_for(lambda: rig.writer.pending_rows == 0, "every row retired")
    assert rig.broker.ids("alpha") == ids("alpha", range(2))
    assert finder.asked == []
