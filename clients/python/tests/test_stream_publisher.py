"""FerryStreamPublisher against an in-process fake PublishStream (no Ferry needed).

The scripts read a known number of requests before they answer, so what reaches the fake
and in which order does not depend on the machine's speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import grpc
import pytest
from grpc_status import rpc_status

from ferry_client import Event, FerryError, FerryStreamPublisher, PublishFailure, PublishResult
from ferry_client._gen.ferry.v1 import publisher_pb2 as pb
from tests.fake import FakePublisher, FakeServer, StreamScript, status

C = grpc.StatusCode
Requests = Iterator[pb.PublishStreamRequest]
Responses = Iterator[pb.PublishStreamResponse]
WAIT = 30.0  # seconds a future may take on a loaded machine; a healthy run needs far less


def respond(*answers: pb.PublishStreamAnswer) -> pb.PublishStreamResponse:
    """One message of Ferry's, carrying one or more answers."""
    return pb.PublishStreamResponse(answers=answers)


def answer(request: pb.PublishStreamRequest, base: int = 0) -> pb.PublishStreamAnswer:
    """Accept every event: sequence `base` + the event's index."""
    out = pb.PublishStreamAnswer(request_id=request.request_id)
    for i, event in enumerate(request.events):
        result = out.entries.add().result
        result.event_id, result.sequence = event.event_id, base + i
    return out


def refuse(
    request: pb.PublishStreamRequest,
    code: grpc.StatusCode,
    reason: str,
    retry_delay: float | None = None,
    field: str = "",
    assigned: bool = False,
) -> pb.PublishStreamAnswer:
    out = pb.PublishStreamAnswer(request_id=request.request_id)
    out.error.code, out.error.reason = code.value[0], reason
    out.error.message, out.error.field = f"fake {reason}", field
    if retry_delay is not None:
        out.error.retry_delay.FromNanoseconds(int(retry_delay * 1e9))
    if assigned:
        out.assigned_event_ids.extend(e.event_id for e in request.events)
    return out


class Recorder:
    """Wraps a script: records each call's requests (and when they came), in order."""

    def __init__(self, script: Callable[[Requests, grpc.ServicerContext, Recorder], Responses]):
        self.script = script
        self.calls: list[list[pb.PublishStreamRequest]] = []
        self.times: list[float] = []

    def ids(self, call: int) -> list[int]:
        return [r.request_id for r in self.calls[call]]

    def __call__(self, requests: Requests, context: grpc.ServicerContext) -> Responses:
        self.calls.append([])
        calls = self.calls[-1]

        def recorded() -> Requests:
            for request in requests:
                calls.append(request)
                self.times.append(time.monotonic())
                yield request

        yield from self.script(recorded(), context, self)


def echo(requests: Requests, context: grpc.ServicerContext, rec: Recorder) -> Responses:
    for request in requests:
        yield respond(answer(request))


@contextmanager
def run(
    scripts: list[StreamScript], max_outstanding: int = 1024
) -> Iterator[tuple[FakePublisher, FerryStreamPublisher]]:
    servicer = FakePublisher(stream_scripts=scripts)
    server = FakeServer(servicer)
    publisher = FerryStreamPublisher(server.addr, max_outstanding=max_outstanding)
    try:
        yield servicer, publisher
    finally:
        publisher.close(timeout=WAIT)
        server.stop()


def test_answers_out_of_order_are_matched_by_request_id() -> None:
    def backwards(requests: Requests, context: grpc.ServicerContext, rec: Recorder) -> Responses:
        one, two, three = (next(requests) for _ in range(3))
        # The last alone, then the other two together in one message, backwards.
        yield respond(answer(three, base=300))
        yield respond(answer(two, base=200), answer(one, base=100))
        yield from echo(requests, context, rec)

    recorder = Recorder(backwards)
    with run([recorder]) as (_, publisher):
        one = publisher.publish("t", b"1", key="k", event_id="e1")
        batch = publisher.publish_batch([Event("t", b"2"), Event("t", b"3", event_id="e3")])
        four = publisher.publish("t", b"4", headers={"h": "v"})
        first, entries, last = one.result(WAIT), batch.result(WAIT), four.result(WAIT)
    sent = recorder.calls[0]
    assert [r.request_id for r in sent] == [1, 2, 3]
    assert (first.event_id, first.sequence) == ("e1", 100)
    assert all(isinstance(e, PublishResult) for e in entries)
    assert [(e.event_id, e.sequence) for e in entries if isinstance(e, PublishResult)] == [
        (sent[1].events[0].event_id, 200),
        ("e3", 201),
    ]
    assert (last.event_id, last.sequence) == (sent[2].events[0].event_id, 300)
    assert len(last.event_id) == 36  # a UUIDv7, assigned by the client before sending
    assert sent[0].events[0].key == b"k"
    assert sent[2].events[0].headers[0].value == b"v"


