"""A load generator worker: `python -m bench.loadgen` reads one JSON job per stdin line,
runs it on its event loop with grpc.aio clients (or the raw Kafka client) and prints one
JSON result line. The harness keeps a few of these processes for the whole run.

Jobs (`kind`):
- `publish`: Publish or PublishBatch (or, with `stream`, requests of one PublishStream),
  closed loop (`concurrency` callers) or open loop
  (`rate` per second, latency measured from the actual send), from wall time `start_at`;
  completions within [start_at + warmup, + duration) are counted. `max_ops` ends early
  once that many calls were made; `stop_file` ends early once the file exists.
- `subscribe`: one Subscribe stream that acks every delivery message as it arrives, until
  `expected` acks were applied.
- `raw_produce` / `raw_consume`: the confluent-kafka baselines (bench/rawkafka.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc

from bench import rawkafka
from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc, subscriber_pb2_grpc
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


class StreamCaller:
    """Requests of one PublishStream as awaitable calls: each waits for its own answer."""

    def __init__(self, stub: publisher_pb2_grpc.PublisherStub) -> None:
        self._outgoing: asyncio.Queue[pb.PublishStreamRequest | None] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[pb.PublishStreamAnswer]] = {}
        self._next_id = 0
        self._call = stub.PublishStream(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> Any:
        while (request := await self._outgoing.get()) is not None:
            yield request

    async def _read(self) -> None:
        try:
            async for response in self._call:
                for answer in response.answers:
                    future = self._waiting.pop(answer.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(answer)
        except grpc.aio.AioRpcError as exc:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(exc)

    def __call__(self, request: pb.PublishStreamRequest, timeout: float) -> Awaitable[Any]:
        """Send `request` under the next request_id; like a unary call, await its answer."""
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        sent = pb.PublishStreamRequest()
        sent.CopyFrom(request)
        sent.request_id = self._next_id
        self._outgoing.put_nowait(sent)
        return asyncio.wait_for(future, timeout)

    async def close(self) -> None:
        self._outgoing.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 10)
        self._call.cancel()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Window:
    """The measured window of a job in loop (monotonic) time, from wall-clock `start_at`."""

    def __init__(self, job: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        self.offset = loop.time() - time.time()  # wall + offset = loop time
        self.start = job["start_at"] + self.offset
        self.w0 = self.start + job.get("warmup", 0.0)
        self.w1 = self.w0 + job["duration"]
        self.cpu: dict[str, float] = {}

    def wall(self, t: float) -> float:
        return t - self.offset

    async def watch_cpu(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self.w0 - loop.time()))
        self.cpu["w0"] = _cpu()
        await asyncio.sleep(max(0.0, self.w1 - loop.time()))
        self.cpu["w1"] = _cpu()


async def publish_job(job: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    win = Window(job)
    level = pb.ACK_LEVEL_KAFKA if job.get("ack") == "kafka" else pb.ACK_LEVEL_DURABLE
    event = pb.Event(topic=job["topic"], payload=os.urandom(job["payload"]))
    batch = job.get("batch", 0)
    max_ops = job.get("max_ops") or 0
    stop_file = Path(job["stop_file"]) if job.get("stop_file") else None
    timeout = job.get("timeout", 30.0)
    latencies: list[int] = []
    done_ms: list[int] = []  # completion times (ms after the window start) with `lat_times`
    lat_times = bool(job.get("lat_times"))
    errors: Counter[str] = Counter()
    details: dict[str, str] = {}  # the first message of each error code
    state = {"ok": 0, "issued": 0, "stopped": False}
    async with grpc.aio.insecure_channel(job["target"], options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 15)
        stub = publisher_pb2_grpc.PublisherStub(channel)
        stream: StreamCaller | None = None
        if job.get("stream"):
            stream = StreamCaller(stub)
            request = pb.PublishStreamRequest(events=[event] * (batch or 1), ack_level=level)
            method = stream
        elif batch:
            request: Any = pb.PublishBatchRequest(events=[event] * batch, ack_level=level)
            method: Any = stub.PublishBatch
        else:
            request, method = pb.PublishRequest(event=event, ack_level=level), stub.Publish

        def running() -> bool:
            if state["stopped"] or loop.time() >= win.w1:
                return False
            return not (max_ops and state["issued"] >= max_ops)

        async def one() -> None:
            state["issued"] += 1
            t0 = loop.time()
            try:
                response = await method(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                details.setdefault(exc.code().name, str(exc.details())[:300])
                return
            t1 = loop.time()
            if stream is not None and response.HasField("error"):
                errors[response.error.reason] += 1
                details.setdefault(response.error.reason, response.error.message[:300])
                return
            if batch or stream is not None:
                bad = sum(1 for e in response.entries if e.HasField("error"))
                if bad:
                    errors["EVENT_ERROR"] += bad
            if win.w0 <= t1 < win.w1:
                state["ok"] += 1
                latencies.append(int((t1 - t0) * 1e6))
                if lat_times:
                    done_ms.append(int((t1 - win.w0) * 1000))

        async def closed_loop() -> None:
            while running():
                await one()

        async def open_loop(rate: float) -> None:
            in_flight: set[asyncio.Task[None]] = set()
            n = 0
            while running():
                due = win.start + n / rate
                n += 1
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if len(in_flight) >= job.get("inflight_cap", 5000):
                    errors["CLIENT_BACKLOG"] += 1
                    continue
                task = asyncio.create_task(one())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight, timeout=timeout)

        async def watch_stop() -> None:
            while stop_file is not None and not state["stopped"]:
                if stop_file.exists():
                    state["stopped"] = True
                await asyncio.sleep(0.1)

        await asyncio.sleep(max(0.0, win.start - loop.time()))
        watchers = [asyncio.create_task(win.watch_cpu()), asyncio.create_task(watch_stop())]
        if job.get("rate"):
            await open_loop(job["rate"])
        else:
            await asyncio.gather(*(closed_loop() for _ in range(job["concurrency"])))
        state["stopped"] = True
        end = min(loop.time(), win.w1)
        if stream is not None:
            await stream.close()
        for w in watchers:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
    span = max(end - win.w0, 1e-9)
    cpu_span = win.cpu.get("w1", _cpu()) - win.cpu.get("w0", 0.0)
    return {
        "ok": state["ok"],
        "events": state["ok"] * (batch or 1),
        "window": [win.wall(win.w0), win.wall(end)],
        "rate": state["ok"] / span,
        "errors": dict(errors),
        "error_details": details,
        "lat_us": latencies,
        **({"lat_t_ms": done_ms} if lat_times else {}),
        "client_cpu": cpu_span / span if "w0" in win.cpu else 0.0,
    }


async def subscribe_job(job: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    acks: asyncio.Queue[list[str] | None] = asyncio.Queue()
    expected = job["expected"]
    counts: Counter[str] = Counter()
    first = done = 0.0
    cpu0 = cpu1 = 0.0

    async def requests() -> Any:
        yield spb.SubscribeRequest(
            open=spb.OpenSubscription(
                subscription=job["subscription"],
                topics=job["topics"],
                max_outstanding_events=job.get("max_outstanding", 1000),
            )
        )
        while (ids := await acks.get()) is not None:
            yield spb.SubscribeRequest(ack=spb.AckIds(ack_ids=ids))

    t_open = loop.time()
    async with grpc.aio.insecure_channel(job["target"], options=CHANNEL_OPTIONS) as channel:
        stub = subscriber_pb2_grpc.SubscriberStub(channel)
        call = stub.Subscribe(requests())
        try:
            async with asyncio.timeout(job["timeout"]):
                async for response in call:
                    kind = response.WhichOneof("response")
                    if kind == "deliveries":
                        if not first:
                            first, cpu0 = loop.time(), _cpu()
                        ids = [d.ack_id for d in response.deliveries.deliveries]
                        counts["delivered"] += len(ids)
                        acks.put_nowait(ids)
                    elif kind == "ack_results":
                        for r in response.ack_results.results:
                            applied = r.status == spb.ACK_ID_STATUS_APPLIED
                            counts["acked" if applied else spb.AckIdStatus.Name(r.status)] += 1
                        if counts["acked"] >= expected:
                            done, cpu1 = loop.time(), _cpu()
                            break
        except TimeoutError:
            counts["TIMEOUT"] += 1
        finally:
            acks.put_nowait(None)
            call.cancel()
    end = done or loop.time()
    span = max(end - first, 1e-9) if first else 0.0
    offset = loop.time() - time.time()
    return {
        "ok": counts["acked"],
        "counts": dict(counts),
        "window": [first - offset, end - offset],
        "rate": counts["acked"] / span if span else 0.0,
        "join_s": first - t_open if first else None,
        "client_cpu": (cpu1 - cpu0) / span if span and cpu1 else 0.0,
    }


async def run(job: dict[str, Any]) -> dict[str, Any]:
    kind = job["kind"]
    if kind == "publish":
        return await publish_job(job)
    if kind == "subscribe":
        return await subscribe_job(job)
    if kind == "raw_produce":
        return await asyncio.to_thread(rawkafka.produce_job, job)
    if kind == "raw_consume":
        return await asyncio.to_thread(rawkafka.consume_job, job)
    raise ValueError(f"unknown job kind {kind!r}")


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            result = await run(json.loads(line))
        except Exception as exc:
            result = {"failure": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(main())
