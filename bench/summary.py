"""The summary of a run: each scenario's headline value against its baseline and target."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench import tables
from bench.tables import NA, cell, med, num, table

Results = Mapping[str, Any]


@dataclass(frozen=True)
class Row:
    """One line of the summary: a measured value against its baseline and target."""

    scenario: str
    metric: str
    value: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    why: str = ""  # evidence for a missed target


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def _cores_per(s: Any, rate_path: str = "rate", cpu_path: str = "server.cpu_cores") -> str:
    return tables.cpu_us(s, rate_path, cpu_path) + " µs CPU/op"


def summary_rows(r: Results) -> list[Row]:
    sc, rows = r["scenarios"], []
    fsync = r.get("machine", {}).get("sqlite_commit_fsync", {})
    if "rows" in sc.get("s1_unary", {}):
        by_c = {row["concurrency"]: row for row in sc["s1_unary"]["rows"]}
        if by_c:
            top = by_c[max(by_c)]
            f, e = top["ferry"], top["echo"]
            ratio = _ratio(med(f, "rate"), med(e, "rate"))
            why = (
                f"Ferry {cell(f, 'server.cpu_cores', 2)} cores ({_cores_per(f)}) vs echo "
                f"{cell(e, 'server.cpu_cores', 2)} cores ({_cores_per(e)}); machine busy "
                f"{cell(f, 'machine_cpu', 2)} of 2 cores"
            )
            rows.append(
                Row(
                    f"1 Unary Publish c={max(by_c)}",
                    "calls/s",
                    cell(f, "rate"),
                    f"echo {cell(e, 'rate')}",
                    ratio,
                    "≥ 0.95\u00d7 echo",
                    _met(ratio, lambda x: x >= 0.95),
                    why,
                )
            )
            rows += _stream_rows(sc["s1_unary"].get("stream"), e)
        if 1 in by_c:
            f, e = by_c[1]["ferry"], by_c[1]["echo"]
            p50 = med(f, "lat.p50")
            why = (
                f"SQLite commit+fsync alone: p50 {num(fsync.get('p50'), 2)} ms on this disk; "
                f"echo p50 {cell(e, 'lat.p50', 2)} ms"
            )
            rows.append(
                Row(
                    "1 Unary Publish c=1",
                    "p50 latency ms",
                    cell(f, "lat.p50", 2),
                    f"echo {cell(e, 'lat.p50', 2)}",
                    _ratio(p50, med(e, "lat.p50")),
                    "≤ 1.5 ms",
                    _met(p50, lambda x: x <= 1.5),
                    why,
                )
            )
    if "ferry" in sc.get("s2_batch", {}):
        f, e = sc["s2_batch"]["ferry"], sc["s2_batch"]["echo"]
        rate = med(f, "events_rate")
        why = f"Ferry {cell(f, 'server.cpu_cores', 2)} cores, {_cores_per(f, 'events_rate')}"
        rows.append(
            Row(
                "2 PublishBatch(100) DURABLE",
                "events/s accepted",
                cell(f, "events_rate"),
                f"echo {cell(e, 'events_rate')}",
                _ratio(rate, med(e, "events_rate")),
                "≥ 150,000/s",
                _met(rate, lambda x: x >= 150_000),
                why,
            )
        )
    if "ferry" in sc.get("s3_end_to_end", {}):
        d = sc["s3_end_to_end"]
        f, raw = d["ferry"], d["raw"]
        kafka_rate = tables.probe_median(f, "kafka_rate")
        ratio = _ratio(kafka_rate, med(raw, "rate"))
        why = (
            f"Ferry {cell(f, 'server.cpu_cores', 2)} cores, {_cores_per(f, 'events_rate')}; "
            f"raw producer {_cores_per(raw, cpu_path='client_cpu')}"
        )
        rows.append(
            Row(
                "3 End to end into Kafka (sustained)",
                "events/s",
                tables.probe_cell(f, "kafka_rate"),
                f"raw producer {cell(raw, 'rate')}",
                ratio,
                "≥ 100,000/s",
                _met(kafka_rate, lambda x: x >= 100_000),
                why,
            )
        )
    if "durable" in sc.get("s4_fixed_load", {}):
        d = sc["s4_fixed_load"]
        f, k, e = d["durable"], d["kafka"], d["echo"]
        lat_why = (
            f"SQLite commit+fsync alone p90/p99 {num(fsync.get('p90'), 2)}/"
            f"{num(fsync.get('p99'), 2)} ms; machine busy {cell(f, 'machine_cpu', 2)} of 2 cores"
        )
        thread = d.get("thread") or {}
        sides = [("4 1,000/s DURABLE", f, 1.3)]
        if "stream" in d:
            sides.append(("4 1,000/s DURABLE, PublishStream", d["stream"], 0.8))
        if "durable" in thread:
            sides.append(("4 1,000/s DURABLE, forwarder thread", thread["durable"], 1.3))
        if "stream" in thread:
            sides.append(
                ("4 1,000/s DURABLE, PublishStream, forwarder thread", thread["stream"], 0.8)
            )
        for label, side, cpu_limit in sides:
            value = med(side, "lat.p99")
            rows.append(
                Row(
                    label,
                    "p99 latency ms",
                    cell(side, "lat.p99", 2),
                    f"echo {cell(e, 'lat.p99', 2)}",
                    _ratio(value, med(e, "lat.p99")),
                    "≤ 2 ms",
                    _met(value, lambda x: x <= 2.0),
                    lat_why,
                )
            )
            ratio = _ratio(med(side, "server.cpu_cores"), med(e, "server.cpu_cores"))
            rows.append(
                Row(
                    label,
                    "Ferry CPU cores",
                    cell(side, "server.cpu_cores", 3),
                    f"echo {cell(e, 'server.cpu_cores', 3)}",
                    ratio,
                    f"≤ {cpu_limit:g}\u00d7 echo",
                    _met(ratio, lambda x, limit=cpu_limit: x <= limit),
                    _cores_per(side),
                )
            )
        memory = [("4 1,000/s DURABLE", f, d.get("idle_rss_mb"))]
        if "durable" in thread:
            memory.append(
                ("4 1,000/s DURABLE, forwarder thread", thread["durable"], thread["idle_rss_mb"])
            )
        for label, side, idle in memory:
            rss = med(side, "server.peak_rss_mb")
            rows.append(
                Row(
                    label,
                    "Ferry peak RSS MB",
                    cell(side, "server.peak_rss_mb"),
                    f"echo {cell(e, 'server.peak_rss_mb')}",
                    _ratio(rss, med(e, "server.peak_rss_mb")),
                    "≤ 80 MB",
                    _met(rss, lambda x: x <= 80),
                    f"idle right after start: {num(idle, 1)} MB",
                )
            )
        rows.append(
            Row(
                "4 1,000/s KAFKA",
                "p50 / p99 latency ms",
                f"{cell(k, 'lat.p50', 2)} / {cell(k, 'lat.p99', 2)}",
                f"echo {cell(e, 'lat.p50', 2)} / {cell(e, 'lat.p99', 2)}",
                _ratio(med(k, "lat.p99"), med(e, "lat.p99")),
                NA,
                None,
            )
        )
    rows += _subscribe_rows(sc.get("s5_subscribe", {}))
    rows += _recovery_rows(sc.get("s6_recovery", {}))
    rows += _scaling_rows(sc.get("s7a_payload", {}), sc.get("s7b_backlog", {}))
    return rows


def _stream_rows(d: Mapping[str, Any] | None, unary_echo: Any) -> list[Row]:
    """PublishStream against the unary echo's calls/s at the same concurrency."""
    if not d:
        return []
    f, e = d["ferry"], d["echo"]
    ratio = _ratio(med(f, "rate"), med(unary_echo, "rate"))
    why = (
        f"Ferry {cell(f, 'server.cpu_cores', 2)} cores ({_cores_per(f)}); echo over a stream "
        f"{cell(e, 'rate')} calls/s ({_cores_per(e)})"
    )
    return [
        Row(
            f"1 PublishStream c={d['concurrency']}",
            "calls/s",
            cell(f, "rate"),
            f"unary echo {cell(unary_echo, 'rate')}",
            ratio,
            "≥ 2\u00d7 unary echo",
            _met(ratio, lambda x: x >= 2.0),
            why,
        )
    ]


