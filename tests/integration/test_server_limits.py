"""Limits against a client that floods Ferry: calls past --max-concurrent-rpcs are answered
RESOURCE_EXHAUSTED, and streams past --max-connection-streams wait on their connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from testkit.ferry_process import FerryProcess
from tests.conftest import KafkaHandle

ALLOWED = 4
#: A connection of its own: channels of one process share connections by default.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
#: A request Ferry refuses by itself (no events): answered, and the stream stays open.
EMPTY = pb.PublishStreamRequest(request_id=1)


async def _open_stream(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:  # type: ignore[type-arg]
    """A PublishStream that is surely in progress on the server: one request answered."""
    call = publisher_pb2_grpc.PublisherStub(channel).PublishStream()
    await call.write(EMPTY)
    response = await call.read()
    assert response.answers[0].error.reason == "FIELD_INVALID"
    return call


@pytest.fixture
async def ferry(kafka: KafkaHandle, tmp_path: Path) -> AsyncIterator[FerryProcess]:
    process = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--max-concurrent-rpcs", str(ALLOWED), "--max-connection-streams", "2",
    )  # fmt: skip
    await asyncio.to_thread(process.start)
    yield process
    process.kill()


async def test_calls_past_the_limit_are_resource_exhausted(ferry: FerryProcess) -> None:
    channels = [
        grpc.aio.insecure_channel(ferry.address, options=OWN_CONNECTION) for _ in range(ALLOWED)
    ]
    try:
        streams = [await _open_stream(channel) for channel in channels]
        async with grpc.aio.insecure_channel(ferry.address, options=OWN_CONNECTION) as extra:
            stub = publisher_pb2_grpc.PublisherStub(extra)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Publish(pb.PublishRequest(), timeout=30)
                assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            health = health_pb2_grpc.HealthStub(extra)
            with pytest.raises(grpc.aio.AioRpcError) as probe:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert probe.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            await streams[0].done_writing()
            assert await streams[0].code() == grpc.StatusCode.OK
            # One call ended: there is room again.
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        for stream in streams[1:]:
            stream.cancel()
    finally:
        for channel in channels:
            await channel.close()


async def test_streams_past_the_connection_limit_wait(ferry: FerryProcess) -> None:
    async with grpc.aio.insecure_channel(ferry.address, options=OWN_CONNECTION) as channel:
        streams = [await _open_stream(channel) for _ in range(2)]
        health = health_pb2_grpc.HealthStub(channel)
        waiting = asyncio.ensure_future(health.Check(health_pb2.HealthCheckRequest(), timeout=60))
        done, _ = await asyncio.wait([waiting], timeout=1.0)
        assert not done, "a third call on the connection must wait for a free stream"
        await streams[0].done_writing()
        assert await streams[0].code() == grpc.StatusCode.OK
        reply = await waiting
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        streams[1].cancel()
