"""One Subscribe stream driven from test code: `StreamClient` and the deliveries it saw.

`StreamClient` runs one Subscribe stream on a synchronous gRPC channel: a generator feeds the
requests from a queue, a reader thread collects deliveries and matches ack results to the
requests that caused them. The proto promises results "in request order", so a result whose
ack ids do not match the oldest pending request is recorded as a protocol violation
(`StreamClient.violations`) and fails the waiter, instead of being silently re-matched.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import grpc

from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from sidecar._gen.ferry.v1 import subscriber_pb2_grpc
from testkit.ferry_process import FerryProcess
from testkit.subscribe_calls import duration

_END = object()


@dataclass
class Received:
    """One delivery as the client saw it, with the monotonic and wall time it arrived."""

    delivery: pb.Delivery
    at: float
    wall: float

    @property
    def lease_deadline(self) -> float:
        """The lease deadline Ferry stated, in wall-clock seconds."""
        return self.delivery.lease_deadline.ToNanoseconds() / 1e9

    @property
    def event_id(self) -> str:
        return self.delivery.event.event_id

    @property
    def ack_id(self) -> str:
        return self.delivery.ack_id

    @property
    def attempt(self) -> int:
        return self.delivery.delivery_attempt

    @property
    def position(self) -> tuple[str, int, int]:
        d = self.delivery
        return (d.event.topic, d.partition, d.offset)


@dataclass
class _Pending:
    kind: str
    ack_ids: list[str]
    future: Future[list[pb.AckIdResult]] = field(default_factory=Future)


class StreamClient:
    """One Subscribe stream, driven from test code (thread-safe)."""

    def __init__(self, channel: grpc.Channel, open_message: pb.OpenSubscription) -> None:
        self.open_message = open_message
        self._stub = subscriber_pb2_grpc.SubscriberStub(channel)
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._inbox: deque[Received] = deque()
        self.received: list[Received] = []
        self.by_ack_id: dict[str, Received] = {}
        self.results: list[pb.AckIdResult] = []
        self.violations: list[str] = []
        self.opened: pb.SubscriptionOpened | None = None
        self.error: grpc.RpcError | None = None
        self.closed = threading.Event()
        self._call: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, first: pb.SubscribeRequest | None = None) -> StreamClient:
        """Send `open` (or `first`) and start reading; does not wait for `opened`."""
        self._requests.put(first or pb.SubscribeRequest(open=self.open_message))
        self._call = self._stub.Subscribe(self._request_iter())
        self._thread = threading.Thread(target=self._read, name="subscribe-reader", daemon=True)
        self._thread.start()
        return self

    def open(self, timeout: float = 30.0) -> StreamClient:
        """Start and wait for `opened`; raises the stream's error if it ended instead."""
        self.start()
        with self._cond:
            self._cond.wait_for(lambda: self.opened is not None or self.closed.is_set(), timeout)
        if self.opened is None:
            if self.error is not None:
                raise self.error
            raise TimeoutError(f"no `opened` within {timeout}s")
        return self

    def cancel(self) -> None:
        """Client-side cancel (the server sees CANCELLED)."""
        if self._call is not None:
            self._call.cancel()
        self.wait_closed(10)

    def half_close(self) -> None:
        self._requests.put(_END)

    def wait_closed(self, timeout: float) -> bool:
        return self.closed.wait(timeout)

    def code(self) -> grpc.StatusCode | None:
        return self.error.code() if self.error is not None else None

    # -- deliveries --------------------------------------------------------------------------

    def take(
        self, timeout: float = 5.0, at_least: int = 1, at_most: int | None = None
    ) -> list[Received]:
        """Deliveries not taken yet: waits up to `timeout` for `at_least` of them."""
        with self._cond:
            self._cond.wait_for(
                lambda: len(self._inbox) >= at_least or self.closed.is_set(), timeout
            )
            count = len(self._inbox) if at_most is None else min(at_most, len(self._inbox))
            return [self._inbox.popleft() for _ in range(count)]

    def wait_received(self, count: int, timeout: float) -> bool:
        """Wait until `count` deliveries arrived in total (taken or not)."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: len(self.received) >= count or self.closed.is_set(), timeout
                )
                and len(self.received) >= count
            )

    def received_count(self) -> int:
        with self._cond:
            return len(self.received)

    # -- acks over the stream ----------------------------------------------------------------

    def ack_async(self, ack_ids: Iterable[str]) -> Future[list[pb.AckIdResult]]:
        ids = list(ack_ids)
        return self._send("ack", ids, pb.SubscribeRequest(ack=pb.AckIds(ack_ids=ids)))

    def nack_async(
        self, ack_ids: Iterable[str], delay_s: float | None = None
    ) -> Future[list[pb.AckIdResult]]:
        ids = list(ack_ids)
        nack = pb.NackIds(ack_ids=ids)
        if delay_s is not None:
            nack.redelivery_delay.CopyFrom(duration(delay_s))
        return self._send("nack", ids, pb.SubscribeRequest(nack=nack))

    def extend_async(self, ack_ids: Iterable[str], lease_s: float) -> Future[list[pb.AckIdResult]]:
        ids = list(ack_ids)
        extend = pb.ExtendIds(ack_ids=ids, lease_duration=duration(lease_s))
        return self._send("extend", ids, pb.SubscribeRequest(extend=extend))

    def ack(self, ack_ids: Iterable[str], timeout: float = 10.0) -> list[pb.AckIdResult]:
        return self.ack_async(ack_ids).result(timeout)

    def nack(
        self, ack_ids: Iterable[str], delay_s: float | None = None, timeout: float = 10.0
    ) -> list[pb.AckIdResult]:
        return self.nack_async(ack_ids, delay_s).result(timeout)

    def extend(
        self, ack_ids: Iterable[str], lease_s: float, timeout: float = 10.0
    ) -> list[pb.AckIdResult]:
        return self.extend_async(ack_ids, lease_s).result(timeout)

    def send_raw(self, request: pb.SubscribeRequest) -> None:
        """Send a request without expecting a result (to provoke errors)."""
        self._requests.put(request)

    # -- internals ---------------------------------------------------------------------------

    def _send(self, kind: str, ids: list[str], request: pb.SubscribeRequest) -> Future[Any]:
        pending = _Pending(kind, ids)
        with self._cond:
            if self.closed.is_set():
                pending.future.set_exception(RuntimeError(f"stream closed: {self.error}"))
                return pending.future
            self._pending.append(pending)
            self._requests.put(request)
        return pending.future

    def _request_iter(self) -> Iterator[pb.SubscribeRequest]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            assert isinstance(item, pb.SubscribeRequest)
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._on_response(response)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self._requests.put(_END)
            with self._cond:
                self.closed.set()
                for pending in self._pending:
                    if not pending.future.done():
                        pending.future.set_exception(RuntimeError(f"stream ended: {self.error}"))
                self._pending.clear()
                self._cond.notify_all()

    def _on_response(self, response: pb.SubscribeResponse) -> None:
        kind = response.WhichOneof("response")
        now, wall = time.monotonic(), time.time()
        with self._cond:
            if kind == "opened":
                self.opened = response.opened
            elif kind == "deliveries":
                for delivery in response.deliveries.deliveries:
                    received = Received(delivery, now, wall)
                    self.received.append(received)
                    self.by_ack_id[delivery.ack_id] = received
                    self._inbox.append(received)
            elif kind == "ack_results":
                results = list(response.ack_results.results)
                self.results.extend(results)
                got = [r.ack_id for r in results]
                pending = self._pending.popleft() if self._pending else None
                if pending is None or pending.ack_ids != got:
                    problem = (
                        f"ack results out of request order: got {got[:3]}..., expected "
                        f"{pending.ack_ids[:3] if pending else None}..."
                    )
                    self.violations.append(problem)
                    if pending is not None:
                        pending.future.set_exception(AssertionError(problem))
                else:
                    pending.future.set_result(results)
            self._cond.notify_all()


def open_stream(
    ferry: FerryProcess, message: pb.OpenSubscription, timeout: float = 30.0
) -> StreamClient:
    return StreamClient(ferry.channel(), message).open(timeout)