def _subscribe_rows(d: Mapping[str, Any]) -> list[Row]:
    if "raw" not in d:
        return []
    raw, rows = d["raw"], []
    for key in [k for k in d if k.startswith("ferry_")]:
        f = d[key]
        rate = med(f, "rate")
        ratio = _ratio(rate, med(raw, "rate"))
        why = (
            f"Ferry {cell(f, 'server.cpu_cores', 2)} cores while streaming "
            f"({_cores_per(f)}); raw consumer {_cores_per(raw, cpu_path='client_cpu')}"
        )
        outstanding = int(key.split("_")[1])
        target = 100_000 if outstanding >= 10_000 else 50_000
        rows.append(
            Row(
                f"5 Subscribe + ack (max_outstanding_events={outstanding})",
                "events/s",
                cell(f, "rate"),
                f"raw consumer {cell(raw, 'rate')}",
                ratio,
                f"≥ {target:,}/s",
                _met(rate, lambda x, target=target: x >= target),
                why,
            )
        )
    return rows


def _recovery_rows(d: Mapping[str, Any]) -> list[Row]:
    if "drain_s" not in d:
        return []
    raw_s = d.get("raw_seconds")
    lat = d["probe_draining"].get("lat", {})
    return [
        Row(
            f"6 Backlog recovery ({d['events']:,} events)",
            "time to empty WAL s",
            num(d["drain_s"], 1),
            f"raw producer {num(raw_s, 1)} s",
            _ratio(d["drain_s"], raw_s),
            "≤ 8 s",
            _met(d["drain_s"], lambda x: x <= 8.0),
            f"drain rate {num(d.get('drain_rate'))} events/s",
        ),
        Row(
            "6 Backlog recovery",
            "publish p99 while draining ms",
            num(lat.get("p99"), 2),
            NA,
            None,
            "≤ 20 ms",
            _met(lat.get("p99"), lambda x: x <= 20.0),
        ),
    ]


