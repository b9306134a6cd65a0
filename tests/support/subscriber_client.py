"""Subscribe-side helpers for integration tests: a threaded stream client, a worker that acks
what it gets, publishing through Ferry, Kafka offsets, and a subprocess client to SIGKILL.

`StreamClient` runs one Subscribe stream on a synchronous gRPC channel: a generator feeds the
requests from a queue, a reader thread collects deliveries and matches ack results to the
requests that caused them. The proto promises results "in request order", so a result whose
ack ids do not match the oldest pending request is recorded as a protocol violation
(`StreamClient.violations`) and fails the waiter, instead of being silently re-matched.

Run as a module it is a subscriber in a separate process (for kill -9 tests): it prints one
JSON line per delivery and per ack result and never exits by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from google.protobuf import duration_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as ppb
from sidecar._gen.ferry.v1 import subscriber_pb2 as pb
from sidecar._gen.ferry.v1 import subscriber_pb2_grpc
from tests.support.ferry import FerryProcess

APPLIED = pb.ACK_ID_STATUS_APPLIED
ALREADY_ACKED = pb.ACK_ID_STATUS_ALREADY_ACKED
EXPIRED = pb.ACK_ID_STATUS_EXPIRED
UNKNOWN = pb.ACK_ID_STATUS_UNKNOWN
REVOKED = pb.ACK_ID_STATUS_REVOKED
_END = object()
ACK_CHUNK = 1_000  # ack ids per message; the server takes at most 10,000


def duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def open_request(
    subscription: str,
    topics: Sequence[str],
    *,
    lease_s: float | None = None,
    max_outstanding: int = 0,
    max_bytes: int = 0,
    max_attempts: int = 0,
    dead_letter_topic: str = "",
    start_position: int = pb.START_POSITION_UNSPECIFIED,
) -> pb.OpenSubscription:
    message = pb.OpenSubscription(
        subscription=subscription,
        topics=list(topics),
        max_outstanding_events=max_outstanding,
        max_outstanding_bytes=max_bytes,
        max_delivery_attempts=max_attempts,
        dead_letter_topic=dead_letter_topic,
        start_position=start_position,  # type: ignore[arg-type]
    )
    if lease_s is not None:
        message.lease_duration.CopyFrom(duration(lease_s))
    return message


def unique_subscription(prefix: str = "sub") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Received:
    """One delivery as the client saw it, with the monotonic and wall time it arrived."""

    delivery: pb.Delivery
    at: float
    wall: float

    @property
    def lease_deadline(self) -> float:
        """The lease deadline Ferry stated, in wall-clock seconds."""
        return self.delivery.lease_deadline.ToNanoseconds() / 1e9

    @property
    def event_id(self) -> str:
        return self.delivery.event.event_id

    @property
    def ack_id(self) -> str:
        return self.delivery.ack_id

    @property
    def attempt(self) -> int:
        return self.delivery.delivery_attempt

    @property
    def position(self) -> tuple[str, int, int]:
        d = self.delivery
        return (d.event.topic, d.partition, d.offset)


@dataclass
class _Pending:
    kind: str
    ack_ids: list[str]
    future: Future[list[pb.AckIdResult]] = field(default_factory=Future)


class StreamClient:
    """One Subscribe stream, driven from test code (thread-safe)."""

    def __init__(self, channel: grpc.Channel, open_message: pb.OpenSubscription) -> None:
        self.open_message = open_message
        self._stub = subscriber_pb2_grpc.SubscriberStub(channel)
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._inbox: deque[Received] = deque()
        self.received: list[Received] = []
        self.by_ack_id: dict[str, Received] = {}
        self.results: list[pb.AckIdResult] = []
        self.violations: list[str] = []
        self.opened: pb.SubscriptionOpened | None = None
        self.error: grpc.RpcError | None = None
        self.closed = threading.Event()
        self._call: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, first: pb.SubscribeRequest | None = None) -> StreamClient:
        """Send `open` (or `first`) and start reading; does not wait for `opened`."""
        self._requests.put(first or pb.SubscribeRequest(open=self.open_message))
        self._call = self._stub.Subscribe(self._request_iter())
        self._thread = threading.Thread(target=self._read, name="subscribe-reader", daemon=True)
        self._thread.start()
        return self

    def open(self, timeout: float = 30.0) -> StreamClient:
        """Start and wait for `opened`; raises the stream's error if it ended instead."""
        self.start()
        with self._cond:
            self._cond.wait_for(lambda: self.opened is not None or self.closed.is_set(), timeout)
        if self.opened is None:
            if self.error is not None:
                raise self.error
            raise TimeoutError(f"no `opened` within {timeout}s")
        return self

    def cancel(self) -> None:
        """Client-side cancel (the server sees CANCELLED)."""
        if self._call is not None:
            self._call.cancel()
        self.wait_closed(10)

    def half_close(self) -> None:
        self._requests.put(_END)

    def wait_closed(self, timeout: float) -> bool:
        return self.closed.wait(timeout)

    def code(self) -> grpc.StatusCode | None:
        return self.error.code() if self.error is not None else None

    # -- deliveries --------------------------------------------------------------------------

    def take(
        self, timeout: float = 5.0, at_least: int = 1, at_most: int | None = None
    ) -> list[Received]:
        """Deliveries not taken yet: waits up to `timeout` for `at_least` of them."""
        with self._cond:
            self._cond.wait_for(
                lambda: len(self._inbox) >= at_least or self.closed.is_set(), timeout
            )
            count = len(self._inbox) if at_most is None else min(at_most, len(self._inbox))
            return [self._inbox.popleft() for _ in range(count)]

    def wait_received(self, count: int, timeout: float) -> bool:
        """Wait until `count` deliveries arrived in total (taken or not)."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: len(self.received) >= count or self.closed.is_set(), timeout
                )
                and len(self.received) >= count
            )

    def received_count(self) -> int:
        with self._cond:
            return len(self.received)

    # -- acks over the stream ----------------------------------------------------------------

    def ack_async(self, ack_ids: Iterable[str]) -> Future[list[pb.AckIdResult]]:
        ids = list(ack_ids)
        return self._send("ack", ids, pb.SubscribeRequest(ack=pb.AckIds(ack_ids=ids)))

    def nack_async(
        self, ack_ids: Iterable[str], delay_s: float | None = None
    ) -> Future[list[pb.AckIdResult]]:
        ids = list(ack_ids)
        nack = pb.NackIds(ack_ids=ids)
        if delay_s is not None:
            nack.redelivery_delay.CopyFrom(duration(delay_s))
        return self._send("nack", ids, pb.SubscribeRequest(nack=nack))

    def extend_async(self, ack_ids: Iterable[str], lease_s: float) -> Future[list[pb.AckIdResult]]:
        ids = list(ack_ids)
        extend = pb.ExtendIds(ack_ids=ids, lease_duration=duration(lease_s))
        return self._send("extend", ids, pb.SubscribeRequest(extend=extend))

    def ack(self, ack_ids: Iterable[str], timeout: float = 10.0) -> list[pb.AckIdResult]:
        return self.ack_async(ack_ids).result(timeout)

    def nack(
        self, ack_ids: Iterable[str], delay_s: float | None = None, timeout: float = 10.0
    ) -> list[pb.AckIdResult]:
        return self.nack_async(ack_ids, delay_s).result(timeout)

    def extend(
        self, ack_ids: Iterable[str], lease_s: float, timeout: float = 10.0
    ) -> list[pb.AckIdResult]:
        return self.extend_async(ack_ids, lease_s).result(timeout)

    def send_raw(self, request: pb.SubscribeRequest) -> None:
        """Send a request without expecting a result (to provoke errors)."""
        self._requests.put(request)

    # -- internals ---------------------------------------------------------------------------

    def _send(self, kind: str, ids: list[str], request: pb.SubscribeRequest) -> Future[Any]:
        pending = _Pending(kind, ids)
        with self._cond:
            if self.closed.is_set():
                pending.future.set_exception(RuntimeError(f"stream closed: {self.error}"))
                return pending.future
            self._pending.append(pending)
            self._requests.put(request)
        return pending.future

    def _request_iter(self) -> Iterator[pb.SubscribeRequest]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            assert isinstance(item, pb.SubscribeRequest)
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                self._on_response(response)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self._requests.put(_END)
            with self._cond:
                self.closed.set()
                for pending in self._pending:
                    if not pending.future.done():
                        pending.future.set_exception(RuntimeError(f"stream ended: {self.error}"))
                self._pending.clear()
                self._cond.notify_all()

    def _on_response(self, response: pb.SubscribeResponse) -> None:
        kind = response.WhichOneof("response")
        now, wall = time.monotonic(), time.time()
        with self._cond:
            if kind == "opened":
                self.opened = response.opened
            elif kind == "deliveries":
                for delivery in response.deliveries.deliveries:
                    received = Received(delivery, now, wall)
                    self.received.append(received)
                    self.by_ack_id[delivery.ack_id] = received
                    self._inbox.append(received)
            elif kind == "ack_results":
                results = list(response.ack_results.results)
                self.results.extend(results)
                got = [r.ack_id for r in results]
                pending = self._pending.popleft() if self._pending else None
                if pending is None or pending.ack_ids != got:
                    problem = (
                        f"ack results out of request order: got {got[:3]}..., expected "
                        f"{pending.ack_ids[:3] if pending else None}..."
                    )
                    self.violations.append(problem)
                    if pending is not None:
                        pending.future.set_exception(AssertionError(problem))
                else:
                    pending.future.set_result(results)
            self._cond.notify_all()


def open_stream(
    ferry: FerryProcess, message: pb.OpenSubscription, timeout: float = 30.0
) -> StreamClient:
    return StreamClient(ferry.channel(), message).open(timeout)


class AckingWorker:
    """Acks everything a stream delivers (after `work_s` per batch); records what was APPLIED.

    `ack_filter` may decline deliveries (they are then left to expire, or nacked with `nack`).
    """

    def __init__(
        self,
        client: StreamClient,
        *,
        work_s: float = 0.0,
        batch: int | None = None,
        ack_filter: Callable[[Received], bool] | None = None,
        nack: bool = False,
        nack_delay_s: float | None = None,
    ) -> None:
        self.client = client
        self.work_s = work_s
        self.batch = batch
        self.ack_filter = ack_filter
        self.nack = nack
        self.nack_delay_s = nack_delay_s
        self.applied: dict[str, Received] = {}  # event id -> the delivery acked
        self.statuses: list[int] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._futures: list[tuple[list[Received], Future[list[pb.AckIdResult]]]] = []
        self._thread = threading.Thread(target=self._run, name="acking-worker", daemon=True)

    def start(self) -> AckingWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._collect(block=True)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.client.closed.is_set():
            got = self.client.take(timeout=0.2, at_most=self.batch)
            if not got:
                self._collect(block=False)
                continue
            if self.work_s:
                time.sleep(self.work_s)
            accepted: list[Received] = []
            declined: list[Received] = []
            for r in got:
                (accepted if self.ack_filter is None or self.ack_filter(r) else declined).append(r)
            for i in range(0, len(accepted), ACK_CHUNK):
                chunk = accepted[i : i + ACK_CHUNK]
                self._futures.append((chunk, self.client.ack_async(r.ack_id for r in chunk)))
            for i in range(0, len(declined) if self.nack else 0, ACK_CHUNK):
                chunk = declined[i : i + ACK_CHUNK]
                self.client.nack_async((r.ack_id for r in chunk), self.nack_delay_s)
            self._collect(block=False)

    def _collect(self, block: bool) -> None:
        keep = []
        for received, future in self._futures:
            if not block and not future.done():
                keep.append((received, future))
                continue
            try:
                results = future.result(10)
            except BaseException as exc:
                self.errors.append(exc)
                continue
            for r, result in zip(received, results, strict=True):
                self.statuses.append(result.status)
                if result.status == APPLIED:
                    self.applied[r.event_id] = r
        self._futures = keep


class Ferries:
    """Ferry processes of one test, each with its own data dir; all killed at the end."""

    def __init__(self, root: Path, bootstrap: str) -> None:
        self.root = root
        self.bootstrap = bootstrap
        self.started: list[FerryProcess] = []

    def start(self, *args: str, name: str | None = None) -> FerryProcess:
        data_dir = self.root / (name or f"ferry{len(self.started)}")
        ferry = FerryProcess(data_dir, self.bootstrap, *args).start()
        self.started.append(ferry)
        return ferry

    def close(self) -> None:
        for ferry in self.started:
            ferry.kill()


def assigned_partitions(ferry: FerryProcess, topic: str) -> set[int]:
    """The partitions of `topic` this sidecar's consumers hold now, from its log."""
    owned: set[int] = set()
    for line in ferry.log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            parts = {p for t, p in entry.get("partitions", []) if t == topic}
            if entry.get("event") == "partitions_assigned":
                owned |= parts
            elif entry.get("event") == "partitions_revoked":
                owned -= parts
    return owned


