"""FerryError → gRPC status mapping, directly and through a real in-process grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from sidecar.api.status import ErrorMappingInterceptor, code_of, to_status
from sidecar.errors import (
    ConfigError,
    DiskFull,
    EventIdConflict,
    FailedPrecondition,
    FerryError,
    InvalidArgument,
    KafkaWaitTimeout,
    NotFound,
    ResourceExhausted,
    ShuttingDown,
    StorageFailure,
    TooManyStreams,
    Unavailable,
    WalFull,
)

CASES: list[tuple[FerryError, int]] = [
    (InvalidArgument("events[3].topic", "must not be empty"), code_pb2.INVALID_ARGUMENT),
    (EventIdConflict("id reused"), code_pb2.ALREADY_EXISTS),
    (NotFound("no such subscription"), code_pb2.NOT_FOUND),
    (FailedPrecondition("not now"), code_pb2.FAILED_PRECONDITION),
    (ResourceExhausted("busy", 2.0), code_pb2.RESOURCE_EXHAUSTED),
    (WalFull("log full", 1.0), code_pb2.RESOURCE_EXHAUSTED),
    (DiskFull("disk full", 5.0), code_pb2.RESOURCE_EXHAUSTED),
    (TooManyStreams("too many", 0.25), code_pb2.RESOURCE_EXHAUSTED),
    (KafkaWaitTimeout("still delivered"), code_pb2.DEADLINE_EXCEEDED),
    (Unavailable("later"), code_pb2.UNAVAILABLE),
    (ShuttingDown("draining"), code_pb2.UNAVAILABLE),
    (StorageFailure("io error"), code_pb2.UNAVAILABLE),
]


def all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_cases_cover_every_ferry_error_subclass() -> None:
    covered = {type(error) for error, _ in CASES}
    in_errors_module = {c for c in all_subclasses(FerryError) if c.__module__ == "sidecar.errors"}
    assert in_errors_module <= covered, in_errors_module - covered


@pytest.mark.parametrize(("error", "code"), CASES, ids=lambda v: type(v).__name__)
def test_code_of_every_ferry_error(error: FerryError, code: int) -> None:
    assert code_of(error) == code
    status = to_status(error)
    assert status.code == code
    assert status.message == str(error)


@pytest.mark.parametrize(
    "error", [ValueError("x"), RuntimeError("y"), ConfigError("z"), FerryError("base")]
)
def test_anything_outside_the_tree_is_internal(error: Exception) -> None:
    assert code_of(error) == code_pb2.INTERNAL


def unpack(status: status_pb2.Status) -> list[Any]:
    details: list[Any] = []
    for packed in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                details.append(detail)
    assert len(details) == len(status.details), "unexpected detail type"
    return details


def test_invalid_argument_carries_bad_request_with_the_field() -> None:
    status = to_status(InvalidArgument("events[3].topic", "must not be empty"))
    [detail] = unpack(status)
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
    ],
)
def test_resource_exhausted_carries_retry_info(error: ResourceExhausted, nanos: int) -> None:
    [detail] = unpack(to_status(error))
    assert isinstance(detail, error_details_pb2.RetryInfo)
    assert detail.retry_delay.ToNanoseconds() == nanos


@pytest.mark.parametrize(
    "error",
    [
        EventIdConflict("x"),
        NotFound("x"),
        FailedPrecondition("x"),
        KafkaWaitTimeout("x"),
        ShuttingDown("x"),
        StorageFailure("x"),
    ],
)
def test_other_errors_have_no_details(error: FerryError) -> None:
    assert list(to_status(error).details) == []


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


def handlers() -> dict[str, grpc.RpcMethodHandler]:
    return {
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
    [detail] = unpack(status)
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
    [detail] = unpack(status)
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
