"""The one place where Ferry's exceptions become gRPC status codes (with google.rpc details).

An interceptor wraps every Ferry RPC handler so that servicers simply raise
FerryError subclasses; it also decodes requests itself, so that bytes that
are no valid request answer INVALID_ARGUMENT (REQUEST_UNDECODABLE) instead
of gRPC's UNKNOWN. Every error carries a google.rpc.ErrorInfo with its
stable reason; RetryInfo where a retry helps, BadRequest for a bad field,
AssignedEventIds for a publish that ran out of time. Unexpected exceptions
are logged and answered INTERNAL without leaking their text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2, message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from sidecar._gen.ferry.v1 import publisher_pb2, record_pb2
from sidecar.errors import (
    ERROR_DOMAIN,
    EventIdConflict,
    FailedPrecondition,
    FerryError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PublishTimeout,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    UndecodableRequest,
)

log = structlog.get_logger(__name__)

_CODES: list[tuple[type[FerryError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
    (EventIdConflict, code_pb2.ALREADY_EXISTS),
    (NotFound, code_pb2.NOT_FOUND),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (PublishTimeout, code_pb2.DEADLINE_EXCEEDED),
    (Unavailable, code_pb2.UNAVAILABLE),
]
INTERNAL_MESSAGE = "internal error; see Ferry's log"


def code_of(error: BaseException) -> int:
    """The google.rpc.Code for an error (INTERNAL for anything not in the tree)."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return int(code)
    return int(code_pb2.INTERNAL)


def code_name(error: BaseException) -> str:
    """The name of `error`'s status code ("INVALID_ARGUMENT"), as the metrics label it."""
    return str(code_pb2.Code.Name(code_of(error)))


def _details(error: FerryError) -> list[message.Message]:
    details: list[message.Message] = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    ]
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.description
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    elif isinstance(error, ResourceExhausted | Unavailable):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    elif isinstance(error, PublishTimeout):
        details.append(publisher_pb2.AssignedEventIds(event_ids=error.event_ids))
    return details


def to_status(error: FerryError) -> status_pb2.Status:
    """A google.rpc.Status with the error's ErrorInfo and the details that help the client."""
    status = status_pb2.Status(code=code_of(error), message=str(error))
    for detail in _details(error):
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def to_failure(error: Exception) -> record_pb2.Failure:
    """The flattened status of one refused item (an event of a batch, a stream request)."""
    if not isinstance(error, FerryError):
        log.error("unexpected_item_error", error_type=type(error).__name__, error=str(error))
        return record_pb2.Failure(
            code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE, reason=FerryError.reason
        )
    failure = record_pb2.Failure(code=code_of(error), message=str(error), reason=error.reason)
    if isinstance(error, InvalidArgument):
        failure.field = error.field
    elif isinstance(error, ResourceExhausted | Unavailable):
        failure.retry_delay.FromNanoseconds(int(error.retry_after * 1e9))
    return failure


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    """End the call with `error`'s status (INTERNAL, text not leaked, for a non-FerryError)."""
    if isinstance(error, FerryError):
        status = rpc_status.to_status(to_status(error))
        await context.abort_with_status(status)  # type: ignore[attr-defined]
    log.exception("unexpected_error", error_type=type(error).__name__)
    internal = status_pb2.Status(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.ErrorInfo(reason=FerryError.reason, domain=ERROR_DOMAIN))
    internal.details.append(packed)
    await context.abort_with_status(rpc_status.to_status(internal))  # type: ignore[attr-defined]


Decoder = Callable[[bytes], Any] | None


def _decode(decoder: Decoder, data: bytes) -> Any:
    if decoder is None:
        return data
    try:
        return decoder(data)
    except message.DecodeError:
        raise UndecodableRequest(_type_name(decoder)) from None


def _type_name(decoder: Decoder) -> str:
    owner = getattr(decoder, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


async def decoded_stream(decoder: Decoder, requests: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """Each stream message decoded; an undecodable one arrives as an UndecodableRequest item,
    so that the servicer refuses that one message and the stream stays open."""
    async for data in requests:
        try:
            yield data if decoder is None else decoder(data)
        except message.DecodeError:
            yield UndecodableRequest(_type_name(decoder))


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], decoder: Decoder
) -> Callable[..., Awaitable[Any]]:
    async def handler(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(_decode(decoder, data), context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return handler


def _wrap_unary_stream(
    behavior: Callable[..., AsyncIterator[Any]], decoder: Decoder
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(data: bytes, context: Any) -> Any:
        try:
            async for response in behavior(_decode(decoder, data), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return handler


def _wrap_stream_stream(
    behavior: Callable[..., AsyncIterator[Any]], decoder: Decoder
) -> Callable[..., AsyncIterator[Any]]:
    async def handler(requests: AsyncIterator[bytes], context: Any) -> Any:
        try:
            async for response in behavior(decoded_stream(decoder, requests), context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await abort(context, error)

    return handler


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Decodes Ferry's requests and maps FerryError raised by any handler to its status."""

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
                _wrap_unary(handler.unary_unary, handler.request_deserializer),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream_stream(handler.stream_stream, handler.request_deserializer),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_unary_stream(handler.unary_stream, handler.request_deserializer),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        raise TypeError(f"{handler_call_details.method}: no error mapping for this RPC kind")