# -- unary calls -------------------------------------------------------------------------------


def unary_ack(ferry: FerryProcess, subscription: str, ack_ids: Sequence[str]) -> list[int]:
    reply = ferry.subscriber().Ack(
        pb.AckRequest(subscription=subscription, ack_ids=list(ack_ids)), timeout=10
    )
    return [r.status for r in reply.results]


def unary_nack(
    ferry: FerryProcess, subscription: str, ack_ids: Sequence[str], delay_s: float | None = None
) -> list[int]:
    request = pb.NackRequest(subscription=subscription, ack_ids=list(ack_ids))
    if delay_s is not None:
        request.redelivery_delay.CopyFrom(duration(delay_s))
    return [r.status for r in ferry.subscriber().Nack(request, timeout=10).results]


def unary_extend(
    ferry: FerryProcess, subscription: str, ack_ids: Sequence[str], lease_s: float
) -> list[pb.AckIdResult]:
    request = pb.ExtendLeaseRequest(
        subscription=subscription, ack_ids=list(ack_ids), lease_duration=duration(lease_s)
    )
    return list(ferry.subscriber().ExtendLease(request, timeout=10).results)


# -- publishing and Kafka ----------------------------------------------------------------------


def publish_through_ferry(
    ferry: FerryProcess,
    topic: str,
    count: int,
    *,
    prefix: str | None = None,
    batch: int = 1000,
    payload: Callable[[int], bytes] | None = None,
) -> list[str]:
    """PublishBatch `count` events (ids `<prefix>-<i>`), wait until Kafka has them all."""
    prefix = prefix or uuid.uuid4().hex[:8]
    stub = ferry.publisher()
    ids: list[str] = []
    for start in range(0, count, batch):
        events = [
            ppb.Event(
                topic=topic,
                event_id=f"{prefix}-{i:06d}",
                key=f"k{i % 16}".encode(),
                payload=payload(i) if payload else f"payload-{prefix}-{i:06d}".encode(),
            )
            for i in range(start, min(count, start + batch))
        ]
        reply = stub.PublishBatch(ppb.PublishBatchRequest(events=events), timeout=30)
        for ev, entry in zip(events, reply.entries, strict=True):
            assert entry.WhichOneof("outcome") == "result", entry
            ids.append(ev.event_id)
    ferry.wait_drained(60)
    return ids


