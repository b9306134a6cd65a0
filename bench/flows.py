"""Scenarios 5-7: subscribe + ack, backlog recovery, scaling by payload and WAL backlog."""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import rawkafka
from bench.profiling import Profile
from bench.scenarios import QUICK_EXIT, Ctx, ferry_probe, measure, publish, settle, usage
from bench.stats import run_record, summarize
from sidecar.ids import new_id_block
from sidecar.model import OutgoingEvent
from sidecar.wal.slices import SliceBuilder
from sidecar.wal.store import Statements, connect
from testkit.ferry_process import FerryProcess

RECOVERY_TIMEOUT_S = 900.0
LINGER_WAIT_S = 1.2  # a subscription lingers 1 s (FERRY_ARGS) after its stream, then leaves
#: WAL depth under which the latency probe of scenario 6 stops (its own events are below it).
PROBE_STOP_DEPTH = 1000
FILL_SLICE = 1000  # events per slice of a pre-filled backlog


def subscribe(ctx: Ctx) -> dict[str, Any]:
    """Scenario 5: a Subscribe stream that acks every delivery message as it arrives, vs the
    raw consumer; each run reads the same prefilled topic from the start with a new group."""
    plan = ctx.plan
    topic = ctx.topic("sub")
    ctx.say(f"  prefilling {plan.sub_events} records")
    fill_s = rawkafka.prefill(ctx.kafka.bootstrap, topic, plan.sub_events, plan.payload)
    runs: dict[str, list[dict[str, Any]]] = {f"ferry_{m}": [] for m in plan.sub_max_outstanding}
    runs["raw"] = []
    for rep in range(plan.reps):
        ctx.say(f"  subscribe rep {rep + 1}/{plan.reps}")
        for outstanding in plan.sub_max_outstanding:
            runs[f"ferry_{outstanding}"].append(_ferry_subscribe(ctx, topic, outstanding))
        raw_job = {
            "kind": "raw_consume",
            "bootstrap": ctx.kafka.bootstrap,
            "topic": topic,
            "group": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "expected": plan.sub_events,
            "timeout": 300.0,
        }
        result = ctx.pool.run(raw_job, 1)
        t0, t1 = result["window"]
        used = usage(ctx, ctx.pool.workers[0].name, t0, t1)
        runs["raw"].append(run_record(result, join_s=result.get("join_s"), **used))
    out: dict[str, Any] = {"events": plan.sub_events, "prefill_s": round(fill_s, 2)}
    out.update({key: summarize(records) for key, records in runs.items()})
    if plan.profile:
        ctx.say("  subscribe: profiling")
        first = plan.sub_max_outstanding[0]
        rate = out[f"ferry_{first}"]["stats"].get("rate", {}).get("median") or 1.0
        joins = [r.get("join_s") or 0.0 for r in runs[f"ferry_{first}"]]
        seconds = min(plan.profile_duration, plan.sub_events / rate)
        prof = Profile(
            ctx.children,
            ctx.ferry.pid,
            statistics.median(joins) + seconds * 0.9,
            ctx.work / "profiles" / "s5_subscribe.txt",
            plan.profile_native,
        )
        record = _ferry_subscribe(ctx, topic, first, linger=False)
        ctx.profiles["s5_subscribe"] = {**prof.finish(), "run": record}  # consumer still up
        time.sleep(LINGER_WAIT_S)
    return out


def _ferry_subscribe(
    ctx: Ctx, topic: str, max_outstanding: int, linger: bool = True
) -> dict[str, Any]:
    """One Ferry Subscribe run on a new subscription; with `linger`, wait until it left."""
    job = {
        "kind": "subscribe",
        "target": ctx.ferry.address,
        "topics": [topic],
        "subscription": f"bench-sub-{uuid.uuid4().hex[:8]}",
        "expected": ctx.plan.sub_events,
        "max_outstanding": max_outstanding,
        "timeout": 300.0,
    }
    result = ctx.pool.run(job, 1)
    t0, t1 = result["window"]
    record = run_record(result, join_s=result.get("join_s"), **usage(ctx, ctx.ferry.name, t0, t1))
    record["counts"] = result.get("counts", {})
    if linger:
        time.sleep(LINGER_WAIT_S)
    return record


