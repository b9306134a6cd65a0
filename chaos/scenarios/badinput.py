"""Bad input against a running Ferry (with the normal workload beside it):

- hypothesis strategies over every request message: the answers are only OK,
  INVALID_ARGUMENT, ALREADY_EXISTS, RESOURCE_EXHAUSTED, NOT_FOUND, FAILED_PRECONDITION
  (and DEADLINE_EXCEEDED for ACK_LEVEL_KAFKA, which promises delivery anyway), never
  INTERNAL or UNKNOWN, and Ferry keeps serving;
- garbage bytes, HTTP/1.1 and broken HTTP/2 on the port, half-open connections;
- messages past the gRPC receive limit (--max-event-bytes x --max-batch-events, plus framing:
  about 9.4 MiB with a batch of 10 here), events past the event size limit;
- a flood of Subscribe streams past --max-streams, also while a subscription is stopping.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import socket
import threading
import time
from collections import Counter
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.harness import Env, Run, ScenarioResult, log
from chaos.workload import channel
from sidecar._gen.ferry.v1 import publisher_pb2 as ppb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc, record_pb2, subscriber_pb2_grpc
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from testkit.kafka_admin import create_topic

ALLOWED = {"OK", "INVALID_ARGUMENT", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED", "NOT_FOUND",
           "FAILED_PRECONDITION"}  # fmt: skip
MAX_STREAMS = 8


def _header(key: str, value: bytes | None) -> record_pb2.Header:
    return record_pb2.Header(key=key) if value is None else record_pb2.Header(key=key, value=value)


def _strategies(topic: str) -> dict[str, Any]:
    # Each field is often valid, so that requests get past the first check now and then.
    names = st.sampled_from(["fuzz-sub", "fuzz-sub-2"]) | st.text(max_size=8)
    text = st.text(max_size=40)
    wild = st.builds(lambda s, n: {"seconds": s, "nanos": n},
                     st.integers(-(2**40), 2**40) | st.integers(-5, 5),
                     st.integers(-(10**9), 10**9))  # fmt: skip
    sane = st.builds(lambda s, n: {"seconds": s, "nanos": n}, st.integers(0, 700),
                     st.integers(0, 10**9 - 1))  # fmt: skip
    dur = st.none() | sane | wild
    event = st.builds(
        lambda t, k, p, h, e: ppb.Event(topic=t, key=k, payload=p, headers=h, event_id=e),
        st.sampled_from([topic]) | text, st.binary(max_size=64),
        st.binary(max_size=2048) | st.just(b""),
        st.lists(st.builds(_header, st.sampled_from(["a", "ferry-x", ""]) | text,
                           st.none() | st.binary(max_size=40)), max_size=4),
        st.sampled_from(["", "dup-id"]) | st.text(max_size=140),
    )  # fmt: skip
    good_id = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                      max_size=128)  # fmt: skip
    event = event | st.builds(  # a valid event, often, so that some publishes get through
        lambda k, p, e: ppb.Event(topic=topic, key=k, payload=p, event_id=e),
        st.binary(max_size=64), st.binary(max_size=512), st.sampled_from(["", "dup-id"]) | good_id,
    )  # fmt: skip
    level = st.sampled_from([0, 1, 2]) | st.integers(-3, 4)
    publish = st.builds(lambda e, lv, w: ppb.PublishRequest(event=e, ack_level=lv, kafka_wait=w),
                        event, level, dur) | st.builds(ppb.PublishRequest)  # fmt: skip
    batch = st.builds(lambda es, lv: ppb.PublishBatchRequest(events=es, ack_level=lv),
                      st.lists(event, max_size=5), level)  # fmt: skip
    ids = st.lists(st.text(max_size=30), max_size=4)
    ack = st.builds(lambda s, i: spb.AckRequest(subscription=s, ack_ids=i), names, ids)
    nack = st.builds(
        lambda s, i, d: spb.NackRequest(subscription=s, ack_ids=i, redelivery_delay=d),
        names,
        ids,
        dur,
    )
    extend = st.builds(
        lambda s, i, d: spb.ExtendLeaseRequest(subscription=s, ack_ids=i, lease_duration=d),
        names,
        ids,
        dur,
    )
    opening = st.builds(
        lambda s, ts, d, m, b, a, dl, sp: spb.SubscribeRequest(open=spb.OpenSubscription(
            subscription=s, topics=ts, lease_duration=d, max_outstanding_events=m,
            max_outstanding_bytes=b, max_delivery_attempts=a, dead_letter_topic=dl,
            start_position=sp)),
        names, st.lists(st.sampled_from([topic]) | text, max_size=3), dur,
        st.just(0) | st.integers(1, 1000) | st.integers(-(2**31), 2**31 - 1),
        st.just(0) | st.integers(-(2**63), 2**63 - 1), st.just(0) | st.integers(-3, 5),
        st.sampled_from(["", topic, "dlq-topic"]) | text,
        st.sampled_from([0, 1, 2]) | st.integers(-2, 4),
    )  # fmt: skip
    later = st.one_of(
        st.builds(lambda i: spb.SubscribeRequest(ack=spb.AckIds(ack_ids=i)), ids),
        st.builds(lambda i: spb.SubscribeRequest(nack=spb.NackIds(ack_ids=i)), ids),
        st.builds(lambda i, d: spb.SubscribeRequest(
            extend=spb.ExtendIds(ack_ids=i, lease_duration=d)), ids, dur),
        st.just(spb.SubscribeRequest()), opening,
    )  # fmt: skip
    valid_open = st.builds(
        lambda s, d: spb.SubscribeRequest(open=spb.OpenSubscription(
            subscription=s, topics=[topic], lease_duration=d)),
        st.sampled_from(["fuzz-sub", "fuzz-sub-2"]), st.none() | sane,
    )  # fmt: skip
    stream = st.builds(
        lambda first, rest: [first, *rest], valid_open | opening, st.lists(later, max_size=3)
    ) | st.lists(opening | later, max_size=4)
    return {"Publish": publish, "PublishBatch": batch, "Ack": ack, "Nack": nack,
            "ExtendLease": extend, "Subscribe": stream}  # fmt: skip


def _call_stream(stub: Any, messages: list[spb.SubscribeRequest]) -> str:
    call = stub.Subscribe(iter(messages), timeout=3)
    timer = threading.Timer(1.5, call.cancel)
    timer.start()
    try:
        for _ in call:
            pass
        return "OK"
    except grpc.RpcError as error:
        name = error.code().name
        return "OK" if name in {"CANCELLED", "DEADLINE_EXCEEDED"} else name  # ours
    finally:
        timer.cancel()


def _answer(stub: Any, method: str, request: Any) -> str:
    if method == "Subscribe":
        return _call_stream(stub, request)
    try:
        getattr(stub, method)(request, timeout=10)
        return "OK"
    except grpc.RpcError as error:
        code = error.code().name
    if code == "DEADLINE_EXCEEDED" and getattr(request, "ack_level", 0) == ppb.ACK_LEVEL_KAFKA:
        return "OK"  # logged; the (possibly 1 ns) kafka_wait ran out: delivered later
    return code


def _recorder(seen: Counter[str], stub: Any, method: str) -> Any:
    def check_one(request: Any) -> None:
        seen[f"{method}:{_answer(stub, method, request)}"] += 1

    return check_one


def fuzz(address: str, topic: str, examples: int) -> Counter[str]:
    """Every strategy against its method; the answers counted as "Method:CODE"."""
    chan = channel(address)
    pub, sub = publisher_pb2_grpc.PublisherStub(chan), subscriber_pb2_grpc.SubscriberStub(chan)
    seen: Counter[str] = Counter()
    for method, strategy in _strategies(topic).items():
        stub = sub if method in {"Ack", "Nack", "ExtendLease", "Subscribe"} else pub
        count = examples // 3 if method == "Subscribe" else examples  # streams take ~1.5 s
        runner = settings(
            max_examples=count, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        )(given(strategy)(_recorder(seen, stub, method)))  # fmt: skip
        runner()
    chan.close()
    return seen


def garbage(port: int, rounds: int) -> int:
    """Junk on the port; return how many connections were made."""
    payloads = [
        lambda: os.urandom(random.randint(1, 65536)),
        lambda: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        lambda: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(random.randint(1, 4096)),
        lambda: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        lambda: b"",
    ]
    held = []
    for i in range(rounds):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        with contextlib.suppress(OSError):
            s.sendall(random.choice(payloads)())
        if i % 10 == 0:
            held.append(s)  # half-open: left hanging while the rest goes on
        else:
            s.close()
    for s in held:
        s.close()
    return rounds


def oversized(address: str, topic: str) -> dict[str, str]:
    chan = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
    stub = publisher_pb2_grpc.PublisherStub(chan)
    out = {}
    for name, size in (("17MiB", 17 * 2**20), ("2MiB", 2 * 2**20)):
        ev = ppb.Event(topic=topic, payload=os.urandom(size), event_id=f"big-{name}-{size}")
        try:
            stub.Publish(ppb.PublishRequest(event=ev), timeout=30)
            out[name] = "OK"
        except grpc.RpcError as error:
            out[name] = error.code().name
    chan.close()
    return out


def flood(address: str, topic: str, count: int) -> Counter[str]:
    """Open `count` streams at once on one subscription; hold them 2 s; count the answers."""

    def one(_: int) -> str:
        chan = channel(address)
        try:
            req = spb.SubscribeRequest(open=spb.OpenSubscription(subscription="flood",
                                                                 topics=[topic]))  # fmt: skip
            call = subscriber_pb2_grpc.SubscriberStub(chan).Subscribe(iter([req]), timeout=60)
            first = next(call)
            if first.WhichOneof("response") != "opened":
                return "NO_OPENED"
            time.sleep(2)
            call.cancel()
            return "OPENED"
        except grpc.RpcError as error:
            return error.code().name
        finally:
            chan.close()

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return Counter(pool.map(one, range(count)))


def bad_input(env: Env) -> ScenarioResult:
    examples = 400 if env.full else 60
    run = Run(env, "bad-input", subscriptions=(1, 1))
    fuzz_topic = f"{run.topic}-fuzz"
    create_topic(run.bootstrap, fuzz_topic, 1)
    run.ferry.args += ["--max-streams", str(MAX_STREAMS), "--max-batch-events", "10",
                       "--topic-allowlist", f"{run.topic},{fuzz_topic}"]  # fmt: skip
    run.start()
    fault = run.history.fault("bad input", f"{examples} examples per message")
    seen = fuzz(run.ferry.address, fuzz_topic, examples)
    run.check_alive()
    junk = garbage(run.ferry.port, 60 if env.full else 30)
    big = oversized(run.ferry.address, fuzz_topic)
    allowed_streams = MAX_STREAMS - 2  # the workload holds 2
    flooded = flood(run.ferry.address, fuzz_topic, 30)
    time.sleep(2.2)  # the flood subscription lingers 2 s, then stops: flood it while it stops
    flooded_stopping = flood(run.ferry.address, fuzz_topic, 30)
    after = flood(run.ferry.address, fuzz_topic, 1)
    run.heal(fault, kafka=False)
    serving = _serving(run.ferry.address)
    result = run.finish()
    bad = {k: v for k, v in seen.items() if k.split(":")[1] not in ALLOWED}
    result.extra.update({"answers": dict(seen), "garbage_connections": junk, "oversized": big,
                         "flood": dict(flooded), "flood_while_stopping": dict(flooded_stopping),
                         "serving_after": serving})  # fmt: skip
    p = result.problems
    if bad:
        p.append(f"answers outside {sorted(ALLOWED)}: {bad}")
    if big.get("17MiB") != "RESOURCE_EXHAUSTED" or big.get("2MiB") != "INVALID_ARGUMENT":
        p.append(f"oversized messages answered {big}")
    for name, counts in (("flood", flooded), ("flood while stopping", flooded_stopping)):
        if counts["OPENED"] > allowed_streams or set(counts) - {"OPENED", "RESOURCE_EXHAUSTED"}:
            p.append(f"{name}: {dict(counts)}; at most {allowed_streams} may open "
                     f"(--max-streams {MAX_STREAMS}), the rest RESOURCE_EXHAUSTED")  # fmt: skip
    if after["OPENED"] != 1:
        p.append(f"after the flood a single stream answered {dict(after)}")
    if not serving:
        p.append("Ferry stopped serving after bad input")
    log(f"bad-input: {result.extra}")
    return result


def _serving(address: str) -> bool:
    chan = channel(address)
    try:
        reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False
    finally:
        chan.close()
