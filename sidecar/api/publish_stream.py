"""One PublishStream call: requests read in order, logged in that order, each answered once.

A reader task takes the client's messages one by one and queues each for the
log at once (so the log keeps the stream's order), then starts one task that
awaits the request's answer. Answers go out through one queue; every answer
ready when the stream writes goes into that one response (a commit answers
many requests at once, and one message costs far less than many).
At most MAX_UNANSWERED_REQUESTS requests (or MAX_UNANSWERED_BYTES of events)
wait for an answer; past that the reader stops reading and gRPC's flow
control holds the client. Draining stops the reader: what it read is
answered, then the stream ends UNAVAILABLE (SHUTTING_DOWN).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar.api.publish_results import fill_entries
from sidecar.api.status import code_name, to_failure
from sidecar.errors import FerryError, PublishTimeout, ShuttingDown, UndecodableRequest
from sidecar.model import AckLevel, OutgoingEvent
from sidecar.observability.metrics import PublishMetrics
from sidecar.publish.service import Answer, PublishService

log = structlog.get_logger(__name__)

MAX_UNANSWERED_REQUESTS = 1024
MAX_UNANSWERED_BYTES = 64 * 1024 * 1024
#: The metrics' ack_level label of a stream request's level.
LEVEL_LABELS = {AckLevel.DURABLE: "durable", AckLevel.KAFKA: "kafka"}

#: A stream request's events, their bytes, ack level and Kafka wait, validated (raises
#: InvalidArgument).
Translate = Callable[[pb.PublishStreamRequest], tuple[list[OutgoingEvent], int, AckLevel, float]]


class UnansweredWindow:
    """Requests read but not yet answered, by count and by event bytes."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._requests = 0
        self._bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    def take(self, size: int) -> None:
        self._requests += 1
        self._bytes += size
        if self._requests >= self._max_requests or self._bytes >= self._max_bytes:
            self._room.clear()

    def give_back(self, size: int) -> None:
        self._requests -= 1
        self._bytes -= size
        if self._requests < self._max_requests and self._bytes < self._max_bytes:
            self._room.set()

    async def room(self) -> None:
        """Returns once another request may be read."""
        await self._room.wait()


class PublishStreamCall:
    """The state of one open PublishStream: its reader, its unanswered requests, its answers."""

    def __init__(
        self,
        service: PublishService,
        translate: Translate,
        window: UnansweredWindow | None = None,
        metrics: PublishMetrics | None = None,
    ) -> None:
        self._service = service
        self._translate = translate
        self._metrics = metrics or PublishMetrics()
        self._window = window or UnansweredWindow(MAX_UNANSWERED_REQUESTS, MAX_UNANSWERED_BYTES)
        self._answers: asyncio.Queue[pb.PublishStreamAnswer | None] = asyncio.Queue()
        self._unanswered: set[asyncio.Task[None]] = set()
        self._draining = False
        self._failure: BaseException | None = None

    async def responses(
        self, requests: AsyncIterator[Any]
    ) -> AsyncIterator[pb.PublishStreamResponse]:
        """Every answer, as they come; ends once the client half-closed and all are answered.

        Raises ShuttingDown after the last answer when draining ended the stream.
        """
        if self._service.is_draining:
            raise ShuttingDown("Ferry is shutting down; publish to another instance or retry")
        reader = asyncio.create_task(self._read(requests), name="publish-stream-reader")
        # However the reader ends (even cancelled before it ever ran), the loop below hears of it.
        reader.add_done_callback(lambda _: self._answers.put_nowait(None))
        drain = asyncio.create_task(self._service.draining(), name="publish-stream-drain")
        drain.add_done_callback(lambda done: self._stop_reading(done, reader))
        answers = self._answers
        reading = True
        try:
            # Ends once the reader stopped and every answer was sent: an answer task leaves
            # `_unanswered` and queues its answer in one step, so once `_unanswered` is empty
            # every answer still to send is in the queue (some queued while a response was
            # being written).
            while reading or self._unanswered or not answers.empty():
                batch: list[pb.PublishStreamAnswer] = []
                item = await answers.get()
                while True:
                    if item is None:
                        reading = False
                    else:
                        batch.append(item)
                    if answers.empty():
                        break
                    item = answers.get_nowait()
                if batch:
                    response = pb.PublishStreamResponse()
                    response.answers.extend(batch)
                    yield response
        finally:
            drain.cancel()
            reader.cancel()  # the client went away: what was queued stays logged
        if self._failure is not None:
            raise self._failure
        if self._draining:
            raise ShuttingDown(
                "Ferry is shutting down; every request it read was answered: send the "
                "unanswered ones again (to another instance)"
            )

    def _stop_reading(self, drain: asyncio.Task[None], reader: asyncio.Task[None]) -> None:
        if not drain.cancelled():  # cancelled: the stream ended first
            self._draining = True
            reader.cancel()

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        try:
            async for request in requests:
                if not self._start(request):
                    break
                await self._window.room()
        except asyncio.CancelledError:
            pass  # draining, or the client is gone: answer what was read
        except Exception as exc:  # a bug: answer what was read, then end the stream INTERNAL
            log.exception("publish_stream_failed")
            self._failure = exc

    def _start(self, request: pb.PublishStreamRequest | UndecodableRequest) -> bool:
        """Queue one request for the log and for its answer; False once draining refused it."""
        started = time.perf_counter()
        if isinstance(request, UndecodableRequest):
            self._metrics.refused("unknown", 0, code_name(request), started)
            self._answers.put_nowait(_refused(0, request))
            return True
        try:
            events, size, level, kafka_wait_s = self._translate(request)
            answer = self._service.submit(events, level, kafka_wait_s)
        except ShuttingDown:
            self._draining = True
            return False  # not logged, not answered: the client sends it again
        except FerryError as error:
            label = "kafka" if request.ack_level == pb.ACK_LEVEL_KAFKA else "durable"
            self._metrics.refused(label, len(request.events), code_name(error), started)
            self._answers.put_nowait(_refused(request.request_id, error))
            return True
        self._window.take(size)
        timing = (LEVEL_LABELS[level], len(events), started)
        task = asyncio.create_task(self._answer(request.request_id, answer, size, timing))
        self._unanswered.add(task)
        return True

    async def _answer(
        self, request_id: int, answer: Answer, size: int, timing: tuple[str, int, float]
    ) -> None:
        level, events, started = timing
        try:
            outcomes = await answer
        except Exception as error:  # a FerryError, or a bug (answered INTERNAL by to_failure)
            self._metrics.refused(level, events, code_name(error), started)
            reply = _refused(request_id, error)
        else:
            reply = pb.PublishStreamAnswer(request_id=request_id)
            self._metrics.answered(level, events, fill_entries(reply.entries, outcomes), started)
        finally:
            self._window.give_back(size)
            self._unanswered.discard(asyncio.current_task())
        self._answers.put_nowait(reply)


def _refused(request_id: int, error: Exception) -> pb.PublishStreamAnswer:
    reply = pb.PublishStreamAnswer(request_id=request_id)
    reply.error.CopyFrom(to_failure(error))
    if isinstance(error, PublishTimeout):
        reply.assigned_event_ids.extend(error.event_ids)
    return reply
