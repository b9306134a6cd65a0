"""The gRPC ceiling: a trivial grpc.aio Publisher with Ferry's message types.

`python -m bench.echo --port P` answers Publish with a fixed PublishResponse,
PublishBatch with one fixed entry per event and each PublishStream request with one answer of
one fixed entry per event under its request_id, doing no other work. It also serves
the standard health service so that the harness can wait for it like for Ferry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # as Ferry's server
RESULT = pb.PublishResult(event_id="0190b0c4-7a4e-7cc2-9a7e-0123456789ab", sequence=1)


class EchoPublisher(publisher_pb2_grpc.PublisherServicer):
    def __init__(self) -> None:
        self._single = pb.PublishResponse(result=RESULT)
        self._batches: dict[int, pb.PublishBatchResponse] = {}

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishResponse:
        return self._single

    async def PublishBatch(
        self, request: pb.PublishBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PublishBatchResponse:
        n = len(request.events)
        response = self._batches.get(n)
        if response is None:
            entry = pb.PublishBatchEntry(result=RESULT)
            response = self._batches[n] = pb.PublishBatchResponse(entries=[entry] * n)
        return response

    async def PublishStream(
        self,
        requests: AsyncIterator[pb.PublishStreamRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.PublishStreamResponse]:
        entry = pb.PublishBatchEntry(result=RESULT)
        async for request in requests:
            response = pb.PublishStreamResponse()
            answer = response.answers.add(request_id=request.request_id)
            answer.entries.extend([entry] * len(request.events))
            yield response


async def serve(port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    publisher_pb2_grpc.add_PublisherServicer_to_server(EchoPublisher(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"could not bind 127.0.0.1:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.echo")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
