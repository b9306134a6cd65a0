"""The harness's side of the load generators: a pool of `bench.loadgen` processes.

`Pool.run(job, procs)` splits a job over `procs` workers (concurrency, rate and
max_ops are divided), starts them at a common wall-clock `start_at` and merges their
results: counts and rates add up, latencies are pooled before taking percentiles.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.sampler import Sampler
from testkit.processes import Children

START_DELAY_S = 0.3  # time for every worker to get its job before the common start


class Worker:
    def __init__(self, children: Children, index: int, log: Path) -> None:
        self.name = f"loadgen-{index}"
        self.proc = children.spawn(
            self.name, [sys.executable, "-m", "bench.loadgen"], log, pipes=True, stop_timeout=5
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode())
        self._lines.put("")

    def submit(self, job: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name} gave no result within {timeout:.0f}s") from None
        if not line:
            raise RuntimeError(f"{self.name} exited (code {self.proc.poll()})")
        result: dict[str, Any] = json.loads(line)
        if "failure" in result:
            raise RuntimeError(f"{self.name}: {result['failure']}")
        return result


class Pool:
    """Long-lived load generator processes (spawned once: no import cost per run)."""

    def __init__(self, children: Children, sampler: Sampler, size: int, logs: Path) -> None:
        self.workers = [Worker(children, i, logs / f"loadgen-{i}.log") for i in range(size)]
        for w in self.workers:
            sampler.watch(w.name, w.proc.pid)

    def start(self, job: dict[str, Any], procs: int = 1, delay: float = START_DELAY_S) -> Batch:
        """Hand `job` to `procs` workers, starting `delay` s from now; collect with `.wait()`."""
        procs = max(1, min(procs, len(self.workers)))
        start_at = time.time() + delay
        parts = []
        for i in range(procs):
            part = {**job, "start_at": start_at}
            for key in ("concurrency", "max_ops", "expected"):
                if job.get(key):
                    part[key] = job[key] // procs + (1 if i < job[key] % procs else 0)
            if job.get("rate"):
                part["rate"] = job["rate"] / procs
            parts.append(part)
        used = self.workers[:procs]
        for worker, part in zip(used, parts, strict=True):
            worker.submit(part)
        warm = start_at + job.get("warmup", 0.0)
        return Batch(used, warm, warm + job.get("duration", 0.0), job)

    def run(self, job: dict[str, Any], procs: int = 1) -> dict[str, Any]:
        return self.start(job, procs).wait()


class Batch:
    """A job running on some workers; `w0`/`w1` are its planned wall-clock window."""

    def __init__(self, workers: list[Worker], w0: float, w1: float, job: dict[str, Any]) -> None:
        self.workers, self.w0, self.w1, self.job = workers, w0, w1, job

    def wait(self) -> dict[str, Any]:
        budget = self.job.get("duration", 0.0) + self.job.get("timeout", 30.0) + 60.0
        deadline = time.time() + max(budget, self.w1 - time.time() + 60.0)
        results = [w.result(max(1.0, deadline - time.time())) for w in self.workers]
        return merge(results)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the workers' results: sums, pooled latencies, the union window."""
    if len(results) == 1:
        return results[0]
    merged: dict[str, Any] = {"parts": len(results)}
    for key in ("ok", "events", "rate", "client_cpu", "bytes"):
        if any(key in r for r in results):
            merged[key] = sum(r.get(key, 0) for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r.get("errors", {}).items():
            errors[code] = errors.get(code, 0) + n
    merged["errors"] = errors
    merged["error_details"] = {k: v for r in results for k, v in r.get("error_details", {}).items()}
    merged["lat_us"] = [x for r in results for x in r.get("lat_us", [])]
    windows = [r["window"] for r in results if r.get("window")]
    if windows:
        merged["window"] = [min(w[0] for w in windows), max(w[1] for w in windows)]
    return merged
