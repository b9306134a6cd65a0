"""Limits against a client that floods Ferry: calls past --max-concurrent-rpcs are answered
RESOURCE_EXHAUSTED, streams past --max-connection-streams wait on their connection, a client
pinging more often than --min-ping-interval-s is sent away (GOAWAY too_many_pings), and a
connection without calls is closed after --max-connection-idle-s; Ferry serves the others
throughout."""

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
#: A client that pings every 100 ms, with or without calls and data: far under Ferry's minimum.
PINGING = [
    *OWN_CONNECTION,
    ("grpc.keepalive_time_ms", 100),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]
IDLE_S = 1.0
AGE_S = 1.0
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


@pytest.fixture
async def aging_ferry(kafka: KafkaHandle, tmp_path: Path) -> AsyncIterator[FerryProcess]:
    process = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--max-connection-age-s", str(AGE_S), "--max-connection-age-grace-s", str(AGE_S),
    )  # fmt: skip
    await asyncio.to_thread(process.start)
    yield process
    process.kill()


@pytest.fixture
async def connection_limits_ferry(
    kafka: KafkaHandle, tmp_path: Path
) -> AsyncIterator[FerryProcess]:
    process = FerryProcess(
        tmp_path / "wal", kafka.bootstrap,
        "--min-ping-interval-s", "5", "--max-connection-idle-s", str(IDLE_S),
    )  # fmt: skip
    await asyncio.to_thread(process.start)
    yield process
    process.kill()


async def _answered_once_room_frees(
    health: health_pb2_grpc.HealthStub, within_s: float = 30.0
) -> health_pb2.HealthCheckResponse:
    """A health answer, waiting while the call limit still counts a call that just ended."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            reply: health_pb2.HealthCheckResponse = await health.Check(
                health_pb2.HealthCheckRequest(), timeout=30
            )
            return reply
        except grpc.aio.AioRpcError as exc:
            late = asyncio.get_running_loop().time() > deadline
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or late:
                raise
        await asyncio.sleep(0.05)


async def _serving_on(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=30
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def _serving(address: str) -> None:
    """A new connection to `address` gets a health answer."""
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        await _serving_on(channel)


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
            # One call ended: there is room again, once the server has let go of the call
            # (its slot frees a moment after the client sees the status).
            reply = await _answered_once_room_frees(health)
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


async def test_a_client_pinging_too_often_is_sent_away(
    connection_limits_ferry: FerryProcess,
) -> None:
    address = connection_limits_ferry.address
    async with (
        grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as polite,
        grpc.aio.insecure_channel(address, options=PINGING) as pinging,
    ):
        kept = await _open_stream(polite)
        flooding = await _open_stream(pinging)
        # Past 2 strikes Ferry sends GOAWAY (too_many_pings) and closes the connection: the
        # call on it ends UNAVAILABLE.
        assert await asyncio.wait_for(flooding.code(), 60) == grpc.StatusCode.UNAVAILABLE
        assert await flooding.details() == "Too many pings"
        # The other connection and its stream carry on, and new connections are served.
        await kept.write(EMPTY)
        response = await kept.read()
        assert response.answers[0].error.reason == "FIELD_INVALID"
        await _serving(address)
        await kept.done_writing()
        assert await kept.code() == grpc.StatusCode.OK


async def test_a_connection_without_calls_is_closed_when_idle(
    connection_limits_ferry: FerryProcess,
) -> None:
    address = connection_limits_ferry.address
    async with (
        grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as busy,
        grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as idle,
    ):
        stream = await _open_stream(busy)
        await _serving_on(idle)
        assert idle.get_state() == grpc.ChannelConnectivity.READY
        # Ferry closes the idle connection (GOAWAY): the channel drops back to IDLE.
        await asyncio.wait_for(
            idle.wait_for_state_change(grpc.ChannelConnectivity.READY), IDLE_S * 30
        )
        assert idle.get_state() == grpc.ChannelConnectivity.IDLE
        # The connection with a call in progress stays open: its stream still answers.
        assert busy.get_state() == grpc.ChannelConnectivity.READY
        await stream.write(EMPTY)
        assert (await stream.read()).answers[0].error.reason == "FIELD_INVALID"
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.OK
        await _serving_on(idle)  # an idle-closed channel reconnects on its next call


async def test_an_old_connection_is_ended_after_its_grace_and_the_client_reconnects(
    aging_ferry: FerryProcess,
) -> None:
    async with grpc.aio.insecure_channel(aging_ferry.address, options=OWN_CONNECTION) as channel:
        stream = await _open_stream(channel)
        # Past the age, Ferry asks the client to go (GOAWAY); past the grace it ends the
        # connection and with it the stream that was still open.
        code = await asyncio.wait_for(stream.code(), (AGE_S * 2) * 30)
        assert code == grpc.StatusCode.UNAVAILABLE
        await _serving_on(channel)  # the channel connects again on its next call
