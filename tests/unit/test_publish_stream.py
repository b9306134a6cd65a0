"""One PublishStream call over a real log writer: order, per-request answers, window, drain."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from sidecar._gen.ferry.v1 import publisher_pb2 as pb
from sidecar._gen.ferry.v1 import record_pb2
from sidecar.api.publish_stream import PublishStreamCall, UnansweredWindow
from sidecar.api.publisher import PublisherServicer
from sidecar.errors import ShuttingDown, UndecodableRequest
from sidecar.publish.kafka_waiters import KafkaAckWaiters
from sidecar.publish.service import PublishService
from sidecar.validation import EventLimits
from sidecar.wal.writer import WalLimits, WalWriter

LIMITS = WalLimits(max_rows=10, max_bytes=1 << 20, dedupe_window_s=3600.0)


class Rig:
    def __init__(self, data_dir: Path) -> None:
        self.commit_gate = threading.Event()
        self.commit_gate.set()
        self.writer = WalWriter(data_dir, LIMITS, on_commit=lambda _: self._hold_commit())
        self.service = PublishService(self.writer, KafkaAckWaiters(asyncio.get_running_loop()))
        self.servicer = PublisherServicer(
            self.service, EventLimits(1024, 8), max_batch_events=4, default_kafka_wait_s=0.2
        )

    def _hold_commit(self) -> None:
        """Runs on the writer thread after a commit, before its requests are answered."""
        assert self.commit_gate.wait(10)

    def call(self, window: UnansweredWindow | None = None) -> PublishStreamCall:
        return PublishStreamCall(self.service, self.servicer._stream_request, window)


@pytest.fixture
async def rig(data_dir: Path) -> AsyncIterator[Rig]:
    rig = Rig(data_dir)
    yield rig
    rig.commit_gate.set()
    await asyncio.to_thread(rig.writer.close)


def request(request_id: int, *event_ids: str, **fields: object) -> pb.PublishStreamRequest:
    events = [pb.Event(topic="orders", payload=b"p", event_id=e) for e in event_ids]
    return pb.PublishStreamRequest(request_id=request_id, events=events, **fields)  # type: ignore[arg-type]


async def messages(
    items: Iterable[object], pulled: list[object] | None = None, then_wait: bool = False
) -> AsyncIterator[object]:
    """The client's side: each message as the reader takes it; optionally never half-close."""
    for item in items:
        if pulled is not None:
            pulled.append(item)
        yield item
    if then_wait:
        await asyncio.Event().wait()


async def collect(
    call: PublishStreamCall, requests: AsyncIterator[object]
) -> list[pb.PublishStreamAnswer]:
    """Every answer, in the order they came (however they were packed into responses)."""
    return [answer async for response in call.responses(requests) for answer in response.answers]


async def test_every_request_is_answered_with_its_id_and_logged_in_arrival_order(
    rig: Rig,
) -> None:
    sent = [request(10, "a", "b"), request(7, "c"), request(99, "d", "e", "f")]
    responses = await asyncio.wait_for(collect(rig.call(), messages(sent)), 10)
    assert [r.request_id for r in responses] == [10, 7, 99]
    ids = [[entry.result.event_id for entry in r.entries] for r in responses]
    assert ids == [["a", "b"], ["c"], ["d", "e", "f"]]
    sequences = [entry.result.sequence for r in responses for entry in r.entries]
    assert sequences == [1, 2, 3, 4, 5, 6]
    assert rig.writer.pending_rows == 6


