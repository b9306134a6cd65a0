"""FerryError → gRPC status mapping, directly and through a real in-process grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from sidecar._gen.ferry.v1 import publisher_pb2
from sidecar.api.status import ErrorMappingInterceptor, code_of, to_failure, to_status
from sidecar.errors import (
    ERROR_DOMAIN,
    ConfigError,
    DiskFull,
    EventIdConflict,
    FailedPrecondition,
    FerryError,
    InvalidArgument,
    KafkaWaitTimeout,
    LogCommitTimeout,
    NoDeadLetterTopic,
    NotFound,
    PermissionDenied,
    PublishTimeout,
    ResourceExhausted,
    SettingsConflict,
    ShuttingDown,
    StorageFailure,
    TooManyStreams,
    TooManySubscriptions,
    TopicNotAllowed,
    TopicShareFull,
    Unauthenticated,
    Unavailable,
    UndecodableRequest,
    WalFull,
)

CASES: list[tuple[FerryError, int, str]] = [
    (
        InvalidArgument("events[3].topic", "must not be empty"),
        code_pb2.INVALID_ARGUMENT,
        "FIELD_INVALID",
    ),
    (TopicNotAllowed("event.topic", "not allowed"), code_pb2.INVALID_ARGUMENT, "TOPIC_NOT_ALLOWED"),
    (
        UndecodableRequest("ferry.v1.PublishRequest"),
        code_pb2.INVALID_ARGUMENT,
        "REQUEST_UNDECODABLE",
    ),
    (Unauthenticated(), code_pb2.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (PermissionDenied("not yours"), code_pb2.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (EventIdConflict("id reused"), code_pb2.ALREADY_EXISTS, "EVENT_ID_CONFLICT"),
    (NotFound("no such subscription"), code_pb2.NOT_FOUND, "SUBSCRIPTION_NOT_FOUND"),
    (FailedPrecondition("not now"), code_pb2.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (
        SettingsConflict("other settings"),
        code_pb2.FAILED_PRECONDITION,
        "SUBSCRIPTION_SETTINGS_CONFLICT",
    ),
    (NoDeadLetterTopic("none"), code_pb2.FAILED_PRECONDITION, "NO_DEAD_LETTER_TOPIC"),
    (ResourceExhausted("busy", 2.0), code_pb2.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
    (WalFull("log full", 1.0), code_pb2.RESOURCE_EXHAUSTED, "LOG_FULL"),
    (TopicShareFull("share full", 1.0), code_pb2.RESOURCE_EXHAUSTED, "TOPIC_SHARE_FULL"),
    (DiskFull("disk full", 5.0), code_pb2.RESOURCE_EXHAUSTED, "DISK_FULL"),
    (TooManyStreams("too many", 0.25), code_pb2.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS"),
    (TooManySubscriptions("too many"), code_pb2.RESOURCE_EXHAUSTED, "TOO_MANY_SUBSCRIPTIONS"),
    (PublishTimeout("late", ["a"]), code_pb2.DEADLINE_EXCEEDED, "INTERNAL"),
    (KafkaWaitTimeout("still delivered", ["a"]), code_pb2.DEADLINE_EXCEEDED, "KAFKA_ACK_TIMEOUT"),
    (LogCommitTimeout("maybe", ["a", "b"]), code_pb2.DEADLINE_EXCEEDED, "LOG_COMMIT_TIMEOUT"),
    (Unavailable("later"), code_pb2.UNAVAILABLE, "UNAVAILABLE"),
    (ShuttingDown("draining"), code_pb2.UNAVAILABLE, "SHUTTING_DOWN"),
    (StorageFailure("io error"), code_pb2.UNAVAILABLE, "LOG_WRITE_FAILED"),
]


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_cases_cover_every_ferry_error_subclass() -> None:
    covered = {type(error) for error, _, _ in CASES}
    in_errors_module = {c for c in all_subclasses(FerryError) if c.__module__ == "sidecar.errors"}
    assert in_errors_module <= covered, in_errors_module - covered


@pytest.mark.parametrize(("error", "code", "reason"), CASES, ids=lambda v: type(v).__name__)
def test_every_ferry_error_has_its_code_and_error_info(
    error: FerryError, code: int, reason: str
) -> None:
    assert code_of(error) == code
    status = to_status(error)
    assert status.code == code
    assert status.message == str(error)
    [info] = [d for d in unpack(status) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert (info.reason, info.domain) == (reason, ERROR_DOMAIN)
    failure = to_failure(error)
    assert (failure.code, failure.reason, failure.message) == (code, reason, str(error))


def test_reasons_are_distinct_per_class() -> None:
    reasons = [reason for _, _, reason in CASES if reason != "INTERNAL"]
    assert len(reasons) == len(set(reasons))


def test_failure_of_an_invalid_field_names_it() -> None:
    assert to_failure(InvalidArgument("ack.ack_ids", "too many")).field == "ack.ack_ids"


def test_failure_carries_the_retry_delay_where_a_retry_helps() -> None:
    assert to_failure(WalFull("full", 2.5)).retry_delay.ToNanoseconds() == 2_500_000_000
    assert to_failure(ShuttingDown("bye")).retry_delay.ToNanoseconds() == 1_000_000_000
    assert not to_failure(InvalidArgument("events", "empty")).HasField("retry_delay")


def test_failure_of_a_bug_hides_its_text() -> None:
    failure = to_failure(KeyError("secret"))
    assert failure.code == code_pb2.INTERNAL
    assert failure.reason == "INTERNAL"
    assert "secret" not in failure.message


@pytest.mark.parametrize(
    "error", [ValueError("x"), RuntimeError("y"), ConfigError("z"), FerryError("base")]
)
def test_anything_outside_the_tree_is_internal(error: Exception) -> None:
    assert code_of(error) == code_pb2.INTERNAL


def unpack(status: status_pb2.Status) -> list[Any]:
    details: list[Any] = []
    for packed in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ErrorInfo,
            publisher_pb2.AssignedEventIds,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
    assert len(details) == len(status.details), "unexpected detail type"
    return details


def without_error_info(details: list[Any]) -> list[Any]:
    return [d for d in details if not isinstance(d, error_details_pb2.ErrorInfo)]


def test_invalid_argument_carries_bad_request_with_the_field() -> None:
    status = to_status(InvalidArgument("events[3].topic", "must not be empty"))
    [detail] = without_error_info(unpack(status))
    assert isinstance(detail, error_details_pb2.BadRequest)
    [violation] = detail.field_violations
    assert violation.field == "events[3].topic"
    assert violation.description == "must not be empty"


@pytest.mark.parametrize(
    ("error", "nanos"),
    [
        (ResourceExhausted("busy", 2.5), 2_500_000_000),
        (WalFull("full"), 1_000_000_000),
        (DiskFull("disk", 5.0), 5_000_000_000),
        (TooManyStreams("streams", 0.25), 250_000_000),
        (ShuttingDown("draining"), 1_000_000_000),
        (StorageFailure("io"), 1_000_000_000),
    ],
)
def test_retryable_errors_carry_retry_info(
    error: ResourceExhausted | Unavailable, nanos: int
) -> None:
    [detail] = without_error_info(unpack(to_status(error)))
    assert isinstance(detail, error_details_pb2.RetryInfo)
    assert detail.retry_delay.ToNanoseconds() == nanos


@pytest.mark.parametrize(
    "error", [KafkaWaitTimeout("x", ["a", "b"]), LogCommitTimeout("x", ["a", "b"])]
)
def test_publish_timeouts_carry_the_event_ids(error: PublishTimeout) -> None:
    [detail] = without_error_info(unpack(to_status(error)))
    assert isinstance(detail, publisher_pb2.AssignedEventIds)
    assert list(detail.event_ids) == ["a", "b"]


@pytest.mark.parametrize(
    "error", [EventIdConflict("x"), NotFound("x"), FailedPrecondition("x"), NoDeadLetterTopic("x")]
)
def test_other_errors_carry_only_error_info(error: FerryError) -> None:
    assert without_error_info(unpack(to_status(error))) == []


# -- through a real grpc.aio server on loopback -------------------------------------------------


async def fail_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise InvalidArgument("events[3].topic", "must not be empty")


async def crash_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise ValueError("secret internal detail 0xDEADBEEF")


async def echo_unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def exhausted_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"first"
    raise WalFull("the log is full", retry_after=3.0)


async def shutting_down_bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request
        raise ShuttingDown("draining")


async def crash_bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for _ in requests:
        raise KeyError("secret stream detail")
    yield b""  # pragma: no cover


async def publish_unary(
    request: publisher_pb2.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> bytes:
    return request.event.topic.encode()


async def topics_bidi(
    requests: AsyncIterator[publisher_pb2.PublishRequest | UndecodableRequest],
    context: grpc.aio.ServicerContext[Any, Any],
) -> AsyncIterator[bytes]:
    async for request in requests:
        if isinstance(request, UndecodableRequest):
            yield b"undecodable"
        else:
            yield request.event.topic.encode()


def handlers() -> dict[str, grpc.RpcMethodHandler]:
    return {
        "Publish": grpc.unary_unary_rpc_method_handler(
            publish_unary, request_deserializer=publisher_pb2.PublishRequest.FromString
        ),
        "Topics": grpc.stream_stream_rpc_method_handler(
            topics_bidi, request_deserializer=publisher_pb2.PublishRequest.FromString
        ),
        "Fail": grpc.unary_unary_rpc_method_handler(fail_unary),
        "Crash": grpc.unary_unary_rpc_method_handler(crash_unary),
        "Echo": grpc.unary_unary_rpc_method_handler(echo_unary),
        "Exhausted": grpc.unary_stream_rpc_method_handler(exhausted_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(shutting_down_bidi),
        "CrashBidi": grpc.stream_stream_rpc_method_handler(crash_bidi),
    }


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("ferry.test.Echo", handlers()),
            # Not a Ferry service: the interceptor must leave it alone.
            grpc.method_handlers_generic_handler("other.Echo", {"Fail": handlers()["Fail"]}),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        await server.stop(None)


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


async def test_server_maps_invalid_argument_with_bad_request(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/ferry.test.Echo/Fail")(b"x", timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "events[3].topic: must not be empty"
    status = status_of(error)
    assert status is not None
    assert status.code == code_pb2.INVALID_ARGUMENT
    [detail] = without_error_info(unpack(status))
    assert isinstance(detail, error_details_pb2.BadRequest)
    assert detail.field_violations[0].field == "events[3].topic"


async def test_server_answers_internal_without_leaking_the_text(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/ferry.test.Echo/Crash")(b"x", timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "0xDEADBEEF" not in (error.details() or "")
    assert "ValueError" not in (error.details() or "")
    assert "0xDEADBEEF" not in repr(error.trailing_metadata())
    status = status_of(error)
    assert status is not None
    [info] = unpack(status)
    assert info.reason == "INTERNAL"


async def test_server_passes_successful_calls_through(channel: grpc.aio.Channel) -> None:
    assert await channel.unary_unary("/ferry.test.Echo/Echo")(b"hello", timeout=5) == b"hello"


async def test_server_maps_errors_raised_mid_stream(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream("/ferry.test.Echo/Exhausted")(b"x", timeout=5)
    received: list[bytes] = []

    async def read_all() -> None:
        async for message in call:
            received.append(message)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await read_all()
    assert received == [b"first"]
    error = info.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_of(error)
    assert status is not None
    [detail] = without_error_info(unpack(status))
    assert isinstance(detail, error_details_pb2.RetryInfo)
    assert detail.retry_delay.ToNanoseconds() == 3_000_000_000


async def test_server_maps_errors_in_bidi_streams(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream("/ferry.test.Echo/Bidi")(timeout=5)
    await call.write(b"one")
    assert await call.read() == b"one"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "draining"


async def test_server_bidi_crash_is_internal(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream("/ferry.test.Echo/CrashBidi")(timeout=5)
    await call.write(b"one")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret stream detail" not in (info.value.details() or "")


async def test_interceptor_leaves_other_services_alone(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/other.Echo/Fail")(b"x", timeout=5)
    # gRPC's own handling of an uncaught exception, not Ferry's mapping.
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert status_of(info.value) is None


async def test_unknown_method_stays_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/ferry.test.Echo/Nope")(b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


NOT_A_MESSAGE = b"\xff\xff\xff"


async def test_undecodable_request_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary("/ferry.test.Echo/Publish")(NOT_A_MESSAGE, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ferry.v1.PublishRequest" in (info.value.details() or "")
    status = status_of(info.value)
    assert status is not None
    [info_detail] = [d for d in unpack(status) if isinstance(d, error_details_pb2.ErrorInfo)]
    assert info_detail.reason == "REQUEST_UNDECODABLE"


async def test_decodable_request_reaches_the_handler_decoded(channel: grpc.aio.Channel) -> None:
    request = publisher_pb2.PublishRequest(event=publisher_pb2.Event(topic="t1"))
    reply = await channel.unary_unary("/ferry.test.Echo/Publish")(
        request.SerializeToString(), timeout=5
    )
    assert reply == b"t1"


async def test_undecodable_stream_message_reaches_the_handler_as_an_item(
    channel: grpc.aio.Channel,
) -> None:
    call = channel.stream_stream("/ferry.test.Echo/Topics")(timeout=5)
    good = publisher_pb2.PublishRequest(event=publisher_pb2.Event(topic="t2"))
    await call.write(NOT_A_MESSAGE)
    await call.write(good.SerializeToString())
    await call.done_writing()
    assert [reply async for reply in call] == [b"undecodable", b"t2"]
