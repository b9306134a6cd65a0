"""Markdown tables of each scenario's details, from the results of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.stats import stat

Summary = Mapping[str, Any]
NA = "\u2013"  # an en dash: no value


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return NA
    if digits == 0 and abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        digits = min(digits, 1)
    return f"{value:,.{digits}f}"


def st(summary: Summary | None, path: str) -> Mapping[str, float] | None:
    if not summary:
        return None
    found: Mapping[str, float] | None = summary.get("stats", {}).get(path)
    return found


def med(summary: Summary | None, path: str) -> float | None:
    found = st(summary, path)
    return None if found is None else float(found["median"])


def cell(summary: Summary | None, path: str, digits: int = 0) -> str:
    """`median (min-max)` over the repetitions, or just the value for one repetition."""
    found = st(summary, path)
    if found is None:
        return NA
    text = num(found["median"], digits)
    if found.get("n", 1) > 1 and found["min"] != found["max"]:
        text += f" ({num(found['min'], digits)}\u2013{num(found['max'], digits)})"
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


#: Cores of Ferry's forwarder process, which "server.cpu_cores" includes.
FORWARDER_CPU = "server_children_cpu"


def cpu_us(
    summary: Summary | None, rate_path: str = "rate", cpu_path: str = "server.cpu_cores"
) -> str:
    """Server CPU microseconds per operation: cores / rate."""
    cores, rate = med(summary, cpu_path), med(summary, rate_path)
    if not cores or not rate:
        return NA
    return num(cores / rate * 1e6, 0)


def _load_row(label: str, s: Summary | None, rate_path: str = "rate", ops: str = "") -> list[str]:
    return [
        label,
        cell(s, rate_path) + ops,
        cell(s, "lat.p50", 2),
        cell(s, "lat.p90", 2),
        cell(s, "lat.p99", 2),
        cell(s, "server.cpu_cores", 2),
        cpu_us(s, rate_path),
        cpu_us(s, rate_path, FORWARDER_CPU),
        cell(s, "server.peak_rss_mb", 0),
        cell(s, "client_cpu", 2),
        cell(s, "machine_cpu", 2),
    ]


LOAD_HEADER = [
    "",
    "rate",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "server CPU (cores)",
    "server CPU µs/op",
    "of which forwarder process µs/op",
    "server peak RSS MB",
    "load gen CPU",
    "machine busy (of 2 cores)",
]


def unary(data: Mapping[str, Any]) -> str:
    rows = []
    for row in data["rows"]:
        c = row["concurrency"]
        rows.append(_load_row(f"Ferry, c={c}", row["ferry"], ops=" calls/s"))
        rows.append(_load_row(f"echo, c={c}", row["echo"], ops=" calls/s"))
    stream = data.get("stream")
    if stream:
        c = stream["concurrency"]
        rows.append(_load_row(f"Ferry PublishStream, c={c}", stream["ferry"], ops=" calls/s"))
        rows.append(_load_row(f"echo PublishStream, c={c}", stream["echo"], ops=" calls/s"))
    return table(LOAD_HEADER, rows)


def batch(data: Mapping[str, Any]) -> str:
    rows = [
        _load_row("Ferry", data["ferry"], "events_rate", " events/s"),
        _load_row("echo", data["echo"], "events_rate", " events/s"),
    ]
    text = table(LOAD_HEADER, rows)
    f = data["ferry"]
    drain = [
        ["Ferry: records into Kafka meanwhile", probe_cell(f, "kafka_rate") + " events/s"],
        ["Ferry: WAL depth growth", probe_cell(f, "pending_growth_per_s") + " rows/s"],
    ]
    return (
        text
        + "\n\nWhile ingest saturates Ferry, its forwarder keeps draining:\n\n"
        + table(["", "median (min\u2013max)"], drain)
    )


def probe_cell(summary: Summary, key: str) -> str:
    """A probe value (see scenarios.probe_summary) over the repetitions."""
    found = stat(r.get("probe", {}).get(key) for r in summary.get("reps", []))
    return cell({"stats": {key: found}} if found else None, key)


def probe_median(summary: Summary, key: str) -> float | None:
    found = stat(r.get("probe", {}).get(key) for r in summary.get("reps", []))
    return None if found is None else found["median"]


def end_to_end(data: Mapping[str, Any]) -> str:
    f, raw = data["ferry"], data["raw"]
    header = [
        "",
        "events/s into Kafka",
        "acked events/s (client)",
        "batch p50 ms",
        "batch p99 ms",
        "WAL depth max",
        "WAL growth rows/s",
        "CPU (cores)",
        "CPU µs/event",
        "of which forwarder process",
        "peak RSS MB",
    ]
    rows = [
        [
            f"Ferry, {data['concurrency']} \u00d7 PublishBatch({data['batch_size']}, KAFKA)",
            probe_cell(f, "kafka_rate"),
            cell(f, "events_rate"),
            cell(f, "lat.p50", 1),
            cell(f, "lat.p99", 1),
            probe_cell(f, "pending_max"),
            probe_cell(f, "pending_growth_per_s"),
            cell(f, "server.cpu_cores", 2),
            cpu_us(f, "events_rate"),
            cpu_us(f, "events_rate", FORWARDER_CPU),
            cell(f, "server.peak_rss_mb"),
        ],
        [
            "raw confluent-kafka producer",
            cell(raw, "rate"),
            NA,
            NA,
            NA,
            NA,
            NA,
            cell(raw, "client_cpu", 2),
            cpu_us(raw, cpu_path="client_cpu"),
            NA,
            cell(raw, "server.peak_rss_mb"),
        ],
    ]
    return table(header, rows)


def fixed(data: Mapping[str, Any]) -> str:
    header = [*LOAD_HEADER[:5], "p99.9 ms", *LOAD_HEADER[5:]]
    rows = []
    labels = (
        ("durable", "Ferry DURABLE"),
        ("kafka", "Ferry KAFKA"),
        ("stream", "Ferry DURABLE, PublishStream"),
        ("echo", "echo"),
    )
    thread = data.get("thread") or {}
    sides = [(data[k], name) for k, name in labels if k in data]
    sides += [(thread[k], f"{name}, forwarder thread") for k, name in labels if k in thread]
    for side, label in sides:
        row = _load_row(label, side, ops=" /s")
        rows.append([*row[:5], cell(side, "lat.p999", 2), *row[5:]])
    notes = []
    if idle := data.get("idle_rss_mb"):
        notes.append(f"Ferry's RSS right after start, idle: {num(idle, 1)} MB")
    if idle := thread.get("idle_rss_mb"):
        notes.append(f"with `--forwarder-mode thread`: {num(idle, 1)} MB")
    note = f"\n\n{'; '.join(notes)}." if notes else ""
    return table(header, rows) + note


def subscribe(data: Mapping[str, Any]) -> str:
    header = [
        "",
        "events/s delivered + acked",
        "group join s",
        "CPU (cores)",
        "CPU µs/event",
        "peak RSS MB",
        "client CPU",
        "machine busy",
    ]
    rows = []
    for key, label in _sub_sides(data):
        s = data[key]
        cpu_path = "client_cpu" if key == "raw" else "server.cpu_cores"
        rows.append(
            [
                label,
                cell(s, "rate"),
                _rep_cell(s, "join_s"),
                cell(s, cpu_path, 2),
                cpu_us(s, cpu_path=cpu_path),
                cell(s, "server.peak_rss_mb"),
                cell(s, "client_cpu", 2),
                cell(s, "machine_cpu", 2),
            ]
        )
    return table(header, rows)


def _sub_sides(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    sides = [
        (k, f"Ferry stream, max_outstanding_events={k.split('_')[-1]}")
        for k in data
        if k.startswith("ferry_")
    ]
    return [*sides, ("raw", "raw confluent-kafka consumer (store_offsets + commit)")]


def _rep_cell(summary: Summary, key: str) -> str:
    found = stat(r.get(key) for r in summary.get("reps", []))
    return cell({"stats": {key: found}} if found else None, key, 2)


def payload(data: Mapping[str, Any]) -> str:
    header = [
        "payload",
        "Ferry calls/s",
        "Ferry MB/s",
        "echo calls/s",
        "ratio",
        "Ferry p50 ms",
        "Ferry p99 ms",
        "Ferry CPU (cores)",
        "Ferry peak RSS MB",
        "echo peak RSS MB",
    ]
    rows = []
    for row in data["rows"]:
        f, e, size = row["ferry"], row["echo"], row["payload"]
        fr, er = med(f, "rate"), med(e, "rate")
        rows.append(
            [
                size_label(size),
                cell(f, "rate"),
                num((fr or 0) * size / 1e6, 1),
                cell(e, "rate"),
                num(fr / er, 2) if fr and er else NA,
                cell(f, "lat.p50", 2),
                cell(f, "lat.p99", 2),
                cell(f, "server.cpu_cores", 2),
                cell(f, "server.peak_rss_mb"),
                cell(e, "server.peak_rss_mb"),
            ]
        )
    return table(header, rows)


def size_label(size: int) -> str:
    if size >= 1000 and size % 1000 == 0:
        return f"{size // 1000} KB"
    return f"{size} B"


def backlog(data: Mapping[str, Any]) -> str:
    header = [
        "WAL backlog rows",
        "fill s",
        "Ferry start s",
        "calls/s",
        "vs no backlog",
        "p50 ms",
        "p99 ms",
        "into Kafka events/s",
        "CPU (cores)",
        "CPU µs/op",
        "peak RSS MB",
    ]
    rows = []
    base = med(data["rows"][0]["ferry"], "rate") if data["rows"] else None
    for row in data["rows"]:
        f = row["ferry"]
        rate = med(f, "rate")
        rows.append(
            [
                f"{row['backlog']:,}",
                num(row["fill_s"], 1),
                num(row["startup_s"], 1),
                cell(f, "rate"),
                num(rate / base, 2) if rate and base else NA,
                cell(f, "lat.p50", 2),
                cell(f, "lat.p99", 2),
                probe_cell(f, "kafka_rate"),
                cell(f, "server.cpu_cores", 2),
                cpu_us(f),
                cell(f, "server.peak_rss_mb"),
            ]
        )
    return table(header, rows)


def recovery(data: Mapping[str, Any]) -> str:
    if "skipped" in data:
        return f"Skipped: {data['skipped']}."
    fill, draining, before = data["fill"], data["probe_draining"], data["probe_before"]
    lat_d, lat_b = draining.get("lat", {}), before.get("lat", {})
    rows = [
        ["events accepted while Kafka was down", f"{data['events']:,}"],
        ["accept rate with Kafka down", f"{num(fill.get('events_rate'))} events/s"],
        ["Ferry CPU / peak RSS while accepting", _usage(fill)],
        ["Kafka restart (start() until ready)", f"{num(data['kafka_restart_s'], 1)} s"],
        ["drain started after Kafka start", f"{num(data['drain_started_after_s'], 1)} s"],
        ["WAL depth when the drain started", f"{data['drain_from']:,} rows"],
        ["time to empty the WAL (from drain start)", f"**{num(data['drain_s'], 1)} s**"],
        ["time to empty the WAL (from Kafka start)", f"{num(data['time_to_empty_s'], 1)} s"],
        ["drain rate", f"{num(data.get('drain_rate'))} events/s"],
        ["raw producer, same count (at its scenario-3 rate)", _secs(data.get("raw_seconds"))],
        ["Ferry CPU / peak RSS while draining", _usage(draining)],
        ["publish p50/p90/p99 while draining (200/s DURABLE)", _lat(lat_d)],
        ["publish p50/p90/p99 during Kafka's restart", _lat(lat_b)],
    ]
    return table(["", "value"], rows)


def _usage(record: Mapping[str, Any]) -> str:
    server = record.get("server", {})
    return f"{num(server.get('cpu_cores'), 2)} cores / {num(server.get('peak_rss_mb'))} MB"


def _lat(lat: Mapping[str, float]) -> str:
    if not lat:
        return NA
    return f"{num(lat['p50'], 2)} / {num(lat['p90'], 2)} / {num(lat['p99'], 2)} ms ({lat['samples']:,} calls)"  # noqa: E501


def _secs(value: float | None) -> str:
    return NA if value is None else f"{num(value, 1)} s"
