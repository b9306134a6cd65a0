"""Subscriber faults, next to healthy streams of the same subscription:

- a client that crashes before acking (takes deliveries, drops the stream);
- a client that acks after its lease expired (must be answered EXPIRED, never APPLIED);
- a client that acks twice (stream and unary Ack; the repeats are ALREADY_ACKED);
- a client that acks ids Ferry never issued (UNKNOWN), an id longer than Ferry's (that one
  request refused, the stream open), and acks on a subscription that is
  not open (NOT_FOUND);
- a stream that stops reading: Ferry's RSS must stay bounded while the load goes on.

Everything published must still be acked through both subscriptions (the healthy streams
pick up what the faulty ones dropped).
"""

from __future__ import annotations

import queue
import secrets
import time
from collections import Counter
from collections.abc import Iterator

import grpc

from chaos.harness import Env, Run, ScenarioResult, log
from chaos.observe import Sample, sample
from chaos.workload import SubscribePlan, Subscriber, channel
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from sidecar._gen.ferry.v1 import subscriber_pb2_grpc
from sidecar.subscribe.leases import ACK_ID_RANDOM_BYTES
from testkit.subscribe_calls import ack_status

RSS_GROWTH_LIMIT_MB = 150.0


class CrashBeforeAck(Subscriber):
    """Takes a batch, never acks it, and drops the stream."""

    crashes = 0

    def handle(self, deliveries: list[spb.Delivery]) -> None:
        self.crashes += 1
        time.sleep(0.3)
        if self._call is not None:
            self._call.cancel()


class LateAcker(Subscriber):
    """Waits until every lease of the batch is over, then acks it."""

    late: Counter[str]

    def handle(self, deliveries: list[spb.Delivery]) -> None:
        deadline = max(d.lease_deadline.ToNanoseconds() / 1e9 for d in deliveries)
        time.sleep(max(0.0, deadline - time.time()) + 0.5)
        self.ack([(d.ack_id, d.event.event_id) for d in deliveries])

    def on_result(self, event_id: str, status: str) -> None:
        self.late = getattr(self, "late", Counter())
        self.late[status] += 1
        super().on_result(event_id, status)


class DoubleAcker(Subscriber):
    """Acks every batch on the stream; the scenario acks the same ids again with unary Ack."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.acked_ids: list[str] = []

    def handle(self, deliveries: list[spb.Delivery]) -> None:
        super().handle(deliveries)
        self.acked_ids.extend(d.ack_id for d in deliveries)


class UnknownAcker(Subscriber):
    """Acks its deliveries, plus ids that were never issued (UNKNOWN each), and an id longer
    than Ferry's (that message refused, the stream open)."""

    bogus: Counter[str]
    refused: Counter[str]

    def handle(self, deliveries: list[spb.Delivery]) -> None:
        super().handle(deliveries)
        bogus = [secrets.token_urlsafe(ACK_ID_RANDOM_BYTES) for _ in range(3)] + [""]
        for b in bogus:
            self.pending_acks[b] = "__bogus__"
        self.send(spb.SubscribeRequest(ack=spb.AckIds(ack_ids=bogus)))
        self.send(spb.SubscribeRequest(ack=spb.AckIds(ack_ids=["x" * 300])))

    def on_rejected(self, reason: str) -> None:
        self.refused = getattr(self, "refused", Counter())
        self.refused[reason] += 1

    def on_result(self, event_id: str, status: str) -> None:
        if event_id == "__bogus__":
            self.bogus = getattr(self, "bogus", Counter())
            self.bogus[status] += 1
            return
        super().on_result(event_id, status)


def _repeat_results(address: str, sub: str, ids: list[str]) -> Counter[str]:
    """Unary Ack of ids already acked on a stream."""
    chan = channel(address)
    try:
        stub = subscriber_pb2_grpc.SubscriberStub(chan)
        reply = stub.Ack(spb.AckRequest(subscription=sub, ack_ids=ids[:1000]), timeout=10)
        return Counter(ack_status(r.status) for r in reply.results)
    finally:
        chan.close()


class StuckStream:
    """Opens a Subscribe stream and never reads from it."""

    def __init__(self, address: str, sub: str, topic: str) -> None:
        self.chan = channel(address)
        self.requests: queue.SimpleQueue[spb.SubscribeRequest | None] = queue.SimpleQueue()
        opened = spb.SubscribeRequest(open=spb.OpenSubscription(
            subscription=sub, topics=[topic], max_outstanding_events=50,
        ))  # fmt: skip
        opened.open.lease_duration.FromSeconds(2)

        def outgoing() -> Iterator[spb.SubscribeRequest]:
            yield opened
            while (item := self.requests.get()) is not None:
                yield item

        self.call = subscriber_pb2_grpc.SubscriberStub(self.chan).Subscribe(outgoing())

    def close(self) -> None:
        self.call.cancel()
        self.requests.put(None)
        self.chan.close()


