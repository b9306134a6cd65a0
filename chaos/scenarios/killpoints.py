"""kill -9 at chosen points, not only at random moments.

Ferry is restarted with FERRY_FAILPOINTS armed (sidecar/failpoints.py) and SIGKILLs itself
on the N-th pass through the point (N random):

- `wal.after_commit`: the log committed a transaction, no publish in it was answered (the
  client sees UNAVAILABLE or a reset; its retry with the same event id must be a duplicate,
  never a second copy in Kafka beyond the first);
- `forwarder.after_ack`: Kafka acknowledged records whose rows are not retired (they are
  sent again after the restart: duplicates, never a loss);
- `subscribe.redeliver`: a record is leased again (one stream nacks every tenth first
  delivery), so the crash lands in the middle of a redelivery.

Between the armed runs Ferry runs unarmed under the same load; the checker then proves
nothing acked was lost, through Kafka and through both subscriptions.
"""

from __future__ import annotations

import contextlib
import random
import time
import zlib
from collections import Counter

from chaos.harness import Env, Run, ScenarioResult, log
from chaos.workload import SubscribePlan, Subscriber
from sidecar._gen.ferry.v1 import subscriber_pb2 as spb
from sidecar.failpoints import ENV as FAILPOINTS_ENV
from testkit.waiting import wait_until

#: point -> range of the hit count to die on
POINTS = {
    "wal.after_commit": (1, 300),
    "forwarder.after_ack": (1, 40),
    "subscribe.redeliver": (1, 30),
}
ARMED_WAIT_S = 30.0


class Nacker(Subscriber):
    """Nacks the first delivery of one event in ten and acks the rest."""

    def handle(self, deliveries: list[spb.Delivery]) -> None:
        nack = [
            d.ack_id
            for d in deliveries
            if d.delivery_attempt == 1 and zlib.crc32(d.event.event_id.encode()) % 10 == 0
        ]
        keep = set(nack)
        self.ack([(d.ack_id, d.event.event_id) for d in deliveries if d.ack_id not in keep])
        if nack:
            self.send(spb.SubscribeRequest(nack=spb.NackIds(ack_ids=nack)))


def kill_points(env: Env) -> ScenarioResult:
    rounds = 10 if env.full else 2
    rng = random.Random()
    run = Run(env, "kill-points", sub_plan={"lease_s": 5})
    nacker = Nacker(
        run.ferry.address,
        run.history,
        SubscribePlan(run.subscriptions[0], [run.topic], lease_s=5.0, max_outstanding=200),
        "nacker",
    )
    run.start()
    nacker.start()
    hits: Counter[str] = Counter()
    try:
        for i in range(rounds):
            for point, (low, high) in POINTS.items():
                time.sleep(rng.uniform(0.5, 1.5))
                fault = run.history.fault(f"kill -9 at {point}", f"#{i + 1}")
                if _crash_at(run, point, rng.randint(low, high)):
                    hits[point] += 1
                restarted = time.monotonic()
                run.start_ferry()
                run.heal(fault, kafka=False, at=restarted)
            log(f"kill-points: round {i + 1}/{rounds}, hits {dict(hits)}")
    finally:
        nacker.stop()
        nacker.join(10)
    time.sleep(2)
    result = run.finish()
    result.extra["hits"] = dict(hits)
    result.extra["nacker_errors"] = dict(nacker.errors)
    for point in POINTS:
        if not hits[point]:
            result.problems.append(f"Ferry never died at {point} ({rounds} armed runs)")
    return result


def _crash_at(run: Run, point: str, count: int) -> bool:
    """kill -9 now, restart armed at `point`, and wait for the self-kill; True if it came."""
    run.kill()
    unarmed = dict(run.ferry.env)
    run.ferry.env = {**unarmed, FAILPOINTS_ENV: f"{point}={count}"}
    mark = run.ferry.log_path.stat().st_size if run.ferry.log_path.exists() else 0
    try:
        run.expect_exit()
        with contextlib.suppress(RuntimeError):  # it died while starting: the log says where
            run.ferry.start(60.0)
        wait_until(lambda: not run.alive(), ARMED_WAIT_S, 0.05)
        if run.alive():
            run.kill()  # not reached in time (few hits): an ordinary kill -9 then
        with open(run.ferry.log_path, "rb") as f:
            f.seek(mark)
            return b'"failpoint_hit"' in f.read()
    finally:
        run.ferry.env = unarmed
