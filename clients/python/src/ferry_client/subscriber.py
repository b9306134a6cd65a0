"""Subscriber: a handler per delivery on a thread pool; ack on return, nack on exception.

One thread reads the Subscribe stream and reconnects with backoff when it ends; handlers
run on `max_concurrency` threads; a per-stream thread extends the leases of deliveries
still held (queued or running) every half lease.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf import duration_pb2

from ferry_client._channel import open_channel
from ferry_client._gen.ferry.v1 import subscriber_pb2 as pb
from ferry_client._gen.ferry.v1 import subscriber_pb2_grpc
from ferry_client._retry import Backoff
from ferry_client.credentials import Credentials
from ferry_client.errors import FerryError

log = logging.getLogger("ferry_client")
OK_STATUSES = (pb.ACK_ID_STATUS_APPLIED, pb.ACK_ID_STATUS_ALREADY_ACKED)
FATAL_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
MAX_IDS = 10_000  # per AckIds / ExtendIds message


class StartPosition(enum.IntEnum):
    EARLIEST = pb.START_POSITION_EARLIEST
    LATEST = pb.START_POSITION_LATEST


class DeliveryOrder(enum.IntEnum):
    UNORDERED = pb.DELIVERY_ORDER_UNORDERED
    PER_KEY = pb.DELIVERY_ORDER_PER_KEY


@dataclass(frozen=True)
class Message:
    """One delivery, as the handler sees it."""

    event_id: str
    topic: str
    key: bytes | None
    payload: bytes | None
    headers: list[tuple[str, bytes | None]]
    partition: int
    offset: int
    delivery_attempt: int
    publish_time: datetime | None
    ack_id: str
    delivery: pb.Delivery  # everything else (kafka_time, lease_deadline, ...)

    @classmethod
    def of(cls, d: pb.Delivery) -> Message:
        e = d.event
        return cls(
            event_id=e.event_id,
            topic=e.topic,
            key=e.key if e.HasField("key") else None,
            payload=e.payload if e.HasField("payload") else None,
            headers=[(h.key, h.value if h.HasField("value") else None) for h in e.headers],
            partition=d.partition,
            offset=d.offset,
            delivery_attempt=d.delivery_attempt,
            publish_time=e.publish_time.ToDatetime(UTC) if e.HasField("publish_time") else None,
            ack_id=d.ack_id,
            delivery=d,
        )


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


class _Stream:
    """One Subscribe call: its request queue, the ack ids it holds, its answers."""

    def __init__(self, stub: subscriber_pb2_grpc.SubscriberStub, open: pb.OpenSubscription):
        self._requests: queue.SimpleQueue[pb.SubscribeRequest | None] = queue.SimpleQueue()
        self._requests.put(pb.SubscribeRequest(open=open))
        self.cond = threading.Condition()
        self.held: set[str] = set()
        self.sent = self.answered = 0  # requests after `open`, and their answers
        self.done_writing = self.ended = False
        self.call = stub.Subscribe(self._generate())

    def _generate(self) -> Iterator[pb.SubscribeRequest]:
        pending: list[pb.SubscribeRequest | None] = []
        while True:
            item = pending.pop() if pending else self._requests.get()
            if item is not None and item.WhichOneof("request") == "ack":
                ids = list(item.ack.ack_ids)  # acks queued together go out as one message
                while len(ids) < MAX_IDS and not pending:
                    try:
                        nxt = self._requests.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is not None and nxt.WhichOneof("request") == "ack":
                        ids.extend(nxt.ack.ack_ids)
                    else:
                        pending.append(nxt)
                item = pb.SubscribeRequest(ack=pb.AckIds(ack_ids=ids))
            with self.cond:
                if item is None:
                    self.done_writing = True
                    self.cond.notify_all()
                    return
                if item.WhichOneof("request") != "open":
                    self.sent += 1
            yield item

    def send(self, request: pb.SubscribeRequest, done_id: str | None = None) -> None:
        with self.cond:
            if done_id is not None:
                self.held.discard(done_id)
            if not self.ended:
                self._requests.put(request)

    def answered_one(self) -> None:
        with self.cond:
            self.answered += 1
            self.cond.notify_all()

    def extend_loop(self, lease: float) -> None:
        while True:
            with self.cond:
                if self.cond.wait_for(lambda: self.ended, timeout=lease / 2):
                    return
                ids = sorted(self.held)
            for i in range(0, len(ids), MAX_IDS):
                extend = pb.ExtendIds(ack_ids=ids[i : i + MAX_IDS], lease_duration=_duration(lease))
                self.send(pb.SubscribeRequest(extend=extend))

    def finish(self, timeout: float) -> None:
        """Half-close, wait for the answers to what was sent, then end the call."""
        self._requests.put(None)
        with self.cond:
            self.cond.wait_for(
                lambda: self.ended or (self.done_writing and self.answered >= self.sent), timeout
            )
        self.call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()
        self._requests.put(None)  # unblocks gRPC's request thread
        self.call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs


class Subscriber:
    """Runs `handler(message)` for every delivery of `subscription` on `topics`.

    Returning acks the delivery; raising nacks it (redelivered after `nack_delay` seconds,
    or the subscription's backoff when None). Handler errors never stop the subscriber.
    Start with `start()`, end with `stop()`; `wait()` blocks until it has stopped and
    raises the FerryError that stopped it (INVALID_ARGUMENT or FAILED_PRECONDITION).
    """

    def __init__(
        self,
        handler: Callable[[Message], object],
        subscription: str,
        topics: Sequence[str],
        *,
        addr: str | None = None,
        channel: grpc.Channel | None = None,
        credentials: Credentials | None = None,
        max_concurrency: int = 16,
        max_outstanding_events: int | None = None,
        lease_duration: float = 30.0,
        nack_delay: float | None = None,
        start_position: StartPosition = StartPosition.EARLIEST,
        delivery_order: DeliveryOrder = DeliveryOrder.UNORDERED,
        dead_letter_topic: str = "",
        max_delivery_attempts: int = 0,
        min_redelivery_backoff: float | None = None,
        max_redelivery_backoff: float | None = None,
    ) -> None:
        self._handler = handler
        self._nack_delay = nack_delay
        self._open = pb.OpenSubscription(
            subscription=subscription,
            topics=topics,
            lease_duration=_duration(lease_duration),
            # Hold a few deliveries per handler thread; the rest go to other streams.
            max_outstanding_events=max_outstanding_events or 4 * max_concurrency,
            start_position=pb.StartPosition.ValueType(start_position),
            delivery_order=pb.DeliveryOrder.ValueType(delivery_order),
            dead_letter_topic=dead_letter_topic,
            max_delivery_attempts=max_delivery_attempts,
        )
        if min_redelivery_backoff is not None:
            self._open.min_redelivery_backoff.CopyFrom(_duration(min_redelivery_backoff))
        if max_redelivery_backoff is not None:
            self._open.max_redelivery_backoff.CopyFrom(_duration(max_redelivery_backoff))
        self._own_channel = channel is None
        self._channel = channel or open_channel(addr, credentials)
        self._stub = subscriber_pb2_grpc.SubscriberStub(self._channel)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="ferry-handler")
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._busy = threading.Condition()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self._thread = threading.Thread(target=self._run, name="ferry-subscriber", daemon=True)
        self.error: FerryError | None = None

    def start(self) -> Subscriber:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Let running handlers finish and their acks reach Ferry, then close the stream."""
        end = time.monotonic() + timeout
        self._stopping.set()  # before reading _stream: _run starts no stream after this
        with self._busy:
            if not self._busy.wait_for(lambda: self._in_flight == 0, timeout):
                log.warning("stop: %d handlers still running", self._in_flight)
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.finish(max(0.0, end - time.monotonic()))
        if self._thread.ident is not None:
            self._thread.join(max(0.0, end - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_channel:
            self._channel.close()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once stopped; raises the FerryError that stopped it, if one did."""
        stopped = self._stopped.wait(timeout)
        if self.error is not None:
            raise self.error
        return stopped

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        backoff = Backoff()
        while True:
            with self._lock:
                if self._stopping.is_set():
                    break
                stream = self._stream = _Stream(self._stub, self._open)
            error: FerryError | None = None
            try:
                for response in stream.call:
                    if self._on_response(stream, response):
                        backoff.reset()
            except grpc.RpcError as rpc_error:
                error = FerryError.from_rpc_error(rpc_error)
            finally:
                stream.end()
            if self._stopping.is_set():
                break
            if error is not None and error.code in FATAL_CODES:
                log.error("subscriber stopped: %s (reason %s)", error, error.reason)
                self.error = error
                self._stopping.set()
                self._stopped.set()
                break
            delay = backoff.next(error.retry_delay if error else None)
            log.warning("stream ended (%s); reconnecting in %.2fs", error or "OK", delay)
            self._stopping.wait(delay)

    def _on_response(self, stream: _Stream, response: pb.SubscribeResponse) -> bool:
        kind = response.WhichOneof("response")
        if kind == "opened":
            lease = response.opened.lease_duration.ToNanoseconds() / 1e9
            threading.Thread(target=stream.extend_loop, args=(lease,), daemon=True).start()
            log.info("subscribed to %s (lease %.1fs)", response.opened.subscription, lease)
            return True
        if kind == "deliveries":
            for delivery in response.deliveries.deliveries:
                if self._stopping.is_set():
                    break  # not taken: its lease returns when the stream ends
                with self._busy:
                    self._in_flight += 1
                with stream.cond:
                    stream.held.add(delivery.ack_id)
                try:
                    self._pool.submit(self._handle, stream, delivery)
                except RuntimeError:  # the pool is shut down: stop() timed out waiting for us
                    self._done()
                    break
        elif kind == "ack_results":
            stream.answered_one()
            for result in response.ack_results.results:
                if result.status not in OK_STATUSES:
                    status = pb.AckIdStatus.Name(result.status)
                    log.warning("ack id %s: %s", result.ack_id, status)
        elif kind == "rejected":
            stream.answered_one()
            failure = response.rejected
            log.warning("request rejected: %s %s", failure.reason, failure.message)
        return False

    def _handle(self, stream: _Stream, delivery: pb.Delivery) -> None:
        try:
            if self._stopping.is_set():
                return  # queued behind the handlers: its lease returns with the stream
            try:
                self._handler(Message.of(delivery))
            except Exception:
                log.exception("handler failed for %s; nacking", delivery.event.event_id)
                nack = pb.NackIds(ack_ids=[delivery.ack_id])
                if self._nack_delay is not None:
                    nack.redelivery_delay.CopyFrom(_duration(self._nack_delay))
                stream.send(pb.SubscribeRequest(nack=nack), done_id=delivery.ack_id)
            else:
                ack = pb.AckIds(ack_ids=[delivery.ack_id])
                stream.send(pb.SubscribeRequest(ack=ack), done_id=delivery.ack_id)
        finally:
            self._done()

    def _done(self) -> None:
        with self._busy:
            self._in_flight -= 1
            self._busy.notify_all()
