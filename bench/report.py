"""docs/benchmarks.md from the results of a run: summary against targets, details, profiles."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench import tables
from bench.summary import Row, summary_rows, summary_table
from bench.tables import NA, num, table

Results = Mapping[str, Any]


def machine(r: Results) -> str:
    m, plan = r.get("machine", {}), r.get("plan", {})
    fsync = m.get("sqlite_commit_fsync", {})
    rows = [
        [
            "cores / CPU / memory",
            f"{m.get('cores')} \u00d7 {m.get('cpu')}, {m.get('memory_gb')} GiB",
        ],
        ["kernel", m.get("kernel", NA)],
        [
            "Python / grpcio / protobuf",
            f"{m.get('python')} / {m.get('grpcio')} / {m.get('protobuf')}",
        ],
        ["confluent-kafka / librdkafka", f"{m.get('confluent_kafka')} / {m.get('librdkafka')}"],
        ["Kafka (local KRaft, 1 broker) / Java", f"{m.get('kafka')} / {m.get('java')}"],
        ["SQLite", m.get("sqlite", NA)],
        [
            "SQLite commit + fsync (WAL, synchronous=FULL) p50/p90/p99",
            " / ".join(num(fsync.get(p), 3) for p in ("p50", "p90", "p99")) + " ms",
        ],
        ["Ferry revision", m.get("ferry_revision", NA)],
        [
            "run",
            f"{r.get('started', '?')}, {'quick' if plan.get('quick') else 'full'} mode, "
            f"{plan.get('reps')} repetition(s) per side, {num(r.get('duration_s'))} s in all",
        ],
    ]
    return table(["", ""], rows)


SECTIONS: list[tuple[str, str, Callable[[Mapping[str, Any]], str], str]] = [
    (
        "s1_unary",
        "1. Unary Publish (DURABLE) by concurrency",
        tables.unary,
        "Closed loop: each caller sends its next Publish when the last one is answered. "
        "Payload 100 random bytes, no key, no event_id (Ferry assigns UUIDv7s). The "
        "PublishStream rows keep as many one-event requests in flight on one stream per load "
        "generator process, each sent when an earlier one was answered.",
    ),
    (
        "s2_batch",
        "2. PublishBatch of 100 (DURABLE)",
        tables.batch,
        "16 callers, each with one PublishBatch of 100 events in flight.",
    ),
    (
        "s3_end_to_end",
        "3. End to end into Kafka, sustained",
        tables.end_to_end,
        "PublishBatch(100) with ACK_LEVEL_KAFKA: a caller waits for Kafka's acknowledgement, so "
        "the WAL depth stays bounded (sampled from the data dir) and ingest equals delivery. The "
        "rate is Kafka's own count (growth of the topic's end offsets). Baseline: the raw "
        "confluent-kafka producer with Ferry's producer settings (idempotent, acks=all, "
        "linger.ms=2, lz4), same payloads and a 36-byte header like Ferry's event-id header.",
    ),
    (
        "s4_fixed_load",
        "4. Fixed load: 1,000 publishes/s (open loop)",
        tables.fixed,
        "A fresh Ferry process, unary Publish paced at 1,000/s from one load generator; latency "
        "from the actual send. CPU = (user+sys) / wall of the Ferry process over the window.",
    ),
    (
        "s5_subscribe",
        "5. Subscribe + ack over the stream",
        tables.subscribe,
        "A topic prefilled with records; each run reads all of them from the start with a new "
        "group. The Ferry client acks every Deliveries message with one AckIds message as it "
        "arrives; the rate counts APPLIED ack results from the first delivery to the last ack. "
        "Baseline: the raw consumer with Ferry's consumer settings, store_offsets per record and "
        "an async commit every 0.5 s.",
    ),
    (
        "s6_recovery",
        "6. Backlog recovery after a Kafka outage",
        tables.recovery,
        "A fresh Ferry (--retry-max-backoff-s 2) accepts N events by "
        "PublishBatch while the broker is stopped; the broker then starts again. A probe "
        "publishes 200/s meanwhile.",
    ),
    (
        "s7a_payload",
        "7a. Scaling by payload size",
        tables.payload,
        "Unary Publish, 16 callers, DURABLE, on a fresh Ferry process (sizes in this order).",
    ),
    (
        "s7b_backlog",
        "7b. Scaling by WAL backlog",
        tables.backlog,
        "Rows for a topic that does not exist are written into the WAL before Ferry starts, so "
        "they stay pending (the forwarder retries that lane); a live topic is then published to "
        "with 16 callers, unary DURABLE.",
    ),
]


def details(r: Results) -> str:
    parts = []
    for key, title, render, method in SECTIONS:
        data = r["scenarios"].get(key)
        if data is None:
            continue
        parts.append(f"### {title}\n\n{method}\n")
        if "error" in data:
            parts.append(f"**The scenario failed:**\n\n```\n{data['error'].strip()}\n```\n")
            continue
        parts.append(render(data) + "\n")
    return "\n".join(parts)


def profiles(r: Results) -> str:
    found = r.get("profiles") or {}
    if not found:
        return "Not profiled in this run (profiles are taken in full mode only).\n"
    titles = {
        "s1_unary_c128": "Scenario 1, unary Publish at c=128",
        "s1_stream_c128": "Scenario 1, PublishStream at c=128",
        "s2_batch": "Scenario 2, PublishBatch(100) DURABLE",
        "s3_end_to_end": "Scenario 3, end to end (PublishBatch, KAFKA ack)",
        "s4_fixed_load": "Scenario 4, unary Publish DURABLE at 1,000/s",
        "s5_subscribe": "Scenario 5, Subscribe + ack",
    }
    parts = [
        "py-spy (100 Hz, idle threads left out) on the Ferry process and its forwarder "
        "process (threads named `forwarder process: ...`) during an "
        "extra, unmeasured run of the scenario; % of all samples. *Python frame (self)*: the "
        "innermost Python frame of a sample (time in C code it called counts to it). *Thread "
        "cores* come from /proc and include threads py-spy does not sample (librdkafka "
        "`rdk:*`, gRPC). Raw collapsed stacks stay in the run's work dir (`profiles/`).\n"
    ]
    for key, prof in found.items():
        parts.append(f"### {titles.get(key, key)}\n")
        if "error" in prof:
            parts.append(f"No profile: {prof['error']}\n")
            continue
        threads = table(["thread", "cores"], [[n, num(c, 2)] for n, c in prof["thread_cpu"]])
        run = prof.get("run", {})
        rate = run.get("events_rate") or run.get("rate")
        parts.append(
            f"{prof['samples']:,} samples; the profiled run reached {num(rate)} events/s "
            f"with Ferry at {num(run.get('server', {}).get('cpu_cores'), 2)} cores.\n\n{threads}\n"
        )
        for view, label in (
            ("python_self", "Python frame (self)"),
            ("ferry_inclusive", "Ferry function (inclusive)"),
            ("native_leaf", "native leaf (syscall, SQLite, gRPC core, ...)"),
        ):
            rows = [[f"`{n}`", str(c), num(p, 1)] for n, c, p in prof.get(view, [])]
            if rows:
                parts.append(table([label, "samples", "%"], rows) + "\n")
    return "\n".join(parts)


def limits(rows: list[Row]) -> str:
    missed = [r for r in rows if r.met is False]
    if not missed:
        return "Every target with a threshold was met in this run.\n"
    lines = [
        f"- **{r.scenario}, {r.metric}**: {r.value} vs target {r.target}. {r.why}." for r in missed
    ]
    return "\n".join(lines) + "\n"


def write(r: Results, path: Path, chart: str) -> None:
    rows = summary_rows(r)
    mode = "quick" if r.get("plan", {}).get("quick") else "full"
    command = "make bench-quick" if mode == "quick" else "make bench"
    text = f"""# Ferry benchmarks

