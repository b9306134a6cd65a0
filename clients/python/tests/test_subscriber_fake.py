"""The subscriber loop against an in-process fake server: reconnect, nack, extend, clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_status import rpc_status

from ferry_client import FerryError, Message, Subscriber
from ferry_client._gen.ferry.v1 import subscriber_pb2 as pb
from tests.fake import FakePublisher, FakeServer, FakeSubscriber, status

Requests = Iterator[pb.SubscribeRequest]
Responses = Iterator[pb.SubscribeResponse]


def unavailable(requests: Requests, context: grpc.ServicerContext) -> Responses:
    next(requests)
    context.abort_with_status(
        rpc_status.to_status(status(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", 0.1))
    )
    yield from ()


class Recorder:
    """A working stream: delivers a1 and a2, answers every request, records them all."""

    def __init__(self) -> None:
        self.requests: list[pb.SubscribeRequest] = []
        self.cancelled = threading.Event()

    def ids(self, kind: str) -> list[str]:
        return [
            i
            for r in self.requests
            if r.WhichOneof("request") == kind
            for i in getattr(r, kind).ack_ids
        ]

    def __call__(self, requests: Requests, context: grpc.ServicerContext) -> Responses:
        context.add_callback(self.cancelled.set)
        assert next(requests).WhichOneof("request") == "open"
        opened = pb.SubscriptionOpened(subscription="s")
        opened.lease_duration.FromSeconds(1)
        yield pb.SubscribeResponse(opened=opened)
        deliveries = pb.Deliveries()
        for ack_id in ("a1", "a2"):
            d = deliveries.deliveries.add(ack_id=ack_id, delivery_attempt=1)
            d.event.event_id, d.event.topic, d.event.payload = f"e-{ack_id}", "t", b"x"
        yield pb.SubscribeResponse(deliveries=deliveries)
        for request in requests:
            self.requests.append(request)
            kind = request.WhichOneof("request") or "none"
            results = pb.AckResults()
            for ack_id in getattr(request, kind).ack_ids:
                results.results.add(ack_id=ack_id, status=pb.ACK_ID_STATUS_APPLIED)
            yield pb.SubscribeResponse(ack_results=results)
        self.cancelled.wait(10)  # half-closed: deliveries could go on; the client cancels


def test_reconnects_nacks_extends_and_stops_cleanly() -> None:
    recorder = Recorder()
    server = FakeServer(FakePublisher(), FakeSubscriber([unavailable, recorder]))
    started, failed = threading.Event(), threading.Event()

    def handler(message: Message) -> None:
        if message.event_id == "e-a2":
            failed.set()
            raise RuntimeError("fails")
        started.set()
        time.sleep(1.3)  # past the 1 s lease: needs extensions

    subscriber = Subscriber(handler, "s", ["t"], addr=server.addr, nack_delay=2.5).start()
    try:
        assert started.wait(10)
        assert failed.wait(10)
        begin = time.monotonic()
        subscriber.stop()
        assert time.monotonic() - begin < 5
        assert subscriber.wait(0)
    finally:
        server.stop()
    assert recorder.ids("ack") == ["a1"]
    assert recorder.ids("nack") == ["a2"]
    nack = next(r.nack for r in recorder.requests if r.WhichOneof("request") == "nack")
    assert nack.redelivery_delay.ToMilliseconds() == 2500
    assert "a1" in recorder.ids("extend")
    assert recorder.cancelled.is_set()


def test_failed_precondition_is_surfaced() -> None:
    def conflict(requests: Requests, context: grpc.ServicerContext) -> Responses:
        next(requests)
        error = status(grpc.StatusCode.FAILED_PRECONDITION, "SUBSCRIPTION_SETTINGS_CONFLICT")
        context.abort_with_status(rpc_status.to_status(error))
        yield from ()

    fake = FakeSubscriber([unavailable, conflict])
    server = FakeServer(FakePublisher(), fake)
    subscriber = Subscriber(lambda m: None, "s", ["t"], addr=server.addr).start()
    try:
        with pytest.raises(FerryError) as caught:
            subscriber.wait(10)
    finally:
        subscriber.stop()
        server.stop()
    assert caught.value.reason == "SUBSCRIPTION_SETTINGS_CONFLICT"
    assert fake.calls == 2