def payload_sizes(ctx: Ctx) -> dict[str, Any]:
    """Scenario 7a: unary Publish (DURABLE, 16 callers) by payload size, vs the echo server.

    On a fresh Ferry, so that its RSS shows what the payloads cost, not what earlier
    scenarios left behind."""
    plan, rows = ctx.plan, []
    c = 16
    ferry = ctx.start_ferry("ferry-payload", *QUICK_EXIT)
    try:
        for size in plan.payload_sizes:
            topic = ctx.topic(f"size{size}")
            ferry_runs: list[dict[str, Any]] = []
            echo_runs: list[dict[str, Any]] = []
            for rep in range(plan.reps):
                ctx.say(f"  payload {size} B rep {rep + 1}/{plan.reps}")
                for target, runs in ((ferry.address, ferry_runs), (ctx.echo.address, echo_runs)):
                    job = publish(
                        target, topic, plan, concurrency=c, payload=size,
                        duration=plan.payload_duration,
                    )  # fmt: skip
                    server = ferry.name if runs is ferry_runs else "echo"
                    runs.append(measure(ctx, server, job, plan.procs(c)))
                    if runs is ferry_runs:
                        settle(ctx, ferry)
            rows.append(
                {"payload": size, "ferry": summarize(ferry_runs), "echo": summarize(echo_runs)}
            )
    finally:
        ctx.sampler.unwatch(ferry.name)
        ferry.stop()
    return {"concurrency": c, "rows": rows}


def fill_wal(data_dir: Path, topic: str, rows: int, payload: int) -> float:
    """Write `rows` pending events straight into a fresh WAL (Ferry's schema, not running),
    in slices of a thousand with ids Ferry assigned, as its writer would."""
    t0 = time.monotonic()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = connect(data_dir)
    try:
        body, now_ms = os.urandom(payload), int(time.time() * 1000)
        sql = Statements(conn)
        conn.execute("BEGIN")
        for first in range(0, rows, FILL_SLICE):
            builder = SliceBuilder(first + 1)
            for event_id in new_id_block(min(FILL_SLICE, rows - first)).ids():
                builder.add(OutgoingEvent(event_id, topic, None, body, (), assigned_id=True))
            sql.insert_slices([builder.row(topic, now_ms)], [])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.monotonic() - t0


def wal_backlog(ctx: Ctx) -> dict[str, Any]:
    """Scenario 7b: publish cost with 0 / 100k / 1M rows already pending in the WAL.

    The backlog is written into the WAL before Ferry starts, for a topic that does not
    exist (the local Kafka does not auto-create topics), so it stays pending: the
    forwarder keeps retrying that lane (one page of rows per message timeout) while
    the live topic is published to and forwarded as usual."""
    plan, c = ctx.plan, 16
    missing = f"bench-missing-{uuid.uuid4().hex[:8]}"
    dirs = {b: ctx.work / f"ferry-backlog-{b}" for b in plan.wal_backlogs}
    fills = {b: fill_wal(dirs[b], missing, b, plan.payload) if b else 0.0 for b in dirs}
    topics = {b: ctx.topic(f"backlog{b}") for b in dirs}
    ctx.say("  WAL backlogs filled in " + ", ".join(f"{s:.1f}s" for s in fills.values()))
    runs: dict[int, list[dict[str, Any]]] = {b: [] for b in dirs}
    starts: dict[int, list[float]] = {b: [] for b in dirs}
    try:
        for rep in range(plan.reps):  # levels interleaved: a noisy spell hits them alike
            for backlog, data_dir in dirs.items():
                ctx.say(f"  WAL backlog {backlog} rep {rep + 1}/{plan.reps}")
                name = f"ferry-backlog-{backlog}"
                ferry = ctx.start_ferry(name, *QUICK_EXIT, data_dir=data_dir)
                try:
                    starts[backlog].append(ferry.startup_s)
                    job = publish(ferry.address, topics[backlog], plan, concurrency=c)
                    probe = ferry_probe(ctx, ferry, topics[backlog], pending=False)
                    runs[backlog].append(measure(ctx, name, job, plan.procs(c), probe))
                    ferry.wait_drained(120.0, below=backlog)
                finally:
                    ctx.sampler.unwatch(name)
                    ferry.stop()
    finally:
        for data_dir in dirs.values():
            shutil.rmtree(data_dir, ignore_errors=True)
    rows = [
        {
            "backlog": b,
            "fill_s": round(fills[b], 2),
            "startup_s": round(statistics.median(starts[b]), 2) if starts[b] else None,
            "ferry": summarize(runs[b]),
        }
        for b in dirs
    ]
    return {"concurrency": c, "rows": rows}