def _scaling_rows(pay: Mapping[str, Any], back: Mapping[str, Any]) -> list[Row]:
    rows = []
    if pay.get("rows"):
        big = pay["rows"][-1]
        f, e = big["ferry"], big["echo"]
        size = tables.size_label(big["payload"])
        rows.append(
            Row(
                f"7 Payload {size}",
                "calls/s (16 callers)",
                cell(f, "rate"),
                f"echo {cell(e, 'rate')}",
                _ratio(med(f, "rate"), med(e, "rate")),
                f"{NA} (report)",
                None,
            )
        )
    rows += _backlog_rows(back.get("rows") or [])
    return rows


def _backlog_rows(levels: list[Mapping[str, Any]]) -> list[Row]:
    """Throughput at each backlog against none; RSS of the largest backlog against the
    smallest non-zero one (each non-zero backlog adds one stuck lane: a fixed cost)."""
    if len(levels) < 2:
        return []
    base, rows = levels[0], []
    for level in levels[1:]:
        f, b = level["ferry"], base["ferry"]
        ratio = _ratio(med(f, "rate"), med(b, "rate"))
        why = f"{_cores_per(f)} vs {_cores_per(b)} with no backlog"
        rows.append(
            Row(
                f"7 WAL backlog {level['backlog']:,} rows",
                "calls/s (16 callers)",
                cell(f, "rate"),
                f"no backlog {cell(b, 'rate')}",
                ratio,
                "flat (\u2265 0.9\u00d7)",
                _met(ratio, lambda x: x >= 0.9),
                why,
            )
        )
    nonzero = [level for level in levels if level["backlog"]]
    ref = nonzero[0] if len(nonzero) > 1 else base
    top = levels[-1]
    ratio = _ratio(med(top["ferry"], "server.peak_rss_mb"), med(ref["ferry"], "server.peak_rss_mb"))
    why = (
        f"RSS with no backlog {cell(base['ferry'], 'server.peak_rss_mb')} MB; a lane that "
        "cannot deliver keeps up to forwarder_max_in_flight/2 rows in flight, whatever the backlog"
    )
    rows.append(
        Row(
            f"7 WAL backlog {top['backlog']:,} rows",
            "peak RSS MB",
            cell(top["ferry"], "server.peak_rss_mb"),
            f"{ref['backlog']:,} rows {cell(ref['ferry'], 'server.peak_rss_mb')}",
            ratio,
            "flat (\u2264 1.1\u00d7)",
            _met(ratio, lambda x: x <= 1.1),
            why,
        )
    )
    return rows


def _mark(met: bool | None) -> str:
    return {True: "✅ met", False: "❌ not met", None: NA}[met]


def summary_table(rows: list[Row]) -> str:
    header = [
        "scenario",
        "metric",
        "Ferry: median (min\u2013max)",
        "baseline",
        "ratio",
        "target",
        "",
    ]
    body = [
        [r.scenario, r.metric, r.value, r.baseline, num(r.ratio, 2), r.target, _mark(r.met)]
        for r in rows
    ]
    return table(header, body)