def test_resource_exhausted_is_sent_again_after_its_retry_delay() -> None:
    refused_at: list[float] = []

    def log_full_once(
        requests: Requests, context: grpc.ServicerContext, rec: Recorder
    ) -> Responses:
        first, second = next(requests), next(requests)
        refused_at.append(time.monotonic())
        yield respond(refuse(first, C.RESOURCE_EXHAUSTED, "LOG_FULL", retry_delay=0.3))
        yield respond(answer(second))
        yield from echo(requests, context, rec)

    recorder = Recorder(log_full_once)
    with run([recorder]) as (_, publisher):
        one, two = publisher.publish("t", b"1", key="k"), publisher.publish("t", b"2", key="k")
        assert two.result(WAIT).event_id == recorder.calls[0][1].events[0].event_id
        result = one.result(WAIT)
    # The refused request went out again on the same stream, same id and event ids, after
    # the later request: the ordering caveat of a retry.
    assert recorder.ids(0) == [1, 2, 1]
    assert recorder.calls[0][2] == recorder.calls[0][0]
    assert result.event_id == recorder.calls[0][0].events[0].event_id
    assert recorder.times[2] - refused_at[0] >= 0.3


def test_unanswered_requests_go_out_again_after_shutting_down() -> None:
    def drain_after_one(
        requests: Requests, context: grpc.ServicerContext, rec: Recorder
    ) -> Responses:
        first = [next(requests) for _ in range(3)]
        yield respond(answer(first[0]))
        shutting_down = status(C.UNAVAILABLE, "SHUTTING_DOWN", retry_after=0.1)
        context.abort_with_status(rpc_status.to_status(shutting_down))

    recorder = Recorder(drain_after_one)
    with run([recorder, Recorder(echo)]) as (servicer, publisher):
        futures = [publisher.publish("t", f"{i}", key="k") for i in range(3)]
        results = [f.result(WAIT) for f in futures]
        later = publisher.publish("t", b"later").result(WAIT)  # on the new stream
        assert servicer.stream_calls == 2
    first, second = recorder.calls[0], servicer.stream_scripts[1]
    assert isinstance(second, Recorder)
    assert [r.request_id for r in first] == [1, 2, 3]
    assert second.ids(0) == [2, 3, 4]  # the unanswered ones, in order, then the new one
    assert second.calls[0][:2] == first[1:]  # same request ids, same event ids and content
    assert [r.event_id for r in results] == [r.events[0].event_id for r in first]
    assert later.event_id == second.calls[0][2].events[0].event_id


@pytest.mark.parametrize(
    ("code", "reason", "field", "assigned"),
    [
        (C.INVALID_ARGUMENT, "FIELD_INVALID", "events[0].topic", False),
        (C.DEADLINE_EXCEEDED, "KAFKA_ACK_TIMEOUT", "", True),
        (C.INTERNAL, "INTERNAL", "", False),
    ],
)
def test_a_permanent_refusal_fails_only_its_future(
    code: grpc.StatusCode, reason: str, field: str, assigned: bool
) -> None:
    def refuse_the_second(
        requests: Requests, context: grpc.ServicerContext, rec: Recorder
    ) -> Responses:
        for request in requests:
            if request.request_id == 2:
                yield respond(refuse(request, code, reason, field=field, assigned=assigned))
            else:
                yield respond(answer(request))

    recorder = Recorder(refuse_the_second)
    with run([recorder]) as (_, publisher):
        futures = [publisher.publish("t", f"{i}") for i in range(3)]
        with pytest.raises(FerryError) as caught:
            futures[1].result(WAIT)
        others = [futures[0].result(WAIT), futures[2].result(WAIT)]
    assert (caught.value.code, caught.value.reason) == (code, reason)
    assert caught.value.field == (field or None)
    second_ids = [e.event_id for e in recorder.calls[0][1].events]
    assert caught.value.assigned_event_ids == (second_ids if assigned else [])
    assert [r.event_id for r in others] == [recorder.calls[0][i].events[0].event_id for i in (0, 2)]
    assert recorder.ids(0) == [1, 2, 3]  # nothing sent again