def produce_direct(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]] | None]],
) -> int:
    """Produce (key, value, headers) records with a plain producer; returns how many."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    failures: list[Any] = []
    count = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    for key, value, headers in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, callback=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} records unsent"
    assert not failures, failures[:3]
    return count


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )


def _retrying(read: Callable[[], Any], timeout: float = 20.0) -> Any:
    """`read()`, a read-only probe, retried for `timeout` s on Kafka errors (e.g. a stale leader:
    NOT_LEADER_FOR_PARTITION was seen on the 1-broker test cluster); a lasting error is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) watermark offsets per partition of `topic`."""

    def read() -> dict[int, tuple[int, int]]:
        consumer = _consumer(bootstrap, f"probe-{uuid.uuid4().hex}")
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            marks = {}
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                marks[p] = (low, high)
            return marks
        finally:
            consumer.close()

    result: dict[int, tuple[int, int]] = _retrying(read)
    return result


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The high watermark (the offset the next record gets) per partition of `topic`."""
    return {p: high for p, (_low, high) in watermarks(bootstrap, topic).items()}


def committed(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, str]]:
    """The group's committed (offset, metadata) per partition (-1001: no commit)."""

    def read() -> dict[int, tuple[int, str]]:
        consumer = _consumer(bootstrap, group)
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p) for p in meta.partitions]
            return {
                tp.partition: (tp.offset, tp.metadata or "")
                for tp in consumer.committed(parts, timeout=10)
            }
        finally:
            consumer.close()

    result: dict[int, tuple[int, str]] = _retrying(read)
    return result