Generated by `{command}` (`python -m bench{" --quick" if mode == "quick" else ""}`); do not \
edit by hand. Every scenario runs Ferry and its baseline alternately in the same run on the \
same machine, so the **ratios** hold even where absolute numbers move with the machine's load. \
Values are the median over the repetitions, with (min-max) when there are several.

{shared_warning(r)}![throughput and latency]({chart})

## Summary against targets

{summary_table(rows)}

## Missed targets: the evidence

{limits(rows)}
## Machine

{machine(r)}

Load generators are separate processes (grpc.aio clients); Ferry (`python -m sidecar serve`),
the echo server and Kafka are separate processes too, all on 127.0.0.1. *machine busy* is the
CPU used by every process on the machine during a window (other work included): on a 2-core
machine, 2.0 means saturated. The load average counts runnable threads of every process, this
run's Kafka included (its request threads wake in bursts under load); *other processes' CPU*
is the machine's busy CPU minus that of every process this run started.

{run_table(r)}

## Details

{details(r)}
## Where the time goes

{profiles(r)}"""
    path.write_text(text.rstrip() + "\n")


def _collect(node: Any, key: str) -> list[float]:
    """Every value of `key` anywhere in a scenario's results (its repetitions' records)."""
    if isinstance(node, Mapping):
        found = [float(node[key])] if isinstance(node.get(key), int | float) else []
        return found + [x for v in node.values() for x in _collect(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in _collect(v, key)]
    return []


def shared_warning(r: Results) -> str:
    """A warning when processes this run did not start used the CPU during its windows."""
    others = sorted(_collect(r.get("scenarios", {}), "others_cpu"))
    cores = r.get("machine", {}).get("cores") or 1
    if others:
        median = others[len(others) // 2]
        if median < 0.2:
            return ""
        what = f"other processes used {median:.2f} of its {cores} cores (median over windows)"
    else:
        loads = [x for pair in r.get("load", {}).values() for x in pair]
        if not loads or max(loads) <= 1.5 * cores:
            return ""
        what = (
            f"its 1-minute load average reached {max(loads):g} on {cores} cores (runnable "
            "threads of every process, this run's Kafka included)"
        )
    return (
        f"> **The machine was shared with other work during this run**: {what}; see "
        "*Machine*. Absolute numbers, latencies above all, are worse than on a quiet machine; "
        "the ratios against the baselines measured alongside are the numbers to compare.\n\n"
    )


def run_table(r: Results) -> str:
    """Seconds and the machine's 1-minute load average per scenario."""
    rows = []
    for key, load in r.get("load", {}).items():
        others = sorted(_collect(r.get("scenarios", {}).get(key, {}), "others_cpu"))
        rows.append(
            [
                key,
                num(r.get("timings", {}).get(key), 0),
                " \u2192 ".join(str(x) for x in load),
                num(others[len(others) // 2], 2) if others else NA,
            ]
        )
    header = [
        "scenario",
        "seconds",
        "load average (1 min) at start \u2192 end",
        "other processes' CPU (cores, median of windows)",
    ]
    return table(header, rows)
