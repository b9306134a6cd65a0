"""Scenarios 1-4: unary publish, batched publish, end to end into Kafka, fixed load.

Each scenario runs Ferry and its baseline alternately, `plan.reps` times each, in the
same run, and returns plain data (medians/min/max via `stats.summarize`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import EchoServer, create_topic, start_ferry
from bench.plan import Plan
from bench.profiling import Profile
from bench.rawkafka import Watermarks
from bench.sampler import MACHINE, Sampler, children_of
from bench.stats import run_record, summarize
from bench.workers import Pool
from testkit.ferry_process import FerryProcess
from testkit.kafka_env import KafkaEnv
from testkit.processes import Children

DRAIN_TIMEOUT_S = 300.0
PROBE_EVERY_S = 1.0
#: Ferry flags for every instance of the run: a subscription leaves 1 s after its last stream.
FERRY_ARGS = ("--subscription-linger-s", "1")
#: For the short-lived instances: do not wait 10 s at exit for a lane that cannot deliver.
QUICK_EXIT = ("--drain-grace-s", "1")


@dataclass
class Ctx:
    """Everything a scenario needs."""

    plan: Plan
    work: Path
    children: Children
    sampler: Sampler
    pool: Pool
    kafka: KafkaEnv
    ferry: FerryProcess
    echo: EchoServer
    marks: Watermarks
    say: Callable[[str], None]
    profiles: dict[str, Any] = field(default_factory=dict)

    def topic(self, prefix: str, partitions: int = 3) -> str:
        return create_topic(self.kafka, f"bench-{prefix}-{uuid.uuid4().hex[:8]}", partitions)

    def start_ferry(self, name: str, *args: str, data_dir: Path | None = None) -> FerryProcess:
        ferry = start_ferry(
            self.children,
            data_dir or self.work / name,
            self.kafka.bootstrap,
            *FERRY_ARGS,
            *args,
            name=name,
        )
        self.sampler.watch(name, ferry.pid)
        return ferry


def publish(
    target: str,
    topic: str,
    plan: Plan,
    *,
    concurrency: int = 0,
    rate: float = 0.0,
    batch: int = 0,
    ack: str = "durable",
    payload: int | None = None,
    duration: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A `publish` job for bench.loadgen."""
    return {
        "kind": "publish",
        "target": target,
        "topic": topic,
        "payload": plan.payload if payload is None else payload,
        "concurrency": concurrency,
        "rate": rate,
        "batch": batch,
        "ack": ack,
        "warmup": plan.warmup,
        "duration": plan.duration if duration is None else duration,
        **extra,
    }


def measure(
    ctx: Ctx,
    server: str,
    job: dict[str, Any],
    procs: int,
    probe: Callable[[], dict[str, int]] | None = None,
    profile_as: str | None = None,
) -> dict[str, Any]:
    """Run a job; attach the server's CPU/RSS over the window (and probe samples/profile)."""
    batch = ctx.pool.start(job, procs)
    samples: list[dict[str, float]] = []
    prof = None
    if probe is not None or profile_as is not None:
        time.sleep(max(0.0, batch.w0 - time.time()))
        if profile_as is not None:
            prof = Profile(
                ctx.children,
                ctx.sampler.pid(server),
                batch.w1 - time.time(),
                _prof_path(ctx, profile_as),
                ctx.plan.profile_native,
            )
        while probe is not None and time.time() < batch.w1:
            samples.append({"t": time.time(), **probe()})
            time.sleep(max(0.0, min(PROBE_EVERY_S, batch.w1 - time.time() - 0.02)))
        if probe is not None:
            samples.append({"t": time.time(), **probe()})
    result = batch.wait()
    t0, t1 = result.get("window") or (batch.w0, batch.w1)
    record = run_record(result, **usage(ctx, server, t0, t1))
    if samples:
        record["probe"] = probe_summary(samples)
    if prof is not None and profile_as is not None:
        ctx.profiles[profile_as] = {**prof.finish(), "run": record}
    return record


def profiled(ctx: Ctx, name: str, topic: str, c: int, **job: Any) -> None:
    """In full mode, an extra, unmeasured publish run on Ferry with `c` callers and py-spy
    attached: its profile goes to `ctx.profiles[name]` (bench/profiling.py)."""
    plan = ctx.plan
    if not plan.profile:
        return
    ctx.say(f"  {name}: profiling")
    run = publish(
        ctx.ferry.address, topic, plan, concurrency=c, duration=plan.profile_duration, **job
    )
    measure(ctx, ctx.ferry.name, run, plan.procs(c), profile_as=name)
    settle(ctx)