def uncommitted_partitions(
    marks: Mapping[int, tuple[int, int]], commits: Mapping[int, int]
) -> dict[int, tuple[int, int]]:
    """Partitions whose commit has not reached their end: partition -> (committed, end).

    A group commits nothing (a negative offset, -1001) on a partition it never consumed from;
    that partition has reached its end when it holds nothing to consume (end == low watermark).
    """
    behind = {}
    for partition, (low, high) in marks.items():
        offset = commits.get(partition, -1001)
        if offset == high or (offset < 0 and high == low):
            continue
        behind[partition] = (offset, high)
    return behind


def wait_committed_to_end(
    bootstrap: str, group: str, topic: str, timeout: float = 15.0
) -> dict[int, int]:
    """Wait until the group's commits reach every partition's end; returns the ends."""
    marks = watermarks(bootstrap, topic)
    ends = {p: high for p, (_low, high) in marks.items()}
    deadline = time.monotonic() + timeout
    while True:
        got = {p: o for p, (o, _) in committed(bootstrap, group, topic).items()}
        behind = uncommitted_partitions(marks, got)
        if not behind or time.monotonic() > deadline:
            assert not behind, (
                f"committed {got} != end offsets {ends}: behind (committed, end) {behind}"
            )
            return ends
        time.sleep(0.2)


