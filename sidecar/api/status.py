"""The one place where Ferry's exceptions become gRPC status codes (with google.rpc details).

An interceptor wraps every RPC handler so that servicers simply raise
FerryError subclasses. Unexpected exceptions are logged and answered
INTERNAL without leaking their text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar.errors import (
    EventIdConflict,
    FailedPrecondition,
    FerryError,
    InvalidArgument,
    KafkaWaitTimeout,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = structlog.get_logger(__name__)

_CODES: list[tuple[type[FerryError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (EventIdConflict, code_pb2.ALREADY_EXISTS),
    (NotFound, code_pb2.NOT_FOUND),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (KafkaWaitTimeout, code_pb2.DEADLINE_EXCEEDED),
    (Unavailable, code_pb2.UNAVAILABLE),
]


def code_of(error: BaseException) -> int:
    """The google.rpc.Code for an error (INTERNAL for anything not in the tree)."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return int(code)
    return int(code_pb2.INTERNAL)


def to_status(error: FerryError) -> status_pb2.Status:
    """A google.rpc.Status with details where they help the client."""
    status = status_pb2.Status(code=code_of(error), message=str(error))
    detail: Any = None
    if isinstance(error, InvalidArgument):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=error.field, description=error.description
                )
            ]
        )
    elif isinstance(error, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        detail = error_details_pb2.RetryInfo(retry_delay=delay)
    if detail is not None:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    if isinstance(error, FerryError):
        status = rpc_status.to_status(to_status(error))
        await context.abort_with_status(status)  # type: ignore[attr-defined]
    log.exception("unexpected_error", error_type=type(error).__name__)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see Ferry's log")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error)

    return handler


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps FerryError raised by any handler to its status; the only such mapping."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/ferry."):
            return handler  # health and reflection keep their own behaviour
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
