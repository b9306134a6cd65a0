"""Bearer-token authentication of every call, as a grpc.aio server interceptor.

With tokens configured (`--token-file`, FERRY_TOKENS), a call must carry
``authorization: Bearer <token>`` with an accepted token; otherwise it ends UNAUTHENTICATED
(ErrorInfo reason UNAUTHENTICATED) before any handler runs, and the answer never says whether
the header was missing, malformed or the token unknown. `grpc.health.v1.Health` stays open
(probes carry no token); server reflection needs a token like Ferry's own services.

The interceptor sits outside the error-mapping one, so a refused call is never decoded.
Refusals are logged (method and peer, never the header), at most one line per method and
interval (sidecar/observability/repeats.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog

from sidecar.api.status import abort
from sidecar.api.tokens import TokenStore
from sidecar.errors import FerryError, Unauthenticated
from sidecar.observability.repeats import RepeatLimiter

log = structlog.get_logger(__name__)
HEALTH_METHODS = "/grpc.health.v1.Health/"
AUTHORIZATION = "authorization"
BEARER = "bearer"

Metadata = Sequence[tuple[str, str | bytes]] | None


def bearer_token(metadata: Metadata) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, or None."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == BEARER and token.strip():
            return token.strip()
    return None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses every call but health that carries no accepted bearer token."""

    def __init__(self, tokens: TokenStore, limiter: RepeatLimiter | None = None) -> None:
        self._tokens = tokens
        self._limiter = limiter or RepeatLimiter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_METHODS):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if self._tokens.match(token) is not None:
            return handler
        return refusing_handler(handler, method, Unauthenticated(), self._limiter)


def refusing_handler(
    handler: grpc.RpcMethodHandler,  # type: ignore[type-arg]
    method: str,
    error: FerryError,
    limiter: RepeatLimiter,
) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
    """A handler of `handler`'s kind that reads nothing and ends the call with `error`."""

    async def refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        repeated = limiter.admit((error.reason, method))
        if repeated is not None:
            log.warning(
                "call_refused",
                reason=error.reason,
                method=method,
                peer=context.peer(),
                repeated=repeated,
            )
        await abort(context, error)

    async def unary(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await refuse(context)

    async def streaming(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await refuse(context)
        yield  # pragma: no cover - an async generator, like the handler it stands for

    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, None, serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, None, serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, None, serializer)
    return grpc.stream_stream_rpc_method_handler(streaming, None, serializer)