# -- a subscriber in another process -----------------------------------------------------------


class SubprocessSubscriber:
    """`python -m tests.support.subscriber_client` in a child process; read its JSON lines."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.deliveries: list[dict[str, Any]] = []
        self.acked: set[str] = set()  # event ids whose ack answered APPLIED
        self.opened = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            item = json.loads(line)
            with self._cond:
                if item["kind"] == "opened":
                    self.opened.set()
                elif item["kind"] == "delivery":
                    self.deliveries.append(item)
                elif item["kind"] == "acked":
                    self.acked.update(item["event_ids"])
                self._cond.notify_all()

    def wait(self, predicate: Callable[[SubprocessSubscriber], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


def spawn_subscriber(
    address: str, message: pb.OpenSubscription, ack_every: int = 0
) -> SubprocessSubscriber:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tests.support.subscriber_client",
            "--address", address,
            "--open", message.SerializeToString().hex(),
            "--ack-every", str(ack_every),
        ],
        cwd=root, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    return SubprocessSubscriber(proc)


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--open", required=True, help="OpenSubscription, serialized, hex")
    parser.add_argument("--ack-every", type=int, default=0, help="ack every n-th delivery")
    args = parser.parse_args(argv)
    message = pb.OpenSubscription.FromString(bytes.fromhex(args.open))

    def emit(**item: Any) -> None:
        print(json.dumps(item), flush=True)

    with grpc.insecure_channel(args.address) as channel:
        client = StreamClient(channel, message).open()
        emit(kind="opened")
        seen = 0
        while not client.closed.is_set():
            batch = client.take(timeout=0.5)
            to_ack = []
            for r in batch:
                seen += 1
                emit(
                    kind="delivery",
                    event_id=r.event_id,
                    ack_id=r.ack_id,
                    attempt=r.attempt,
                    partition=r.delivery.partition,
                    offset=r.delivery.offset,
                )
                if args.ack_every and seen % args.ack_every == 0:
                    to_ack.append(r)
            if to_ack:
                results = client.ack([r.ack_id for r in to_ack])
                ok = [
                    r.event_id for r, x in zip(to_ack, results, strict=True) if x.status == APPLIED
                ]
                emit(kind="acked", event_ids=ok)
        emit(kind="closed", code=str(client.code()))
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    _main()
