"""One scenario run: a topic, a Ferry process, the workload, faults, and the check at the end.

    run = Run(env, "kill9").start()
    ... inject faults (run.kill(), run.restart(), run.probe(...)) ...
    result = run.finish()          # heal, drain, read Kafka, drain subscriptions, check

`finish` waits until Ferry's log is empty, reads the topic with a plain consumer, keeps the
subscribers acking until each subscription acked everything Kafka holds and went quiet, then
runs the checker and stops Ferry with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from chaos.checker import check, recovery_stats
from chaos.history import FAIL, OK, Attempt, History
from chaos.workload import Publisher, PublishPlan, SubscribePlan, Subscriber, channel, classify
from sidecar._gen.ferry.v1 import publisher_pb2 as ppb
from sidecar._gen.ferry.v1 import publisher_pb2_grpc
from sidecar.wal.peek import pending_event_ids
from testkit.ferry_process import FerryProcess
from testkit.kafka_admin import create_topic
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_read import read_to_end
from testkit.processes import Children
from testkit.publishing import header
from testkit.waiting import wait_until

#: Small settings so that faults heal within seconds.
FAST_FLAGS = (
    "--retry-max-backoff-s", "1",
    "--subscription-linger-s", "2", "--consumer-session-timeout-ms", "6000",
)  # fmt: skip


#: Every Ferry a run starts: stopped at interpreter exit whatever happened, and killed with
#: the process that started it.
_CHILDREN = Children()


#: Open bug with a strict xfail regression test: a wave that partly fails breaks key order.


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Env:
    """What every scenario gets: a controllable 1-broker Kafka, a scratch dir, the mode."""

    kafka: KafkaCluster
    work: Path
    full: bool = False
    soak_s: float = 1800.0

    def scratch(self, name: str) -> Path:
        path = self.work / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        return path


@dataclass
class ScenarioResult:
    """One scenario's outcome, as the report shows it."""

    name: str
    mode: str
    faults: int = 0
    verdict: dict[str, Any] = field(default_factory=dict)
    recovery_median_s: float | None = None
    recovery_max_s: float | None = None
    duration_s: float = 0.0
    drain_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.problems

    def assert_passed(self) -> None:
        if self.problems:
            raise AssertionError(f"{self.name}: " + "\n".join(self.problems))