def usage(ctx: Ctx, server: str, t0: float, t1: float) -> dict[str, Any]:
    """CPU/RSS of the server under test over [t0, t1], with Kafka's and the machine's CPU."""
    return {
        "server": ctx.sampler.usage(server, t0, t1).as_dict(),
        # Ferry's forwarder process (included in "server" above).
        "server_children_cpu": round(ctx.sampler.usage(children_of(server), t0, t1).cpu_cores, 3),
        "kafka_cpu": round(ctx.sampler.usage("kafka", t0, t1).cpu_cores, 3),
        "machine_cpu": round(ctx.sampler.usage(MACHINE, t0, t1).cpu_cores, 3),
        "others_cpu": round(ctx.sampler.others(t0, t1), 3),
    }


def _prof_path(ctx: Ctx, name: str) -> Path:
    return ctx.work / "profiles" / f"{name}.txt"


def probe_summary(samples: list[dict[str, float]]) -> dict[str, float]:
    """Rates and WAL depth over a window from probe samples (pending rows, Kafka records)."""
    first, last = samples[0], samples[-1]
    span = max(last["t"] - first["t"], 1e-9)
    out: dict[str, float] = {"span_s": round(span, 2)}
    if "pending" in first:
        out["pending_start"] = first["pending"]
        out["pending_end"] = last["pending"]
        out["pending_max"] = max(s["pending"] for s in samples)
        out["pending_growth_per_s"] = round((last["pending"] - first["pending"]) / span, 1)
    if "kafka" in first:
        out["kafka_rate"] = round((last["kafka"] - first["kafka"]) / span, 1)
    return out


def ferry_probe(
    ctx: Ctx, ferry: FerryProcess, topic: str, pending: bool = True
) -> Callable[[], dict[str, int]]:
    """Samples Kafka's record count of `topic` and (unless `pending` is False) the WAL depth."""
    if not pending:
        return lambda: {"kafka": ctx.marks.total(topic)}
    return lambda: {"pending": ferry.pending_rows(), "kafka": ctx.marks.total(topic)}


def settle(ctx: Ctx, ferry: FerryProcess | None = None) -> None:
    """Let the forwarder empty the WAL, so that no run pays for the previous one."""
    (ferry or ctx.ferry).wait_drained(DRAIN_TIMEOUT_S)
    time.sleep(0.3)


def unary(ctx: Ctx) -> dict[str, Any]:
    """Scenario 1: unary Publish (DURABLE) by concurrency, against the echo server."""
    plan, rows = ctx.plan, []
    topic = ctx.topic("unary")
    for c in plan.concurrencies:
        ferry_runs, echo_runs = [], []
        for rep in range(plan.reps):
            ctx.say(f"  unary c={c} rep {rep + 1}/{plan.reps}")
            job = publish(ctx.ferry.address, topic, plan, concurrency=c)
            probe = ferry_probe(ctx, ctx.ferry, topic)
            ferry_runs.append(measure(ctx, ctx.ferry.name, job, plan.procs(c), probe))
            settle(ctx)
            job = publish(ctx.echo.address, topic, plan, concurrency=c)
            echo_runs.append(measure(ctx, "echo", job, plan.procs(c)))
        rows.append(
            {"concurrency": c, "ferry": summarize(ferry_runs), "echo": summarize(echo_runs)}
        )
    stream = publish_stream(ctx, topic, max(plan.concurrencies))
    profiled(ctx, "s1_unary_c128", topic, max(plan.concurrencies))
    return {"rows": rows, "stream": stream, "payload": plan.payload}


def publish_stream(ctx: Ctx, topic: str, c: int) -> dict[str, Any]:
    """Scenario 1, streamed: `c` requests of one event in flight on PublishStream."""
    plan = ctx.plan
    ferry_runs, echo_runs = [], []
    for rep in range(plan.reps):
        ctx.say(f"  PublishStream c={c} rep {rep + 1}/{plan.reps}")
        job = publish(ctx.ferry.address, topic, plan, concurrency=c, stream=True)
        probe = ferry_probe(ctx, ctx.ferry, topic)
        ferry_runs.append(measure(ctx, ctx.ferry.name, job, plan.procs(c), probe))
        settle(ctx)
        job = publish(ctx.echo.address, topic, plan, concurrency=c, stream=True)
        echo_runs.append(measure(ctx, "echo", job, plan.procs(c)))
    profiled(ctx, "s1_stream_c128", topic, c, stream=True)
    return {"concurrency": c, "ferry": summarize(ferry_runs), "echo": summarize(echo_runs)}


def batched(ctx: Ctx) -> dict[str, Any]:
    """Scenario 2: PublishBatch of 100 (DURABLE): events/s, against the echo server.

    The Ferry runs also sample the WAL depth and Kafka's end offsets: how fast the
    forwarder drains while ingest saturates Ferry."""
    plan = ctx.plan
    topic = ctx.topic("batch")
    ferry_runs, echo_runs = [], []
    c = plan.batch_concurrency
    for rep in range(plan.reps):
        ctx.say(f"  batch rep {rep + 1}/{plan.reps}")
        job = publish(ctx.ferry.address, topic, plan, concurrency=c, batch=plan.batch_size)
        probe = ferry_probe(ctx, ctx.ferry, topic)
        ferry_runs.append(measure(ctx, ctx.ferry.name, job, plan.procs(c), probe))
        settle(ctx)
        job = publish(ctx.echo.address, topic, plan, concurrency=c, batch=plan.batch_size)
        echo_runs.append(measure(ctx, "echo", job, plan.procs(c)))
    profiled(ctx, "s2_batch", topic, c, batch=plan.batch_size)
    return {
        "batch_size": plan.batch_size,
        "concurrency": c,
        "ferry": summarize(ferry_runs),
        "echo": summarize(echo_runs),
    }


