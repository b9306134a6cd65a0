"""`python -m bench [--quick] [--out DIR]`: run the benchmarks, write the report and the chart.

Full mode writes docs/benchmarks.md and docs/benchmarks.png; --quick (a <= 2 minute subset)
writes build/bench-quick/ so that the published docs stay untouched. Raw results go to
results.json next to the work dir (build/bench/ or build/bench-quick/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import flows, scenarios
from bench.harness import (
    ROOT,
    EchoServer,
    clean_dir,
    install_signal_handlers,
    kafka_env,
    prune_work,
    start_ferry,
)
from bench.plan import FULL, QUICK, Plan, machine_info
from bench.rawkafka import Watermarks
from bench.sampler import Sampler
from bench.scenarios import Ctx
from bench.stats import med
from bench.workers import Pool
from testkit.processes import Children

Scenario = Callable[[Ctx, dict[str, Any]], dict[str, Any]]
SCENARIOS: list[tuple[str, Scenario]] = [
    ("s1_unary", lambda ctx, _r: scenarios.unary(ctx)),
    ("s2_batch", lambda ctx, _r: scenarios.batched(ctx)),
    ("s3_end_to_end", lambda ctx, _r: scenarios.end_to_end(ctx)),
    ("s4_fixed_load", lambda ctx, _r: scenarios.fixed_load(ctx)),
    ("s5_subscribe", lambda ctx, _r: flows.subscribe(ctx)),
    ("s7a_payload", lambda ctx, _r: flows.payload_sizes(ctx)),
    ("s7b_backlog", lambda ctx, _r: flows.wal_backlog(ctx)),
    ("s6_recovery", lambda ctx, r: flows.recovery(ctx, _raw_rate(r))),
]


def _raw_rate(scenario_results: dict[str, Any]) -> float | None:
    return med(scenario_results.get("s3_end_to_end", {}).get("raw"), "rate")


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(plan: Plan, work: Path, only: set[str]) -> dict[str, Any]:
    children = Children()
    sampler = Sampler()
    results: dict[str, Any] = {"plan": plan.as_dict(), "scenarios": {}, "timings": {}, "load": {}}
    marks: Watermarks | None = None
    t_run = time.monotonic()
    try:
        clean_dir(work)
        results["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["machine"] = machine_info(work)
        pool = Pool(children, sampler, 2, work / "logs")  # these start while Kafka does
        echo = EchoServer(children, work)
        sampler.watch("echo", echo.pid)
        say("starting Kafka")
        kafka = kafka_env(children, work)
        if kafka.pid():
            sampler.watch("kafka", kafka.pid() or 0)
        say(f"Kafka at {kafka.bootstrap}; starting Ferry")
        marks = Watermarks(kafka.bootstrap)
        ferry = start_ferry(children, work / "ferry", kafka.bootstrap, *scenarios.FERRY_ARGS)
        sampler.watch(ferry.name, ferry.pid)
        results["ferry_startup_s"] = round(ferry.startup_s, 2)
        ctx = Ctx(plan, work, children, sampler, pool, kafka, ferry, echo, marks, say)
        for key, scenario in SCENARIOS:
            if only and key not in only and key.split("_")[0] not in only:
                continue
            say(f"{key}")
            t0 = time.monotonic()
            results["load"][key] = [round(os.getloadavg()[0], 1)]
            try:
                results["scenarios"][key] = scenario(ctx, results["scenarios"])
            except Exception as exc:
                say(f"{key} FAILED: {exc}")
                results["scenarios"][key] = {"error": traceback.format_exc(limit=8)}
            results["timings"][key] = round(time.monotonic() - t0, 1)
            results["load"][key].append(round(os.getloadavg()[0], 1))
        results["ferry_peak_rss_mb"] = round(sampler.peak_rss_mb("ferry"), 1)
        results["profiles"] = ctx.profiles
    finally:
        if marks is not None:
            marks.close()
        sampler.close()
        say("stopping every process")
        children.close()
        prune_work(work)
    results["duration_s"] = round(time.monotonic() - t_run, 1)
    return results


def override(plan: Plan, settings: list[str]) -> Plan:
    """`plan` with FIELD=VALUE overrides (numbers, or comma-separated tuples of numbers)."""
    changes: dict[str, Any] = {}
    for setting in settings:
        name, _, text = setting.partition("=")
        current = getattr(plan, name.strip())
        if isinstance(current, tuple):
            changes[name.strip()] = tuple(int(v) for v in text.split(",") if v.strip())
        elif isinstance(current, bool):
            changes[name.strip()] = text.strip().lower() in {"1", "true", "yes"}
        else:
            changes[name.strip()] = type(current)(text)
    return dataclasses.replace(plan, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the <= 2 minute subset (CI)")
    parser.add_argument("--out", type=Path, help="where benchmarks.md/.png go")
    parser.add_argument("--only", default="", help="comma-separated scenarios (s1,s2,...)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a plan field, e.g. --set reps=5 (see bench/plan.py)",
    )
    parser.add_argument("--from-json", type=Path, help="only regenerate the docs from results")
    args = parser.parse_args(argv)
    plan = override(QUICK if args.quick else FULL, args.set)
    build = ROOT / "build" / ("bench-quick" if plan.quick else "bench")
    out = args.out or (build if plan.quick else ROOT / "docs")
    from bench import plot, report  # matplotlib is needed only from here on

    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        install_signal_handlers()
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        try:
            results = run(plan, build / "work", only)
        except KeyboardInterrupt as exc:
            say(f"interrupted ({exc or 'Ctrl-C'}); every process was stopped, no docs written")
            return 130
        build.mkdir(parents=True, exist_ok=True)
        (build / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    report.write(results, out / "benchmarks.md", chart="benchmarks.png")
    plot.write(results, out / "benchmarks.png")
    say(f"wrote {out / 'benchmarks.md'} and {out / 'benchmarks.png'}")
    failed = [k for k, v in results["scenarios"].items() if "error" in v]
    if failed:
        say(f"scenarios failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