async def test_a_refused_request_is_answered_and_the_stream_goes_on(rig: Rig) -> None:
    sent: list[object] = [
        request(1, "a"),
        pb.PublishStreamRequest(request_id=2),  # no events
        request(3, "b", "c", "d", "e", "f"),  # over max_batch_events=4
        request(4, "g", ack_level=99),
        UndecodableRequest("ferry.v1.PublishStreamRequest"),
        request(5, "h"),
    ]
    responses = await asyncio.wait_for(collect(rig.call(), messages(sent)), 10)
    by_id = {r.request_id: r for r in responses}
    assert sorted(by_id) == [0, 1, 2, 3, 4, 5]
    for request_id, field in [(2, "events"), (3, "events"), (4, "ack_level")]:
        error = by_id[request_id].error
        assert (error.code, error.reason, error.field) == (
            code_pb2.INVALID_ARGUMENT,
            "FIELD_INVALID",
            field,
        )
        assert not by_id[request_id].entries
    assert by_id[0].error.reason == "REQUEST_UNDECODABLE"
    assert [by_id[1].entries[0].result.sequence, by_id[5].entries[0].result.sequence] == [1, 2]
    assert rig.writer.pending_rows == 2  # nothing of the refused requests was written


async def test_a_full_log_refuses_one_request_with_a_retry_delay(rig: Rig) -> None:
    sent = [request(r, *(f"x{r}-{i}" for i in range(4))) for r in (1, 2, 3)] + [request(4, "y")]
    responses = await asyncio.wait_for(collect(rig.call(), messages(sent)), 10)
    by_id = {r.request_id: r for r in responses}
    full = by_id[3].error
    assert (full.code, full.reason) == (code_pb2.RESOURCE_EXHAUSTED, "LOG_FULL")
    assert full.retry_delay.ToNanoseconds() > 0
    assert len(by_id[4].entries) == 1  # the next request still fits
    assert rig.writer.pending_rows == 9


async def test_a_kafka_wait_timeout_answers_every_assigned_id(rig: Rig) -> None:
    wait = duration_pb2.Duration(nanos=50_000_000)
    sent = [request(1, "a", "b", ack_level=pb.ACK_LEVEL_KAFKA, kafka_wait=wait)]
    [response] = await asyncio.wait_for(collect(rig.call(), messages(sent)), 10)
    assert (response.error.code, response.error.reason) == (
        code_pb2.DEADLINE_EXCEEDED,
        "KAFKA_ACK_TIMEOUT",
    )
    assert list(response.assigned_event_ids) == ["a", "b"]
    assert rig.writer.pending_rows == 2  # logged, and still delivered later


async def test_the_reader_stops_while_the_window_is_full(rig: Rig) -> None:
    rig.commit_gate.clear()  # commits happen, their answers wait
    pulled: list[object] = []
    sent = [request(i, f"e{i}") for i in range(1, 7)]
    call = rig.call(UnansweredWindow(max_requests=2, max_bytes=1 << 20))
    task = asyncio.create_task(collect(call, messages(sent, pulled)))
    await asyncio.sleep(0.3)
    assert len(pulled) == 2  # two unanswered: the third is not read
    rig.commit_gate.set()
    responses = await asyncio.wait_for(task, 10)
    assert [r.request_id for r in responses] == [1, 2, 3, 4, 5, 6]


async def test_answers_ready_together_travel_in_one_response(rig: Rig) -> None:
    rig.commit_gate.clear()  # every request is logged before any is answered
    responses: list[pb.PublishStreamResponse] = []

    async def consume() -> None:
        stream = messages([request(i, f"e{i}") for i in range(1, 6)])
        async for response in rig.call().responses(stream):
            responses.append(response)

    task = asyncio.create_task(consume())
    await until(lambda: rig.writer.pending_rows == 5)
    await asyncio.sleep(0.05)  # let the answers that are ready queue up
    rig.commit_gate.set()
    await asyncio.wait_for(task, 10)
    answered = [a.request_id for r in responses for a in r.answers]
    assert sorted(answered) == [1, 2, 3, 4, 5]
    assert len(responses) < 5, [len(r.answers) for r in responses]


