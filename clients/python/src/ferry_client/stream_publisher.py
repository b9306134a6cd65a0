"""FerryStreamPublisher: many publishes pipelined on one PublishStream, each a Future.

`publish` assigns the event ids, queues the request on the stream and returns a
`concurrent.futures.Future` at once; a reader thread matches Ferry's answers (one or more
per response message) to the requests by request_id and completes their futures. At most
`max_outstanding` requests wait for an answer; `publish` blocks while that window is full.

A refused request with a retryable code (UNAVAILABLE, RESOURCE_EXHAUSTED) is sent again
after its retry_delay (at least the backoff); when the stream ends or breaks, a new one
is opened with backoff and every unanswered request goes out again, in its original
order, with the same event ids (Ferry deduplicates them). A request's `deadline`
bounds all of that, as it bounds the retries of FerryPublisher.

Threads: one manager opens streams and keeps the time (deadlines, retries, reconnects);
one reader per stream reads the answers; gRPC's own thread sends the requests.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future
from typing import Any, cast

import grpc

from ferry_client._channel import open_channel
from ferry_client._gen.ferry.v1 import publisher_pb2 as pb
from ferry_client._gen.ferry.v1 import publisher_pb2_grpc
from ferry_client._retry import Backoff
from ferry_client.credentials import Credentials
from ferry_client.errors import FerryError
from ferry_client.publisher import (
    AckLevel,
    Bytes,
    Event,
    Headers,
    PublishFailure,
    PublishResult,
    _batch_request,
    _entries,
    _result,
)

log = logging.getLogger("ferry_client")

# Codes of a refused request that are sent again (RESOURCE_EXHAUSTED only with a reason).
RETRYABLE_ANSWERS = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
DEFAULT_MAX_OUTSTANDING = 1024
CLOSE_GRACE = 10.0  # seconds close() waits for Ferry to end the half-closed stream

Completion = tuple["Future[Any]", Any, BaseException | None]


class _Request:
    """One request until it is answered: its message, its future, its retry state."""

    __slots__ = ("backoff", "deadline", "future", "last_error", "message", "retry_at", "single")

    def __init__(
        self, message: pb.PublishStreamRequest, future: Future[Any], deadline: float, single: bool
    ) -> None:
        self.message = message
        self.future = future
        self.deadline = deadline  # time.monotonic() after which it fails
        self.single = single  # publish(): one event, its result (or error) alone
        self.backoff = Backoff()
        self.retry_at: float | None = None  # refused, to be sent again at this time
        self.last_error: FerryError | None = None  # why it is not answered yet

    @property
    def event_ids(self) -> list[str]:
        return [event.event_id for event in self.message.events]


class _Stream:
    """One PublishStream call: the queue gRPC's sending thread takes requests from."""

    def __init__(self, stub: publisher_pb2_grpc.PublisherStub) -> None:
        self._queue: queue.SimpleQueue[pb.PublishStreamRequest | None] = queue.SimpleQueue()
        self.sent: dict[int, _Request] = {}  # sent on this stream and not answered on it
        self.half_closed = False
        self.call = stub.PublishStream(self._generate())

    def _generate(self) -> Iterator[pb.PublishStreamRequest]:
        while (message := self._queue.get()) is not None:
            yield message

    def send(self, request: _Request) -> None:
        self.sent[request.message.request_id] = request
        self._queue.put(request.message)

    def half_close(self) -> None:
        self.half_closed = True
        self._queue.put(None)

    def end(self) -> None:
        self._queue.put(None)  # unblocks gRPC's sending thread
        self.call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs


class FerryStreamPublisher:
    """Publishes over one PublishStream; thread-safe. Every publish returns a Future at once.

    The futures hold what FerryPublisher's calls return (`publish`: a PublishResult;
    `publish_batch`: a PublishResult or PublishFailure per event) or raise its FerryError.
    They cannot be cancelled: a request on the wire cannot be taken back.

    `deadline` bounds one request from the moment it enters the window, its retries and
    resends included. `max_outstanding` is the window: how many requests may wait for an
    answer before `publish` blocks. `close()` (or leaving the `with` block) waits for every
    future, then half-closes the stream.
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        channel: grpc.Channel | None = None,
        credentials: Credentials | None = None,
        deadline: float = 60.0,
        ack_level: AckLevel = AckLevel.DURABLE,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
        service_config: bool = False,
    ) -> None:
        if max_outstanding < 1:
            raise ValueError("max_outstanding must be at least 1")
        self.deadline, self.ack_level = deadline, ack_level
        self.max_outstanding = max_outstanding
        self._own_channel = channel is None
        self._channel = channel or open_channel(addr, credentials, service_config)
        self._stub = publisher_pb2_grpc.PublisherStub(self._channel)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # publishers waiting for the window
        self._wake = threading.Condition(self._lock)  # the manager waiting for work or time
        self._ids = itertools.count(1)  # request ids; 0 answers an undecodable message
        self._pending: dict[int, _Request] = {}  # unanswered, in request_id (publish) order
        self._unfinished: set[Future[Any]] = set()  # pending, or answered and completing
        self._deadlines: list[tuple[float, int]] = []  # heaps of (time, request_id)
        self._retries: list[tuple[float, int]] = []
        self._stream: _Stream | None = None
        self._backoff = Backoff()  # between streams; reset by an answer
        self._reconnect_at = 0.0
        self._closing = self._closed = False
        self._inside = threading.local()  # .value: this is one of the publisher's threads
        self._manager = threading.Thread(
            target=self._run, name="ferry-stream-publisher", daemon=True
        )
        self._manager.start()

    @property
    def outstanding(self) -> int:
        """Requests waiting for an answer (or for a retry), at most `max_outstanding`."""
        with self._lock:
            return len(self._pending)

    def publish(
        self,
        topic: str,
        payload: Bytes | None,
        key: Bytes | None = None,
        headers: Headers = (),
        *,
        event_id: str | None = None,
        ack_level: AckLevel | None = None,
        kafka_wait: float | None = None,
        deadline: float | None = None,
    ) -> Future[PublishResult]:
        """Queue one event; the future holds its PublishResult or raises FerryError.

        Blocks only while `max_outstanding` requests wait for an answer.
        """
        event = Event(topic, payload, key, headers, event_id)
        return cast(
            "Future[PublishResult]", self._submit([event], ack_level, kafka_wait, deadline, True)
        )

    def publish_batch(
        self,
        events: Sequence[Event],
        *,
        ack_level: AckLevel | None = None,
        kafka_wait: float | None = None,
        deadline: float | None = None,
    ) -> Future[list[PublishResult | PublishFailure]]:
        """Queue events as one request (logged in one write); a result or failure per event."""
        if not events:
            raise ValueError("publish_batch needs at least one event")
        return cast(
            "Future[list[PublishResult | PublishFailure]]",
            self._submit(events, ack_level, kafka_wait, deadline, False),
        )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every future returned so far is done; TimeoutError after `timeout`."""
        with self._lock:
            waiting = list(self._unfinished)
        _, not_done = futures.wait(waiting, timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} publishes still wait for Ferry's answer")

    def close(self, timeout: float | None = None) -> None:
        """Refuse new publishes, wait for every future, then half-close the stream.

        Futures still waiting after `timeout` fail with FerryError CANCELLED (their events
        may or may not be logged; `assigned_event_ids` says which ids to publish again).
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = self._closing = True
            self._room.notify_all()
            self._wake.notify()
        try:
            self.flush(timeout)
        except TimeoutError:
            self._abandon()
        # Every future is done; give Ferry a moment to end the half-closed stream OK.
        left = CLOSE_GRACE if end is None else max(0.0, min(CLOSE_GRACE, end - time.monotonic()))
        self._manager.join(left)
        if self._manager.is_alive():
            with self._lock:
                stream = self._stream
            if stream is not None:
                stream.end()
            self._manager.join(CLOSE_GRACE)
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> FerryStreamPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The caller's side.

    def _submit(
        self,
        events: Sequence[Event],
        ack_level: AckLevel | None,
        kafka_wait: float | None,
        deadline: float | None,
        single: bool,
    ) -> Future[Any]:
        batch = _batch_request(events, ack_level or self.ack_level, kafka_wait)  # ids, once
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # no cancel(): a sent request stays sent
        with self._lock:
            if not getattr(self._inside, "value", False):  # a done callback must not block
                self._room.wait_for(
                    lambda: self._closing or len(self._pending) < self.max_outstanding
                )
            if self._closing:
                raise RuntimeError("the publisher is closed")
            message = pb.PublishStreamRequest(
                request_id=next(self._ids), events=batch.events, ack_level=batch.ack_level
            )
            if batch.HasField("kafka_wait"):
                message.kafka_wait.CopyFrom(batch.kafka_wait)
            seconds = deadline if deadline is not None else self.deadline
            request = _Request(message, future, time.monotonic() + seconds, single)
            self._pending[message.request_id] = request
            self._unfinished.add(future)
            if (
                self._stream is None
                or not self._deadlines
                or request.deadline < self._next_deadline()
            ):
                self._wake.notify()  # a stream to open, or a deadline to keep sooner
            self._push(self._deadlines, request.deadline, message.request_id)
            if self._stream is not None:
                self._stream.send(request)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[Any]) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def _push(self, heap: list[tuple[float, int]], at: float, request_id: int) -> None:
        heapq.heappush(heap, (at, request_id))
        if len(heap) > 4 * self.max_outstanding + 64:  # drop the entries of answered requests
            heap[:] = [entry for entry in heap if entry[1] in self._pending]
            heapq.heapify(heap)

    # Bookkeeping, under self._lock; completions are run after it is released.

    def _answered(self, request: _Request, outcome: Any, error: BaseException | None) -> Completion:
        del self._pending[request.message.request_id]
        if self._stream is not None:
            self._stream.sent.pop(request.message.request_id, None)
        self._room.notify()
        if self._closing and not self._pending:
            self._wake.notify()
        return request.future, outcome, error

    def _fail(self, request: _Request, error: FerryError, note: str | None = None) -> Completion:
        error = error.copy()  # one exception object per future
        if note is not None:
            error.add_note(note)
        return self._answered(request, None, error)

    def _unknown_outcome(self, error: FerryError, request: _Request) -> FerryError:
        """`error` for a request that may or may not be logged: it names the ids to reuse."""
        error = error.copy()
        error.assigned_event_ids = request.event_ids
        return error

    # The manager thread: opens streams, sends due retries, fails requests past their deadline.

    def _run(self) -> None:
        self._inside.value = True
        while True:
            open_stream = False
            with self._lock:
                now = time.monotonic()
                done = self._expire(now)
                self._send_due_retries(now)
                if self._stream is None and self._pending:
                    open_stream = now >= self._reconnect_at
                elif self._closing and not self._pending:
                    if self._stream is None:
                        break
                    if not self._stream.half_closed:
                        self._stream.half_close()  # Ferry ends it OK once all is answered
                if not open_stream and not done:
                    self._wake.wait(self._until_next(now))
            _complete(done)
            if open_stream:
                self._open()
        _complete(done)

    def _next_deadline(self) -> float:
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)  # answered: not a time to wake up for
        return self._deadlines[0][0] if self._deadlines else float("inf")

    def _next_retry(self) -> float:
        while self._retries:
            at, request_id = self._retries[0]
            request = self._pending.get(request_id)
            if request is not None and request.retry_at == at:
                return at
            heapq.heappop(self._retries)
        return float("inf")

    def _until_next(self, now: float) -> float | None:
        times = [t for t in (self._next_deadline(), self._next_retry()) if t != float("inf")]
        if self._stream is None and self._pending:
            times.append(self._reconnect_at)
        return max(0.0, min(times) - now) if times else None

    def _expire(self, now: float) -> list[Completion]:
        done: list[Completion] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            request = self._pending.get(request_id)
            if request is None:
                continue
            note = "the request's deadline passed"
            if self._stream is not None and request_id in self._stream.sent:
                error = FerryError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "no answer before the request's deadline: its events may or may not be "
                    "logged; publish them again with the same event ids",
                )
                done.append(self._fail(request, self._unknown_outcome(error, request)))
            elif request.last_error is not None:
                done.append(self._fail(request, request.last_error, f"gave up: {note}"))
            else:
                error = FerryError(grpc.StatusCode.DEADLINE_EXCEEDED, f"not sent: {note}")
                done.append(self._fail(request, error))
        return done

    def _send_due_retries(self, now: float) -> None:
        while self._retries and self._retries[0][0] <= now:
            at, request_id = heapq.heappop(self._retries)
            request = self._pending.get(request_id)
            if request is None or request.retry_at != at:
                continue
            request.retry_at = None
            if self._stream is not None:
                self._stream.send(request)
            # else: the next stream sends it with the other unanswered requests

    def _open(self) -> None:
        stream = _Stream(self._stub)
        with self._lock:
            self._stream = stream
            for request in self._pending.values():  # request_id order: the original order
                if request.retry_at is None:
                    stream.send(request)
            resent = len(stream.sent)
        if resent:
            log.debug("publish stream opened; %d unanswered requests sent", resent)
        threading.Thread(
            target=self._read, args=(stream,), name="ferry-stream-reader", daemon=True
        ).start()

    # The reader thread of one stream.

    def _read(self, stream: _Stream) -> None:
        self._inside.value = True
        error: FerryError | None = None
        try:
            for response in stream.call:
                _complete(self._on_response(stream, response))
        except grpc.RpcError as rpc_error:
            error = FerryError.from_rpc_error(rpc_error)
        except Exception:  # a bug: fail what this stream holds rather than hang
            log.exception("publish stream reader failed")
            error = FerryError(grpc.StatusCode.INTERNAL, "the client's stream reader failed")
        finally:
            stream.end()
        _complete(self._on_stream_end(stream, error))

    def _on_response(self, stream: _Stream, response: pb.PublishStreamResponse) -> list[Completion]:
        """One message of Ferry's: the answers to one or more requests (ready together)."""
        done: list[Completion] = []
        with self._lock:
            self._backoff.reset()
            for answer in response.answers:
                done.extend(self._on_answer(stream, answer))
        return done

    def _on_answer(self, stream: _Stream, answer: pb.PublishStreamAnswer) -> list[Completion]:
        request = stream.sent.pop(answer.request_id, None)
        if request is None:  # request_id 0: Ferry could not decode a message (a bug)
            log.error("answer to no request (request_id %d): %s", answer.request_id, answer)
            return []
        if not answer.HasField("error"):
            return [self._answered(request, *self._outcome(request, answer))]
        error = FerryError.from_failure(answer.error, answer.assigned_event_ids)
        if error.code not in RETRYABLE_ANSWERS or not error.retryable:
            return [self._answered(request, None, error)]
        delay = request.backoff.next(error.retry_delay)  # retry_delay is a floor
        now = time.monotonic()
        if now + delay >= request.deadline:
            return [self._fail(request, error, "gave up: the request's deadline passed")]
        log.info(
            "request %d refused (%s, %s); sending it again in %.2fs",
            answer.request_id,
            error.code.name,
            error.reason,
            delay,
        )
        request.last_error = error
        request.retry_at = now + delay
        self._push(self._retries, request.retry_at, answer.request_id)
        self._wake.notify()
        return []

    def _outcome(
        self, request: _Request, answer: pb.PublishStreamAnswer
    ) -> tuple[Any, BaseException | None]:
        if len(answer.entries) != len(request.message.events):
            return None, FerryError(
                grpc.StatusCode.INTERNAL,
                f"{len(answer.entries)} entries answer {len(request.message.events)} events",
            )
        entries = _entries(request.message.events, answer.entries)
        if not request.single:
            return entries, None
        entry = answer.entries[0]
        if entry.HasField("error"):  # e.g. EVENT_ID_CONFLICT: Publish raises it too
            return None, FerryError.from_failure(entry.error)
        return _result(entry.result), None

    def _on_stream_end(self, stream: _Stream, error: FerryError | None) -> list[Completion]:
        with self._lock:
            if self._stream is stream:
                self._stream = None
            self._wake.notify()
            orphans = [r for r in stream.sent.values() if r.message.request_id in self._pending]
            if error is None and stream.half_closed:
                return []  # close(): every request was answered, Ferry ended the stream OK
            cause = error or FerryError(
                grpc.StatusCode.UNAVAILABLE, "the stream ended before every request was answered"
            )
            delay = self._backoff.next(cause.retry_delay)  # RetryInfo is a floor
            self._reconnect_at = time.monotonic() + delay  # no hot loop against a failing Ferry
            if not orphans:
                log.info("publish stream ended (%s)", cause)
                return []
            if not cause.retryable:
                log.error("publish stream failed: %s; %d requests fail", cause, len(orphans))
                return [self._fail(r, self._unknown_outcome(cause, r)) for r in orphans]
            log.warning(
                "publish stream ended (%s, %s); %d unanswered requests go out again in %.2fs",
                cause.code.name,
                cause.reason,
                len(orphans),
                delay,
            )
            done: list[Completion] = []
            for request in orphans:
                request.last_error = cause
                if self._reconnect_at >= request.deadline:
                    note = "gave up: the request's deadline comes before the next stream"
                    done.append(self._fail(request, self._unknown_outcome(cause, request), note))
            return done

    def _abandon(self) -> None:
        """close() timed out: fail what is still unanswered and end the stream."""
        cancelled = FerryError(
            grpc.StatusCode.CANCELLED,
            "the publisher closed before Ferry answered: the events may or may not be logged",
        )
        with self._lock:
            stream = self._stream
            done = [
                self._fail(request, self._unknown_outcome(cancelled, request))
                for request in list(self._pending.values())
            ]
        _complete(done)
        if stream is not None:
            stream.end()


def _complete(done: list[Completion]) -> None:
    """Complete futures outside the lock: their callbacks may publish again."""
    for future, outcome, error in done:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)