def subscriber_faults(env: Env) -> ScenarioResult:
    seconds = 240 if env.full else 25
    run = Run(env, "subscriber-faults", plan={"payload_bytes": 6000}, sub_plan={"lease_s": 3})
    sub = run.subscriptions[0]
    address, history = run.ferry.address, run.history

    def plan(lease: float = 3.0, outstanding: int = 100) -> SubscribePlan:
        return SubscribePlan(sub, [run.topic], lease_s=lease, max_outstanding=outstanding)

    crash = CrashBeforeAck(address, history, plan(), "crash")
    late = LateAcker(address, history, plan(lease=1.0, outstanding=20), "late")
    double = DoubleAcker(address, history, plan(), "double")
    unknown = UnknownAcker(address, history, plan(), "unknown")
    faulty = [crash, late, double, unknown]
    run.start()
    for w in faulty:
        w.start()
    stuck = StuckStream(address, sub, run.topic)
    history.fault("faulty subscribers + a stuck stream", f"{seconds}s")
    samples = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(2)
        if (s := sample(run.pid())) is not None:
            samples.append(s)
    stuck.close()
    for w in faulty:
        w.stop()
    for w in faulty:
        w.join(10)
    time.sleep(1)
    # Only now: an ack still on its way on the double acker's stream would otherwise meet
    # its unary repeat first (APPLIED, then ALREADY_ACKED on the stream). With the stream
    # closed, a repeat is ALREADY_ACKED (the stream's ack landed) or EXPIRED (it did not).
    repeat = _repeat_results(address, sub, double.acked_ids[-1000:])
    not_open = _not_found(address)
    result = run.finish()
    _judge(result, crash, late, unknown, repeat, not_open, samples)
    return result


def _not_found(address: str) -> str:
    chan = channel(address)
    try:
        stub = subscriber_pb2_grpc.SubscriberStub(chan)
        stub.Ack(spb.AckRequest(subscription="never-opened-here", ack_ids=["x"]), timeout=10)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name
    finally:
        chan.close()


def _judge(result: ScenarioResult, crash: CrashBeforeAck, late: LateAcker,
           unknown: UnknownAcker, repeat: Counter[str], not_open: str,
           samples: list[Sample]) -> None:  # fmt: skip
    late_statuses = getattr(late, "late", Counter())
    bogus = getattr(unknown, "bogus", Counter())
    refused = getattr(unknown, "refused", Counter())
    rss = [s.rss_mb for s in samples]
    growth = (max(rss) - rss[min(2, len(rss) - 1)]) if rss else 0.0
    result.extra.update({
        "crashes": crash.crashes, "late_ack_results": dict(late_statuses),
        "unary_repeat_ack_results": dict(repeat), "bogus_ack_results": dict(bogus),
        "overlong_ack_id_refusals": dict(refused),
        "ack_on_unopened_subscription": not_open,
        "rss_mb_first_last_max": [round(rss[0], 1), round(rss[-1], 1), round(max(rss), 1)]
        if rss else [], "rss_growth_mb": round(growth, 1),
    })  # fmt: skip
    p = result.problems
    if late_statuses["APPLIED"]:
        p.append(f"{late_statuses['APPLIED']} acks sent after the lease deadline were APPLIED")
    if not late_statuses:
        p.append("the late acker never got an ack result: no test")
    if set(repeat) - {"ALREADY_ACKED", "EXPIRED"}:
        p.append(f"repeated acks answered {dict(repeat)}, expected ALREADY_ACKED")
    if set(bogus) - {"UNKNOWN"} or not bogus:
        p.append(f"never-issued ack ids answered {dict(bogus)}, expected UNKNOWN")
    if set(refused) - {"FIELD_INVALID"} or not refused:
        p.append(f"an over-long ack id was answered {dict(refused)}, expected FIELD_INVALID")
    if not_open != "NOT_FOUND":
        p.append(f"Ack on a subscription not open here answered {not_open}, not NOT_FOUND")
    if growth > RSS_GROWTH_LIMIT_MB:
        p.append(f"Ferry's RSS grew by {growth:.0f} MB with a stuck stream (limit "
                 f"{RSS_GROWTH_LIMIT_MB:.0f} MB)")  # fmt: skip
    if not crash.crashes:
        p.append("the crashing subscriber never got a delivery: no test")
    log(f"subscriber-faults: {result.extra}")
