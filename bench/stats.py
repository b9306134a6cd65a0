"""Numbers: latency percentiles of one run, and median/min/max over repetitions."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PERCENTILES = (50, 90, 99, 99.9)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_ms(lat_us: Iterable[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds of microsecond samples."""
    values = sorted(lat_us)
    out = {f"p{p:g}".replace(".", ""): round(percentile(values, p) / 1000, 3) for p in PERCENTILES}
    out["max"] = round(values[-1] / 1000, 3) if values else 0.0
    out["samples"] = len(values)
    return out


def run_record(result: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The summary of one load run (the raw latencies are dropped)."""
    record: dict[str, Any] = {
        "rate": round(float(result.get("rate", 0.0)), 1),
        "ok": int(result.get("ok", 0)),
        "client_cpu": round(float(result.get("client_cpu", 0.0)), 3),
    }
    if result.get("events"):
        span = result["window"][1] - result["window"][0] if result.get("window") else 0
        record["events_rate"] = round(result["events"] / span, 1) if span > 0 else 0.0
    if result.get("lat_us"):
        record["lat"] = latency_ms(result["lat_us"])
    if result.get("errors"):
        record["errors"] = dict(result["errors"])
        record["error_details"] = dict(result.get("error_details", {}))
    record.update(extra)
    return record


def dig(record: Mapping[str, Any], path: str) -> float | None:
    """`record["a"]["b"]` for path "a.b"; None when absent."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


def stat(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, min, max and count of the values that exist."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


def over_reps(records: Sequence[Mapping[str, Any]], paths: Iterable[str]) -> dict[str, Any]:
    """For each dotted path: median/min/max over the repetitions' records."""
    return {path: stat(dig(r, path) for r in records) for path in paths}


RUN_PATHS = (
    "rate",
    "events_rate",
    "client_cpu",
    "lat.p50",
    "lat.p90",
    "lat.p99",
    "lat.p999",
    "server.cpu_cores",
    "server.peak_rss_mb",
    "server_children_cpu",
    "kafka_cpu",
    "machine_cpu",
    "others_cpu",
)


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median/min/max of a run's usual metrics, plus the raw repetitions."""
    summary = {k: v for k, v in over_reps(records, RUN_PATHS).items() if v is not None}
    errors: dict[str, int] = {}
    for r in records:
        for code, n in r.get("errors", {}).items():
            errors[code] = errors.get(code, 0) + n
    return {"stats": summary, "errors": errors, "reps": list(records)}


def med(summary: Mapping[str, Any] | None, path: str) -> float | None:
    """The median of `path` in a `summarize()` result."""
    if not summary:
        return None
    entry = summary.get("stats", {}).get(path)
    return None if entry is None else float(entry["median"])


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline
