"""The workload: publisher and subscriber threads that record everything they see in a History.

Publishers own their keys; each key's events are published one after another (the next only
once the previous one is settled), retried with the same event id while the outcome is not
definite, so per-key publish order is well defined. Subscribers keep a Subscribe stream open,
ack every delivery on the stream, and reconnect whenever the stream breaks (killed sidecar,
drain), like a real client.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from chaos.history import FAIL, OK, UNKNOWN, Attempt, History, Op
from sidecar._gen.ferry.v1 import publisher_pb2 as ppb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc, subscriber_pb2_grpc
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from testkit.publishing import header
from testkit.subscribe_calls import ack_status, duration

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
DEFINITE = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "ALREADY_EXISTS"}
PERMANENT = {"INVALID_ARGUMENT", "ALREADY_EXISTS"}  # retrying the same event cannot help


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


def classify(error: grpc.RpcError) -> tuple[str, str, str]:
    """(outcome, code name, message) of a failed call; see chaos.history for the rules."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else str(error)) or ""
    name = code.name if code is not None else "UNKNOWN"
    low = details.lower()
    if name in DEFINITE:
        return FAIL, name, details
    if name == "UNAVAILABLE":
        if "shutting down" in low or "could not be written" in low:
            return FAIL, name, details
        if "failed to connect" in low or "connection refused" in low:
            return FAIL, "UNAVAILABLE_NOT_CONNECTED", details  # the request never left
    return UNKNOWN, name, details


@dataclass
class PublishPlan:
    """How one publisher behaves."""

    topic: str
    keys: int = 3
    batch: int = 1  # events per call; PublishBatch when > 1
    payload_bytes: int = 200
    attempt_timeout_s: float = 5.0
    retry_budget_s: float = 20.0  # then the event is left with its last outcome
    pause_s: float = 0.0
    ack_level: int = ppb.ACK_LEVEL_DURABLE
    kafka_wait_s: float = 2.0


class Publisher(threading.Thread):
    """Publishes events of its own keys until stopped."""

    def __init__(
        self, address: str, history: History, plan: PublishPlan, name: str, run_id: str
    ) -> None:
        super().__init__(name=f"pub-{name}", daemon=True)
        self.address, self.history, self.plan = address, history, plan
        self.prefix = f"{run_id}-{name}"
        self.stop_event = threading.Event()
        self.abort = threading.Event()  # give up retries too (the sidecar is gone for good)
        self._seqs = dict.fromkeys((f"{self.prefix}-k{i}" for i in range(plan.keys)), 0)
        self._counter = itertools.count(1)
        self.calls = 0

    def run(self) -> None:
        chan = channel(self.address)
        stub = publisher_pb2_grpc.PublisherStub(chan)
        try:
            for key in itertools.cycle(self._seqs):
                if self.stop_event.is_set():
                    return
                settled = self.publish(stub, [self._next(key) for _ in range(self.plan.batch)])
                if not settled:
                    time.sleep(0.1)  # not answered OK: do not spin while the sidecar is away
                elif self.plan.pause_s:
                    time.sleep(self.plan.pause_s)
        finally:
            chan.close()

    def stop(self, abort: bool = False) -> None:
        self.stop_event.set()
        if abort:
            self.abort.set()

    def _next(self, key: str) -> Op:
        self._seqs[key] += 1
        seq = self._seqs[key]
        event_id = f"{self.prefix}-{next(self._counter)}"
        head = f"{event_id}|{key}|{seq}|".encode()
        payload = head + os.urandom(max(0, self.plan.payload_bytes - len(head)))
        return self.history.begin(event_id, self.plan.topic, key, seq, payload)

    def _event(self, op: Op) -> ppb.Event:
        return ppb.Event(
            topic=op.topic,
            key=op.key.encode(),
            payload=op.payload,
            event_id=op.event_id,
            headers=[header("seq", str(op.seq).encode())],
        )

    def publish(self, stub: Any, ops: Sequence[Op]) -> bool:
        """Publish `ops` (one key, in sequence) until each is ok, permanently failed, or the
        retry budget is spent; True when all are ok."""
        first, delay, pending = time.monotonic(), 0.05, list(ops)
        while pending:
            self._attempt(stub, pending)
            pending = [
                o for o in pending if o.attempts[-1].outcome != OK
                and o.attempts[-1].code not in PERMANENT
            ]  # fmt: skip
            if not pending:
                return all(o.attempts[-1].outcome == OK for o in ops)
            if self.abort.is_set() or time.monotonic() - first > self.plan.retry_budget_s:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        return True

    def _attempt(self, stub: Any, ops: Sequence[Op]) -> None:
        plan, t0 = self.plan, time.monotonic()
        self.calls += 1
        wait = {}
        if plan.ack_level == ppb.ACK_LEVEL_KAFKA:
            wait["kafka_wait"] = duration(plan.kafka_wait_s)
        try:
            if len(ops) == 1:
                request = ppb.PublishRequest(event=self._event(ops[0]), ack_level=plan.ack_level,
                                             **wait)  # fmt: skip
                stub.Publish(request, timeout=plan.attempt_timeout_s)
                self.history.attempt(ops[0], Attempt(OK, "OK", t0, time.monotonic()))
                return
            batch = ppb.PublishBatchRequest(
                events=[self._event(o) for o in ops], ack_level=plan.ack_level, **wait
            )
            reply = stub.PublishBatch(batch, timeout=plan.attempt_timeout_s)
        except grpc.RpcError as error:
            outcome, code, message = classify(error)
            for o in ops:
                self.history.attempt(o, Attempt(outcome, code, t0, time.monotonic(), message))
            return
        for o, entry in zip(ops, reply.entries, strict=True):
            if entry.WhichOneof("outcome") == "result":
                self.history.attempt(o, Attempt(OK, "OK", t0, time.monotonic()))
            else:
                code = code_name(entry.error.code)
                outcome = FAIL if code in DEFINITE else UNKNOWN
                self.history.attempt(
                    o, Attempt(outcome, code, t0, time.monotonic(), entry.error.message)
                )


def code_name(value: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == value), f"CODE_{value}")


@dataclass
class SubscribePlan:
    """How one subscriber stream behaves."""

    subscription: str
    topics: Sequence[str]
    lease_s: float = 10.0
    max_outstanding: int = 500


class Subscriber(threading.Thread):
    """Keeps one Subscribe stream open and acks everything; override `handle` to misbehave."""

    def __init__(self, address: str, history: History, plan: SubscribePlan, name: str) -> None:
        super().__init__(name=f"sub-{name}", daemon=True)
        self.address, self.history, self.plan = address, history, plan
        self.stop_event = threading.Event()
        self.last_delivery = time.monotonic()
        self.opened = 0
        self.errors: dict[str, int] = {}
        self._call: Any = None
        self._requests: queue.SimpleQueue[spb.SubscribeRequest | None] = queue.SimpleQueue()
        self.pending_acks: dict[str, str] = {}  # ack id -> event id, awaiting a result

    def run(self) -> None:
        chan = channel(self.address)
        stub = subscriber_pb2_grpc.SubscriberStub(chan)
        try:
            while not self.stop_event.is_set():
                try:
                    self._session(stub)
                except grpc.RpcError as error:
                    name = error.code().name if error.code() else "UNKNOWN"
                    self.errors[name] = self.errors.get(name, 0) + 1
                if not self.stop_event.is_set():
                    time.sleep(0.2)
        finally:
            chan.close()

    def stop(self) -> None:
        self.stop_event.set()
        call = self._call
        if call is not None:
            call.cancel()

    def open_request(self) -> spb.SubscribeRequest:
        lease = duration(self.plan.lease_s)
        return spb.SubscribeRequest(open=spb.OpenSubscription(
            subscription=self.plan.subscription, topics=list(self.plan.topics),
            lease_duration=lease, max_outstanding_events=self.plan.max_outstanding,
        ))  # fmt: skip

    def _session(self, stub: Any) -> None:
        requests: queue.SimpleQueue[spb.SubscribeRequest | None] = queue.SimpleQueue()
        self._requests = requests
        self.pending_acks = {}

        def outgoing() -> Iterator[spb.SubscribeRequest]:
            yield self.open_request()
            while (item := requests.get()) is not None:
                yield item

        call = stub.Subscribe(outgoing())
        self._call = call
        try:
            if self.stop_event.is_set():
                call.cancel()
            for response in call:
                kind = response.WhichOneof("response")
                if kind == "opened":
                    self.opened += 1
                elif kind == "deliveries":
                    self.last_delivery = time.monotonic()
                    deliveries = list(response.deliveries.deliveries)
                    self.history.delivered(
                        self.plan.subscription, [d.event.event_id for d in deliveries]
                    )
                    self.handle(deliveries)
                elif kind == "ack_results":
                    for result in response.ack_results.results:
                        event_id = self.pending_acks.pop(result.ack_id, None)
                        if event_id is not None:
                            self.on_result(event_id, ack_status(result.status))
                elif kind == "rejected":
                    self.on_rejected(response.rejected.reason)
        finally:
            requests.put(None)
            self._call = None

    # -- behaviour (overridable) -----------------------------------------------------------

    def on_rejected(self, reason: str) -> None:
        """One request of this stream was refused (the stream stays open)."""

    def handle(self, deliveries: list[spb.Delivery]) -> None:
        """Process a batch: the default acks all of it on the stream."""
        self.ack([(d.ack_id, d.event.event_id) for d in deliveries])

    def ack(self, pairs: Sequence[tuple[str, str]]) -> None:
        if not pairs:
            return
        for ack_id, event_id in pairs:
            self.pending_acks[ack_id] = event_id
        self.history.ack_sent(self.plan.subscription, [e for _, e in pairs])
        self.send(spb.SubscribeRequest(ack=spb.AckIds(ack_ids=[a for a, _ in pairs])))

    def send(self, request: spb.SubscribeRequest) -> None:
        self._requests.put(request)

    def on_result(self, event_id: str, status: str) -> None:
        self.history.ack_result(self.plan.subscription, event_id, status)

    def idle(self) -> bool:
        """True when every ack sent on the live stream has its result."""
        return not self.pending_acks