async def test_an_answer_queued_while_the_one_before_is_being_written_is_still_sent(
    rig: Rig,
) -> None:
    wait = duration_pb2.Duration(nanos=50_000_000)
    later = request(2, "b", ack_level=pb.ACK_LEVEL_KAFKA, kafka_wait=wait)  # answered on timeout
    call = rig.call()
    responses = call.responses(messages([request(1, "a"), later]))  # then the client half-closes
    first = await asyncio.wait_for(anext(responses), 10)
    assert [a.request_id for a in first.answers] == [1]
    # While the stream is still writing the first response, the second answer is queued.
    await until(lambda: call._answers.qsize() == 1)
    second = await asyncio.wait_for(anext(responses), 10)
    assert [a.request_id for a in second.answers] == [2]
    assert second.answers[0].error.reason == "KAFKA_ACK_TIMEOUT"
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(responses), 10)


def test_the_window_counts_requests_and_bytes() -> None:
    async def scenario() -> None:
        window = UnansweredWindow(max_requests=3, max_bytes=100)
        window.take(60)
        await asyncio.wait_for(window.room(), 0.1)
        window.take(50)  # 110 bytes: full by bytes
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(window.room(), 0.05)
        window.give_back(60)
        await asyncio.wait_for(window.room(), 0.1)
        window.take(1)
        window.take(1)  # three requests: full by count
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(window.room(), 0.05)

    asyncio.run(scenario())


class RecordingWindow(UnansweredWindow):
    def __init__(self) -> None:
        super().__init__(max_requests=100, max_bytes=1 << 20)
        self.taken: list[int] = []

    def take(self, size: int) -> None:
        self.taken.append(size)
        super().take(size)


async def test_the_window_holds_each_request_by_its_events_bytes(rig: Rig) -> None:
    window = RecordingWindow()
    headers = [record_pb2.Header(key="héad", value=b"12"), record_pb2.Header(key="null")]
    sent = [
        request(1, "a", "b"),  # payload b"p" each
        pb.PublishStreamRequest(
            request_id=2, events=[pb.Event(topic="orders", key=b"kk", headers=headers)]
        ),
    ]
    responses = await asyncio.wait_for(collect(rig.call(window), messages(sent)), 10)
    assert [r.request_id for r in responses] == [1, 2]
    # 2 x 1; then key 2 + "héad" 5 (UTF-8) + value 2 + "null" 4 (its value unset)
    assert window.taken == [2, 13]


async def test_draining_answers_what_was_read_then_ends_shutting_down(rig: Rig) -> None:
    rig.commit_gate.clear()
    received: list[pb.PublishStreamAnswer] = []

    async def consume() -> None:
        stream = messages([request(1, "a"), request(2, "b")], then_wait=True)
        async for response in rig.call().responses(stream):
            received.extend(response.answers)

    task = asyncio.create_task(consume())
    await until(lambda: rig.writer.pending_rows == 2)
    rig.service.stop_accepting()
    rig.commit_gate.set()
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(task, 10)
    assert [r.request_id for r in received] == [1, 2]
    assert all(not r.HasField("error") for r in received)


async def test_draining_after_the_client_half_closed_still_answers_everything(rig: Rig) -> None:
    rig.commit_gate.clear()
    received: list[pb.PublishStreamAnswer] = []

    async def consume() -> None:
        # The client half-closes at once; its two requests wait for their answers.
        async for response in rig.call().responses(messages([request(1, "a"), request(2, "b")])):
            received.extend(response.answers)

    task = asyncio.create_task(consume())
    await until(lambda: rig.writer.pending_rows == 2)
    rig.service.stop_accepting()  # the reader stopped reading already: only answers are left
    await asyncio.sleep(0.05)
    rig.commit_gate.set()
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(task, 10)
    assert sorted(a.request_id for a in received) == [1, 2]


async def test_a_request_read_after_draining_started_is_neither_logged_nor_answered(
    rig: Rig,
) -> None:
    rig.service.stop_accepting()
    with pytest.raises(ShuttingDown):
        await asyncio.wait_for(collect(rig.call(), messages([request(1, "a")])), 10)
    assert rig.writer.pending_rows == 0


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)
