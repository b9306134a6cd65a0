"""The retry policy, against an in-process fake server (no Ferry needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

from ferry_client import AsyncFerryPublisher, Event, FerryError, FerryPublisher
from ferry_client._gen.ferry.v1 import publisher_pb2
from tests.fake import FakePublisher, FakeServer, status

C = grpc.StatusCode


@pytest.fixture
def fake() -> Iterator[tuple[FakePublisher, FerryPublisher]]:
    servicer = FakePublisher()
    server = FakeServer(servicer)
    publisher = FerryPublisher(server.addr, deadline=10.0, attempt_timeout=1.0)
    yield servicer, publisher
    publisher.close()
    server.stop()


@pytest.mark.parametrize(
    ("code", "reason", "retryable"),
    [
        (C.UNAVAILABLE, "SHUTTING_DOWN", True),
        (C.UNAVAILABLE, None, True),
        (C.RESOURCE_EXHAUSTED, "LOG_FULL", True),
        (C.RESOURCE_EXHAUSTED, None, False),  # the transport refused an oversized request
        (C.CANCELLED, None, True),
        (C.DEADLINE_EXCEEDED, "LOG_COMMIT_TIMEOUT", True),
        (C.DEADLINE_EXCEEDED, None, True),
        (C.INVALID_ARGUMENT, "FIELD_INVALID", False),
        (C.ALREADY_EXISTS, "EVENT_ID_CONFLICT", False),
        (C.FAILED_PRECONDITION, "NO_DEAD_LETTER_TOPIC", False),
        (C.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND", False),
        (C.INTERNAL, "INTERNAL", False),
        (C.UNKNOWN, None, False),
    ],
)
def test_classification(code: grpc.StatusCode, reason: str | None, retryable: bool) -> None:
    assert FerryError(code, "x", status(code, reason)).retryable is retryable


@pytest.mark.parametrize(
    "code", [C.INVALID_ARGUMENT, C.ALREADY_EXISTS, C.FAILED_PRECONDITION, C.NOT_FOUND, C.INTERNAL]
)
def test_permanent_errors_are_not_retried(
    fake: tuple[FakePublisher, FerryPublisher], code: grpc.StatusCode
) -> None:
    servicer, publisher = fake
    servicer.script = [status(code, "SOME_REASON")]
    with pytest.raises(FerryError) as caught:
        publisher.publish("t", b"p")
    assert caught.value.code is code
    assert caught.value.reason == "SOME_REASON"
    assert len(servicer.requests) == 1


def test_unavailable_honours_retry_info_and_keeps_the_event_id(
    fake: tuple[FakePublisher, FerryPublisher],
) -> None:
    servicer, publisher = fake
    servicer.script = [status(C.UNAVAILABLE, "SHUTTING_DOWN", retry_after=0.5), None]
    result = publisher.publish("t", b"p", key="k")
    assert len(servicer.requests) == 2
    first, second = servicer.requests
    assert first == second  # same event_id, same content
    assert result.event_id == first.event.event_id
    assert servicer.times[1] - servicer.times[0] >= 0.5


def test_resource_exhausted_without_error_info_is_permanent(
    fake: tuple[FakePublisher, FerryPublisher],
) -> None:
    servicer, publisher = fake
    servicer.script = [status(C.RESOURCE_EXHAUSTED)]
    with pytest.raises(FerryError) as caught:
        publisher.publish("t", b"p")
    assert caught.value.code is C.RESOURCE_EXHAUSTED
    assert caught.value.reason is None
    assert len(servicer.requests) == 1


def test_resource_exhausted_with_error_info_is_retried(
    fake: tuple[FakePublisher, FerryPublisher],
) -> None:
    servicer, publisher = fake
    servicer.script = [status(C.RESOURCE_EXHAUSTED, "LOG_FULL", retry_after=0.2), None]
    publisher.publish("t", b"p")
    assert len(servicer.requests) == 2
    assert servicer.times[1] - servicer.times[0] >= 0.2


def test_cancelled_by_the_server_and_attempt_timeout_are_retried(
    fake: tuple[FakePublisher, FerryPublisher],
) -> None:
    servicer, publisher = fake
    servicer.script = [status(C.CANCELLED), 1.5, None]  # 1.5 s stalls past the 1 s attempt
    publisher.publish("t", b"p", event_id="mine")
    assert [r.event.event_id for r in servicer.requests] == ["mine"] * 3


def test_deadline_exceeded_carries_assigned_event_ids(
    fake: tuple[FakePublisher, FerryPublisher],
) -> None:
    servicer, publisher = fake
    assigned = publisher_pb2.AssignedEventIds(event_ids=["a", "b"])
    servicer.script = [status(C.DEADLINE_EXCEEDED, "KAFKA_ACK_TIMEOUT", extra=[assigned])] * 50
    with pytest.raises(FerryError) as caught:
        publisher.publish_batch([Event("t", b"1", event_id="a"), Event("t", b"2")], deadline=0.5)
    assert caught.value.code is C.DEADLINE_EXCEEDED
    assert caught.value.reason == "KAFKA_ACK_TIMEOUT"
    assert caught.value.assigned_event_ids == ["a", "b"]


def test_overall_deadline_ends_the_retries(fake: tuple[FakePublisher, FerryPublisher]) -> None:
    servicer, publisher = fake
    servicer.script = [status(C.UNAVAILABLE, "LOG_WRITE_FAILED")] * 100
    start = time.monotonic()
    with pytest.raises(FerryError) as caught:
        publisher.publish("t", b"p", deadline=1.0)
    # The last attempt's error: the server's, when the deadline fell in a wait between attempts;
    # DEADLINE_EXCEEDED, when it fell during an attempt (one started with little time left).
    assert caught.value.code in (C.UNAVAILABLE, C.DEADLINE_EXCEEDED)
    # 100 scripted failures with backoff outlast the 1 s deadline; the bound leaves room for load.
    assert time.monotonic() - start < 5
    assert 2 <= len(servicer.requests) < 10  # backoff, not a busy loop


def test_bad_request_details_are_decoded(fake: tuple[FakePublisher, FerryPublisher]) -> None:
    from google.rpc import error_details_pb2

    servicer, publisher = fake
    violation = error_details_pb2.BadRequest.FieldViolation(field="event.topic", description="no")
    bad = error_details_pb2.BadRequest(field_violations=[violation])
    servicer.script = [status(C.INVALID_ARGUMENT, "FIELD_INVALID", extra=[bad])]
    with pytest.raises(FerryError) as caught:
        publisher.publish("t", b"p")
    assert caught.value.bad_request is not None
    assert caught.value.bad_request.field_violations[0].field == "event.topic"


def test_batch_ids_are_assigned_once() -> None:
    servicer = FakePublisher(script=[status(C.UNAVAILABLE), None])
    server = FakeServer(servicer)
    try:
        with FerryPublisher(server.addr) as publisher:
            results = publisher.publish_batch([Event("t", b"1"), Event("t", b"2", event_id="x")])
    finally:
        server.stop()
    ids = [r.event_id for r in results]
    assert ids[1] == "x"
    assert len(ids[0]) == 36


def test_async_publisher_retries_with_the_same_event_id() -> None:
    servicer = FakePublisher(script=[status(C.UNAVAILABLE, "SHUTTING_DOWN", retry_after=0.1)])
    server = FakeServer(servicer)

    async def main() -> str:
        async with AsyncFerryPublisher(server.addr) as publisher:
            return (await publisher.publish("t", "p", key=b"k")).event_id

    try:
        event_id = asyncio.run(main())
    finally:
        server.stop()
    assert [r.event.event_id for r in servicer.requests] == [event_id, event_id]


def test_service_config_is_packaged_and_accepted_by_grpc() -> None:
    import json

    from ferry_client import channel_options

    options = dict(channel_options(service_config=True))
    config = json.loads(str(options["grpc.service_config"]))
    assert config["methodConfig"][0]["name"][0]["service"] == "ferry.v1.Publisher"
    servicer = FakePublisher(script=[status(C.UNAVAILABLE)])
    server = FakeServer(servicer)
    try:
        with FerryPublisher(server.addr, service_config=True) as publisher:
            publisher.publish("t", b"p")
    finally:
        server.stop()
    assert len(servicer.requests) == 2  # retried by gRPC's policy or the client's loop