class DepthWatch:
    """Polls the WAL depth every 0.25 s on a thread until it reaches zero."""

    def __init__(self, ferry: FerryProcess, stop_file: Path) -> None:
        self.ferry, self.stop_file = ferry, stop_file
        self.curve: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="depth-watch", daemon=True)
        self._halt = threading.Event()
        self._thread.start()

    def _run(self) -> None:
        while not self._halt.is_set():
            depth = self.ferry.pending_rows()
            self.curve.append((time.time(), depth))
            if depth <= PROBE_STOP_DEPTH:
                self.stop_file.touch()
            if depth == 0:
                return
            time.sleep(0.25)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._halt.set()
        self._thread.join(5)

    def drain_window(self) -> tuple[float, float, int]:
        """(drain start, empty, depth at the start): the start is the last sample before the
        depth first fell by more than 500 rows."""
        start, peak = self.curve[0], self.curve[0][1]
        for (t, d), nxt in zip(self.curve, self.curve[1:], strict=False):
            if d >= peak:
                start, peak = (t, d), d
            if nxt[1] < peak - 500:
                break
        return start[0], self.curve[-1][0], start[1]


def recovery(ctx: Ctx, raw_rate: float | None) -> dict[str, Any]:
    """Scenario 6: N events accepted while Kafka is down, then Kafka returns: time to empty.

    A fresh Ferry (message timeout 5 s, retry backoff at most 2 s) takes N events by
    PublishBatch while the broker is stopped; then the broker starts again and the WAL
    depth is polled until zero, while a probe publishes 200/s (DURABLE) and measures
    latency. Baseline: N divided by the raw producer's rate from scenario 3."""
    plan = ctx.plan
    if not ctx.kafka.controllable:
        return {"skipped": "$KAFKA_BOOTSTRAP is an external Kafka this run cannot stop"}
    n = plan.backlog_events
    topic = ctx.topic("recovery")
    ferry = ctx.start_ferry("ferry-recovery", "--retry-max-backoff-s", "2", *QUICK_EXIT)
    stop_file = ctx.work / "recovery.stop"
    stop_file.unlink(missing_ok=True)
    out: dict[str, Any] = {"events": n}
    try:
        ctx.say("  stopping Kafka")
        ctx.kafka.stop()
        ctx.say(f"  accepting {n} events with Kafka down")
        fill = publish(
            ferry.address,
            topic,
            plan,
            concurrency=plan.batch_concurrency,
            batch=plan.batch_size,
            max_ops=n // plan.batch_size,
            duration=600.0,
        )
        fill["warmup"] = 0.0
        out["fill"] = measure(ctx, ferry.name, fill, 2)
        out["pending_before"] = ferry.pending_rows()
        probe = publish(ferry.address, topic, plan, rate=200.0, duration=RECOVERY_TIMEOUT_S)
        probe.update(warmup=0.0, stop_file=str(stop_file), lat_times=True)
        running = ctx.pool.start(probe, 1)
        depth = DepthWatch(ferry, stop_file)
        ctx.say("  starting Kafka")
        t_start = time.time()
        ctx.kafka.start()
        t_up = time.time()
        depth.join(RECOVERY_TIMEOUT_S)
        result = running.wait()
        t_drain, t_empty, from_depth = depth.drain_window()
        drain_s = t_empty - t_drain
        lat = result.pop("lat_us")
        done_at = [running.w0 + ms / 1000 for ms in result.pop("lat_t_ms")]
        during = [x for x, t in zip(lat, done_at, strict=True) if t_drain <= t <= t_empty]
        before = [x for x, t in zip(lat, done_at, strict=True) if t < t_drain]
        out.update(
            kafka_restart_s=round(t_up - t_start, 2),
            drain_started_after_s=round(t_drain - t_start, 2),
            drain_s=round(drain_s, 2),
            time_to_empty_s=round(t_empty - t_start, 2),
            drained=depth.curve[-1][1] == 0,
            drain_from=from_depth,
            drain_rate=round(from_depth / drain_s, 1) if drain_s > 0 else None,
            curve=[[round(t - t_start, 2), d] for t, d in depth.curve],
            probe_draining=run_record(
                {**result, "lat_us": during}, **usage(ctx, ferry.name, t_drain, t_empty)
            ),
            probe_before=run_record({**result, "lat_us": before}),
        )
        if raw_rate:
            out["raw_seconds"] = round(from_depth / raw_rate, 2)
    finally:
        stop_file.touch()
        if not ctx.kafka.cluster or not ctx.kafka.cluster.running():
            ctx.kafka.start()
        ctx.sampler.unwatch(ferry.name)
        ferry.stop()
    return out