class Run:
    """A scenario run against one Ferry process (restartable on the same data dir)."""

    def __init__(
        self,
        env: Env,
        name: str,
        *,
        bootstrap: str | None = None,
        partitions: int = 3,
        replication: int = -1,
        ferry_args: Sequence[str] = (),
        ferry_env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        publishers: int = 3,
        batch_publishers: int = 1,
        oneshot_publishers: int = 0,
        plan: dict[str, Any] | None = None,
        subscriptions: Sequence[int] = (2, 1),  # streams per subscription
        sub_plan: dict[str, Any] | None = None,
    ) -> None:
        self.env, self.name = env, name
        self.started = time.monotonic()
        self.run_id = f"{name}-{uuid.uuid4().hex[:6]}"
        self.dir = env.scratch(name)
        self.bootstrap = bootstrap or env.kafka.bootstrap
        self.topic = f"chaos-{self.run_id}"
        self.partitions, self.replication = partitions, replication
        self.history = History()
        self.ferry = FerryProcess(
            data_dir or self.dir / "wal", self.bootstrap, *FAST_FLAGS, *ferry_args,
            env=ferry_env, children=_CHILDREN, log_path=self.dir / "ferry.log",
        )  # fmt: skip
        base = PublishPlan(self.topic, **(plan or {}))
        addr = self.ferry.address
        self.publishers = [
            Publisher(self.ferry.address, self.history, base, f"p{i}", self.run_id)
            for i in range(publishers)
        ]
        self.publishers += [
            Publisher(addr, self.history, replace(base, batch=5), f"b{i}", self.run_id)
            for i in range(batch_publishers)
        ]
        self.publishers += [  # no retries: their events keep unknown outcomes
            Publisher(addr, self.history, replace(base, retry_budget_s=0), f"o{i}", self.run_id)
            for i in range(oneshot_publishers)
        ]
        self.subscriptions = [f"{self.run_id}-s{i}" for i in range(len(subscriptions))]
        self.subscribers: list[Subscriber] = []
        for sub, streams in zip(self.subscriptions, subscriptions, strict=True):
            sp = SubscribePlan(sub, [self.topic], **(sub_plan or {}))
            self.subscribers += [
                Subscriber(self.ferry.address, self.history, sp, f"{sub}-{j}")
                for j in range(streams)
            ]
        self.problems: list[str] = []
        self.extra: dict[str, Any] = {}
        self._exit_expected = False
        self._probe_seq = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, ferry: bool = True, load: bool = True) -> Run:
        create_topic(self.bootstrap, self.topic, self.partitions, self.replication)
        if ferry:
            self.start_ferry()
        if load:
            self.start_load()
        return self

    def start_load(self) -> None:
        for worker in [*self.subscribers, *self.publishers]:
            worker.start()

    def start_ferry(self, timeout: float = 60.0) -> None:
        self._exit_expected = False
        self.ferry.start(timeout)

    def kill(self) -> None:
        self._exit_expected = True
        self.ferry.kill()

    def terminate(self, timeout: float = 60.0) -> int:
        self._exit_expected = True
        return self.ferry.terminate(timeout)

    def expect_exit(self) -> None:
        """The Ferry about to run will exit on its own (a crash point): not a problem."""
        self._exit_expected = True

    def alive(self) -> bool:
        return self.ferry.alive()

    def check_alive(self) -> None:
        """Record a problem if Ferry exited without being told to."""
        if not self._exit_expected and self.ferry.proc is not None:
            code = self.ferry.proc.poll()
            if code is not None:
                self._exit_expected = True
                self.problems.append(
                    f"Ferry exited on its own with code {code}:\n{self.ferry.log_tail(30)}"
                )

    def pid(self) -> int:
        return self.ferry.pid

    # -- probes ------------------------------------------------------------------------------

    def probe(self, since: float, *, kafka: bool = True, timeout: float = 90.0) -> float | None:
        """Publish one probe event (ACK_LEVEL_KAFKA by default) until it is answered OK;
        return the seconds from `since` (the heal) to that answer, None on timeout."""
        self._probe_seq += 1
        key = f"{self.run_id}-probe"
        event_id = f"{key}-{self._probe_seq}"
        op = self.history.begin(event_id, self.topic, key, self._probe_seq, event_id.encode())
        level = ppb.ACK_LEVEL_KAFKA if kafka else ppb.ACK_LEVEL_DURABLE
        request = ppb.PublishRequest(
            event=ppb.Event(topic=self.topic, key=key.encode(), payload=op.payload,
                            event_id=event_id, headers=[header("seq", str(op.seq).encode())]),
            ack_level=level,
        )  # fmt: skip
        if kafka:
            request.kafka_wait.FromSeconds(2)
        chan = channel(self.ferry.address)
        stub = publisher_pb2_grpc.PublisherStub(chan)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    stub.Publish(request, timeout=3.0)
                except grpc.RpcError as error:
                    outcome, code, message = classify(error)
                    self.history.attempt(op, Attempt(outcome, code, t0, time.monotonic(), message))
                    self.check_alive()
                    time.sleep(0.1)
                    continue
                self.history.attempt(op, Attempt(OK, "OK", t0, time.monotonic()))
                return time.monotonic() - since
        finally:
            chan.close()
        return None

    def heal(
        self, fault: Any, *, kafka: bool = True, timeout: float = 90.0, at: float | None = None
    ) -> None:
        """Mark `fault` healed (now, or `at`) and measure the recovery with a probe."""
        fault.healed = at or time.monotonic()
        fault.recovered_s = self.probe(fault.healed, kafka=kafka, timeout=timeout)
        if fault.recovered_s is None:
            self.problems.append(f"no recovery within {timeout}s after {fault.kind}")

    # -- the end -----------------------------------------------------------------------------

    def stop_publishers(self, timeout: float = 60.0) -> None:
        for p in self.publishers:
            p.stop()
        for p in self.publishers:
            p.join(timeout)
            if p.is_alive():
                p.stop(abort=True)
                p.join(10)

    def finish(self, *, drain_timeout: float = 120.0, sub_timeout: float = 120.0,
               quiet_s: float = 2.0) -> ScenarioResult:  # fmt: skip
        """Stop the load, let the log drain, read Kafka, drain the subscriptions, check."""
        self.check_alive()
        self.stop_publishers()
        if not self.alive():
            self.start_ferry()
        t0 = time.monotonic()
        wait_until(lambda: not self.ferry.pending_rows(), drain_timeout, 0.2)
        drain_s = time.monotonic() - t0
        records = read_to_end(self.bootstrap, [self.topic])
        target = {r.event_id for r in records if r.event_id}
        self._drain_subscriptions(target, sub_timeout, quiet_s)
        views = self.history.sub_views()
        self.extra["subscribers"] = {  # per stream: opens, errors, seconds since a delivery
            w.name: [w.opened, w.errors, round(time.monotonic() - w.last_delivery, 1)]
            for w in self.subscribers
        } | {s: [sum(v.delivered.values()), len(v.ack_confirmed)] for s, v in views.items()}
        self.check_alive()
        pending = self.ferry.pending_rows()
        if pending:  # evidence: are the stuck rows already in Kafka?
            left = pending_event_ids(self.ferry.data_dir)
            self.extra["wal_leftover"] = {
                "rows": len(left), "already_in_kafka": len(set(left) & target),
                "sample": left[:5],
            }  # fmt: skip
        verdict = check(
            self.history.ops(), records, self.history.sub_views(), pending, self.subscriptions
        )
        with contextlib.suppress(Exception):
            code = self.terminate()
            if code != 0:
                self.problems.append(f"Ferry's final SIGTERM drain exited with {code}")
        self.abort()
        faults = self.history.faults
        median, worst = recovery_stats(f.recovered_s for f in faults)
        errors = dict(self.history.error_codes())
        self.extra.setdefault("errors", errors)
        self.extra["load_average_1m_at_end"] = round(os.getloadavg()[0], 1)
        result = ScenarioResult(
            self.name, "full" if self.env.full else "ci", len(faults), verdict.summary(),
            median, worst, time.monotonic() - self.started, drain_s, self.extra,
            [*self.problems, *verdict.problems()],
        )  # fmt: skip
        log(f"{self.name}: {'PASS' if result.passed else 'FAIL'} {verdict.summary()} "
            f"faults={len(faults)} recovery={median}/{worst} errors={errors}")  # fmt: skip
        return result

    def _drain_subscriptions(self, target: set[str], timeout: float, quiet_s: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = self.history.sub_views()
            complete = all(
                target <= (views[s].ack_confirmed | views[s].ack_unresolved)
                if s in views
                else not target
                for s in self.subscriptions
            )
            quiet = all(
                w.idle() and time.monotonic() - w.last_delivery >= quiet_s for w in self.subscribers
            )
            if complete and quiet:
                break
            time.sleep(0.2)
        for w in self.subscribers:
            w.stop()
        for w in self.subscribers:
            w.join(10)

    def abort(self) -> None:
        """Stop everything without checking (a scenario that cannot go on)."""
        for p in self.publishers:
            p.stop(abort=True)
        for w in self.subscribers:
            w.stop()
        with contextlib.suppress(Exception):
            self.kill()


def result_for_skip(name: str, env: Env, reason: str) -> ScenarioResult:
    return ScenarioResult(name, "full" if env.full else "ci", skipped=reason)


def fail_codes(history: History) -> set[str]:
    """The codes of definite failures the workload saw."""
    return {a.code for o in history.ops() for a in o.attempts if a.outcome == FAIL}


def codes_outside(history: History, allowed: Iterable[str]) -> set[str]:
    allowed = set(allowed) | {"OK"}
    return {a.code for o in history.ops() for a in o.attempts} - allowed
