"""`python -m chaos [--full] [--only NAME ...] [--skip NAME ...]`: run the fault scenarios
against a local Kafka started for the run, and write docs/reliability.md.

Without --full every scenario runs its short CI size (as tests/faults does); --full runs them
long (200 kills, 30 min soak, ...). --soak-minutes and --budget-minutes bound a full run: once
the budget is spent the remaining scenarios are reported as skipped.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from chaos import report
from chaos.harness import Env, ScenarioResult, log
from chaos.scenarios import SCENARIOS
from testkit.kafka_cluster import KafkaCluster
from testkit.kafka_restore import ensure_running, off_main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="long runs of every scenario")
    ap.add_argument("--only", nargs="*", default=[], help="run only these scenarios")
    ap.add_argument("--skip", nargs="*", default=[], help="leave these scenarios out")
    ap.add_argument("--soak-minutes", type=float, default=30.0)
    ap.add_argument(
        "--budget-minutes",
        type=float,
        default=0.0,
        help="stop starting scenarios after this long (0: no limit)",
    )
    ap.add_argument("--report", type=Path, default=report.ROOT / "docs" / "reliability.md")
    ap.add_argument("--work", type=Path, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--note", action="append", default=[], help="a line for the report")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the last run's results of the scenarios not run now",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the report from the last run's raw results",
    )
    args = ap.parse_args(argv)
    if args.render_only:
        report.rerender(args.report, args.note)
        return 0
    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:22} {'(full only) ' if s.full_only else ''}{s.summary}")
        return 0
    chosen = [s for s in SCENARIOS if (not args.only or s.name in args.only)
              and s.name not in args.skip and (args.full or not s.full_only)]  # fmt: skip
    # SIGTERM (e.g. a CI time limit) unwinds like Ctrl-C: Ferry, Kafka and mounts are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="ferry-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    cluster = KafkaCluster(work / "kafka", brokers=1)
    log(f"starting Kafka under {work}")
    off_main(cluster.start)
    env = Env(cluster, work, full=args.full, soak_s=args.soak_minutes * 60)
    results: list[ScenarioResult] = []
    notes = [f"soak: {args.soak_minutes:g} min"] if args.full else []
    notes += args.note
    if args.budget_minutes:
        notes.append(f"budget: {args.budget_minutes:g} min for the whole run")
    try:
        for scenario in chosen:
            spent = (time.time() - started) / 60
            if args.budget_minutes and spent > args.budget_minutes:
                results.append(
                    ScenarioResult(
                        scenario.name,
                        "full" if args.full else "ci",
                        skipped=f"run budget of {args.budget_minutes:g} min spent",
                    )
                )
                continue
            log(f"scenario {scenario.name} ({'full' if args.full else 'ci'})")
            try:
                results.append(scenario.run(env))
            except Exception as exc:
                traceback.print_exc()
                results.append(
                    ScenarioResult(
                        scenario.name,
                        "full" if args.full else "ci",
                        problems=[f"scenario crashed: {type(exc).__name__}: {exc}"],
                    )
                )
            finally:
                ensure_running(cluster)  # whatever a scenario did, the broker runs again
            report.write(*_merged(results, args.merge, started, args.full, notes), args.report)
    finally:
        cluster.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    failed = [r.name for r in results if r.problems]
    log(f"report: {args.report}; failed: {failed or 'none'}")
    return 1 if failed else 0


def _merged(
    results: list[ScenarioResult], merge: bool, started: float, full: bool, notes: list[str]
) -> tuple[list[ScenarioResult], dict[str, object]]:
    meta = report.metadata("full" if full else "ci", started, notes)
    if not merge:
        return results, meta
    old, old_meta = report.previous()
    fresh = {r.name: r for r in results}
    order = [s.name for s in SCENARIOS]
    merged = {**{r.name: r for r in old}, **fresh}
    rows = sorted(merged.values(), key=lambda r: order.index(r.name) if r.name in order else 99)
    rerun = f"{', '.join(fresh)} at {meta['generated']} ({meta['commit']}); {'; '.join(notes)}"
    meta = {**old_meta, "rerun": rerun.rstrip("; ")}
    return rows, meta


if __name__ == "__main__":
    sys.exit(main())
