"""An in-process fake Ferry (a gRPC server in this process) answering from a script."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import NoReturn, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ferry_client._gen.ferry.v1 import (
    publisher_pb2,
    publisher_pb2_grpc,
    subscriber_pb2,
    subscriber_pb2_grpc,
)


def status(
    code: grpc.StatusCode,
    reason: str | None = None,
    retry_after: float | None = None,
    extra: list[Message] | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status as Ferry sends it: ErrorInfo, RetryInfo and other details."""
    details: list[Message] = []
    if reason is not None:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain="ferry.v1"))
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    out = status_pb2.Status(code=code.value[0], message=f"fake {code.name}")
    for d in details + (extra or []):
        packed = any_pb2.Any()
        packed.Pack(d)
        out.details.append(packed)
    return out


# One scripted answer: a Status to fail with, a number of seconds to stall first, or None (OK).
Step: TypeAlias = status_pb2.Status | float | None


StreamScript = Callable[
    [Iterator[publisher_pb2.PublishStreamRequest], grpc.ServicerContext],
    Iterator[publisher_pb2.PublishStreamResponse],
]


@dataclass
class FakePublisher(publisher_pb2_grpc.PublisherServicer):
    """Publish and PublishBatch answer from `script`; each PublishStream call runs the next
    of `stream_scripts` (the last one repeats; none: UNIMPLEMENTED)."""

    script: list[Step] = field(default_factory=list)
    requests: list[publisher_pb2.PublishRequest] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    stream_scripts: list[StreamScript] = field(default_factory=list)
    stream_calls: int = 0

    def _step(self, context: grpc.ServicerContext) -> None:
        self.times.append(time.monotonic())
        step = self.script.pop(0) if self.script else None
        if isinstance(step, float):
            time.sleep(step)
        elif step is not None:
            context.abort_with_status(rpc_status.to_status(step))

    def Publish(
        self, request: publisher_pb2.PublishRequest, context: grpc.ServicerContext
    ) -> publisher_pb2.PublishResponse:
        self.requests.append(request)
        self._step(context)
        result = publisher_pb2.PublishResult(event_id=request.event.event_id, sequence=7)
        return publisher_pb2.PublishResponse(result=result)

    def PublishBatch(
        self, request: publisher_pb2.PublishBatchRequest, context: grpc.ServicerContext
    ) -> publisher_pb2.PublishBatchResponse:
        self._step(context)
        response = publisher_pb2.PublishBatchResponse()
        for i, event in enumerate(request.events):
            response.entries.add().result.event_id = event.event_id
            response.entries[-1].result.sequence = i
        return response

    def PublishStream(
        self,
        request_iterator: Iterator[publisher_pb2.PublishStreamRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[publisher_pb2.PublishStreamResponse]:
        if not self.stream_scripts:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "no stream script")
        script = self.stream_scripts[min(self.stream_calls, len(self.stream_scripts) - 1)]
        self.stream_calls += 1
        yield from script(request_iterator, context)


SubscribeScript = Callable[
    [Iterator[subscriber_pb2.SubscribeRequest], grpc.ServicerContext],
    Iterator[subscriber_pb2.SubscribeResponse],
]


@dataclass
class FakeSubscriber(subscriber_pb2_grpc.SubscriberServicer):
    """Each Subscribe call runs the next script; the last one repeats."""

    scripts: list[SubscribeScript]
    calls: int = 0

    def Subscribe(
        self,
        request_iterator: Iterator[subscriber_pb2.SubscribeRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[subscriber_pb2.SubscribeResponse]:
        script = self.scripts[min(self.calls, len(self.scripts) - 1)]
        self.calls += 1
        yield from script(request_iterator, context)

    def _unimplemented(self, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "the client uses the stream")

    def Ack(self, request: object, context: grpc.ServicerContext) -> NoReturn:
        self._unimplemented(context)

    def Nack(self, request: object, context: grpc.ServicerContext) -> NoReturn:
        self._unimplemented(context)

    def ExtendLease(self, request: object, context: grpc.ServicerContext) -> NoReturn:
        self._unimplemented(context)


class FakeServer:
    def __init__(self, publisher: FakePublisher, subscriber: FakeSubscriber | None = None):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        publisher_pb2_grpc.add_PublisherServicer_to_server(publisher, self.server)
        if subscriber is not None:
            subscriber_pb2_grpc.add_SubscriberServicer_to_server(subscriber, self.server)
        self.addr = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.server.stop(grace=None)