def end_to_end(ctx: Ctx) -> dict[str, Any]:
    """Scenario 3: events/s into Kafka through Ferry, sustained, vs the raw producer.

    Ferry is driven by PublishBatch with ACK_LEVEL_KAFKA from a fixed number of callers:
    a caller sends its next batch only once Kafka acknowledged the last one, so ingest
    equals delivery and the WAL depth stays bounded (it is sampled to show it). The
    rate is Kafka's own count: the growth of the topic's end offsets over the window."""
    plan = ctx.plan
    ferry_runs, raw_runs = [], []
    topic, raw_topic = ctx.topic("e2e"), ctx.topic("e2e-raw")
    c = plan.e2e_concurrency
    for rep in range(plan.reps):
        ctx.say(f"  end to end rep {rep + 1}/{plan.reps}")
        job = publish(
            ctx.ferry.address, topic, plan, concurrency=c, batch=plan.batch_size, ack="kafka"
        )
        probe = ferry_probe(ctx, ctx.ferry, topic)
        ferry_runs.append(measure(ctx, ctx.ferry.name, job, plan.procs(c), probe))
        settle(ctx)
        raw_job = {
            "kind": "raw_produce",
            "bootstrap": ctx.kafka.bootstrap,
            "topic": raw_topic,
            "payload": plan.payload,
            "warmup": plan.warmup,
            "duration": plan.duration,
        }
        raw_runs.append(measure(ctx, ctx.pool.workers[0].name, raw_job, 1))
    profiled(ctx, "s3_end_to_end", topic, c, batch=plan.batch_size, ack="kafka")
    return {
        "concurrency": c,
        "batch_size": plan.batch_size,
        "ferry": summarize(ferry_runs),
        "raw": summarize(raw_runs),
    }


def fixed_load(ctx: Ctx) -> dict[str, Any]:
    """Scenario 4: 1,000 publishes/s open loop on a fresh Ferry: latency, CPU, RSS (unary
    DURABLE and KAFKA, and DURABLE requests of one event on one PublishStream); then the same
    DURABLE runs on a fresh Ferry with `--forwarder-mode thread` (under "thread").

    Fresh processes, so that their RSS is what a Ferry that only ever saw this load has."""
    sides = fixed_runs(ctx, "ferry-fixed", ("durable", "kafka", "stream", "echo"))
    thread = fixed_runs(
        ctx, "ferry-fixed-thread", ("durable", "stream"), "--forwarder-mode", "thread"
    )
    return {"rate": ctx.plan.fixed_rate, **sides, "thread": thread}


def fixed_runs(ctx: Ctx, name: str, sides: tuple[str, ...], *args: str) -> dict[str, Any]:
    """`sides` (durable, kafka, stream, echo) at the fixed rate against a fresh Ferry started
    with `args`, `plan.reps` times each; their summaries and the Ferry's idle RSS."""
    plan = ctx.plan
    ferry = ctx.start_ferry(name, *QUICK_EXIT, *args)
    time.sleep(1.0)
    idle = ctx.sampler.usage(ferry.name, time.time() - 0.8, time.time())
    topic = ctx.topic("fixed")
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    try:
        for rep in range(plan.reps):
            ctx.say(f"  fixed load {' '.join(args) or 'default'} rep {rep + 1}/{plan.reps}")
            for side in runs:
                target = ctx.echo.address if side == "echo" else ferry.address
                job = publish(
                    target,
                    topic,
                    plan,
                    rate=plan.fixed_rate,
                    ack="kafka" if side == "kafka" else "durable",
                    duration=plan.fixed_duration,
                    stream=side == "stream",
                )
                server = "echo" if side == "echo" else ferry.name
                runs[side].append(measure(ctx, server, job, 1))
                if side != "echo":
                    settle(ctx, ferry)
        if plan.profile and not args:
            ctx.say("  fixed load: profiling")
            job = publish(
                ferry.address, topic, plan, rate=plan.fixed_rate, duration=plan.profile_duration
            )
            measure(ctx, ferry.name, job, 1, profile_as="s4_fixed_load")
            settle(ctx, ferry)
    finally:
        ctx.sampler.unwatch(ferry.name)
        ferry.stop()
    return {
        "idle_rss_mb": idle.peak_rss_mb,
        **{side: summarize(records) for side, records in runs.items()},
    }