def test_an_event_id_conflict_fails_publish_and_is_an_entry_of_publish_batch() -> None:
    def conflict(requests: Requests, context: grpc.ServicerContext, rec: Recorder) -> Responses:
        for request in requests:
            accepted = answer(request)
            entry = accepted.entries[-1]
            entry.error.code, entry.error.reason = C.ALREADY_EXISTS.value[0], "EVENT_ID_CONFLICT"
            yield respond(accepted)

    with run([Recorder(conflict)]) as (_, publisher):
        single = publisher.publish("t", b"x", event_id="taken")
        batch = publisher.publish_batch([Event("t", b"1"), Event("t", b"2", event_id="taken")])
        with pytest.raises(FerryError) as caught:
            single.result(WAIT)
        ok, failed = batch.result(WAIT)
    assert (caught.value.code, caught.value.reason) == (C.ALREADY_EXISTS, "EVENT_ID_CONFLICT")
    assert isinstance(ok, PublishResult)
    assert isinstance(failed, PublishFailure)
    assert (failed.event_id, failed.reason) == ("taken", "EVENT_ID_CONFLICT")


def test_a_permanent_stream_end_fails_the_unanswered_and_a_new_stream_serves_the_next() -> None:
    def internal_after_one(
        requests: Requests, context: grpc.ServicerContext, rec: Recorder
    ) -> Responses:
        first, _ = next(requests), next(requests)
        yield respond(answer(first))
        context.abort_with_status(rpc_status.to_status(status(C.INTERNAL, "INTERNAL")))

    recorder = Recorder(internal_after_one)
    with run([recorder, Recorder(echo)]) as (servicer, publisher):
        one, two = publisher.publish("t", b"1"), publisher.publish("t", b"2", event_id="two")
        one.result(WAIT)
        with pytest.raises(FerryError) as caught:
            two.result(WAIT)
        publisher.publish("t", b"3").result(WAIT)
        assert servicer.stream_calls == 2
    assert (caught.value.code, caught.value.reason) == (C.INTERNAL, "INTERNAL")
    assert caught.value.assigned_event_ids == ["two"]  # may be logged: publish again with it


def test_a_request_without_an_answer_fails_at_its_deadline() -> None:
    def silent(requests: Requests, context: grpc.ServicerContext, rec: Recorder) -> Responses:
        for _ in requests:  # never answers; ends when the client half-closes
            pass
        yield from ()

    with run([Recorder(silent)]) as (_, publisher):
        future = publisher.publish("t", b"x", event_id="lost", deadline=0.5)
        with pytest.raises(FerryError) as caught:
            future.result(WAIT)
    assert caught.value.code is C.DEADLINE_EXCEEDED
    assert caught.value.assigned_event_ids == ["lost"]


def test_publish_blocks_while_the_window_is_full() -> None:
    got_two, release = threading.Event(), threading.Event()

    def hold(requests: Requests, context: grpc.ServicerContext, rec: Recorder) -> Responses:
        first = [next(requests), next(requests)]
        got_two.set()
        release.wait(WAIT)
        for request in first:
            yield respond(answer(request))
        yield from echo(requests, context, rec)

    third: list[Future[PublishResult]] = []
    with run([Recorder(hold)], max_outstanding=2) as (_, publisher):
        futures = [publisher.publish("t", b"1"), publisher.publish("t", b"2")]
        blocked = threading.Thread(target=lambda: third.append(publisher.publish("t", b"3")))
        blocked.start()
        assert got_two.wait(WAIT)
        blocked.join(0.5)  # not a synchronisation: the thread must still be waiting after it
        assert blocked.is_alive()
        assert publisher.outstanding == 2
        release.set()
        blocked.join(WAIT)
        assert not blocked.is_alive()
        for future in [*futures, *third]:
            future.result(WAIT)
        assert publisher.outstanding == 0


def test_close_waits_for_every_future_and_refuses_new_publishes() -> None:
    release = threading.Event()

    def slow(requests: Requests, context: grpc.ServicerContext, rec: Recorder) -> Responses:
        first = next(requests)
        release.wait(WAIT)
        yield respond(answer(first))
        yield from echo(requests, context, rec)

    with run([Recorder(slow)]) as (_, publisher):
        future = publisher.publish("t", b"1")
        closer = threading.Thread(target=publisher.close)
        closer.start()
        release.set()
        closer.join(WAIT)
        assert future.done()
        assert future.result().sequence == 0
        with pytest.raises(RuntimeError):
            publisher.publish("t", b"2")
