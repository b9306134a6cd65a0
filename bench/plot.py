"""docs/benchmarks.png: the run's main numbers as one figure of eight panels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench import tables
from bench.tables import med, st

FERRY, BASE, BASE2 = "#1f77b4", "#999999", "#ff7f0e"
Results = Mapping[str, Any]


def _err(summary: Any, path: str) -> tuple[float, float, float]:
    found = st(summary, path)
    if found is None:
        return 0.0, 0.0, 0.0
    m = found["median"]
    return m, m - found["min"], found["max"] - m


def _empty(ax: Axes, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def unary_throughput(ax: Axes, data: Any) -> None:
    title = "1 · Unary Publish throughput"
    if not data or "rows" not in data:
        return _empty(ax, title)
    cs = [row["concurrency"] for row in data["rows"]]
    for side, color, label in (("ferry", FERRY, "Ferry (DURABLE)"), ("echo", BASE, "echo")):
        vals = [_err(row[side], "rate") for row in data["rows"]]
        ax.errorbar(
            cs,
            [v[0] for v in vals],
            yerr=[[v[1] for v in vals], [v[2] for v in vals]],
            marker="o",
            color=color,
            label=label,
            capsize=3,
        )
    ax.set_xscale("log")
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("calls/s")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend()
    return None


def unary_latency(ax: Axes, data: Any) -> None:
    title = "1 · Unary Publish latency"
    if not data or "rows" not in data:
        return _empty(ax, title)
    cs = [row["concurrency"] for row in data["rows"]]
    for side, color in (("ferry", FERRY), ("echo", BASE)):
        for pct, style in (("p50", "-"), ("p99", "--")):
            ys = [med(row[side], f"lat.{pct}") or float("nan") for row in data["rows"]]
            name = "Ferry" if side == "ferry" else "echo"
            ax.plot(cs, ys, style, marker="o", color=color, label=f"{name} {pct}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(cs, [str(c) for c in cs])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return None


def fixed_latency(ax: Axes, data: Any) -> None:
    title = "4 · Latency at 1,000 publishes/s"
    if not data or "durable" not in data:
        return _empty(ax, title)
    pcts = ["p50", "p90", "p99", "p999"]
    sides = (
        ("durable", "Ferry DURABLE", FERRY),
        ("kafka", "Ferry KAFKA", BASE2),
        ("echo", "echo", BASE),
    )
    width = 0.27
    for i, (key, label, color) in enumerate(sides):
        ys = [med(data[key], f"lat.{p}") or 0.0 for p in pcts]
        ax.bar([x + (i - 1) * width for x in range(len(pcts))], ys, width, label=label, color=color)
    ax.axhline(1.0, color="green", lw=0.8, ls=":", label="targets: p90 1 ms, p99 2 ms")
    ax.axhline(2.0, color="green", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xticks(range(len(pcts)), ["p50", "p90", "p99", "p99.9"])
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return None


def side_by_side(ax: Axes, sc: Results) -> None:
    """Events/s of Ferry and its baseline for scenarios 2, 3 and 5."""
    bars: list[tuple[str, float | None, float | None, str]] = []
    if "ferry" in sc.get("s2_batch", {}):
        d = sc["s2_batch"]
        bars.append(
            (
                "2 batch\naccepted",
                med(d["ferry"], "events_rate"),
                med(d["echo"], "events_rate"),
                "echo",
            )
        )
    if "ferry" in sc.get("s3_end_to_end", {}):
        d = sc["s3_end_to_end"]
        bars.append(
            (
                "3 into\nKafka",
                tables.probe_median(d["ferry"], "kafka_rate"),
                med(d["raw"], "rate"),
                "raw producer",
            )
        )
    d5 = sc.get("s5_subscribe", {})
    for key in [k for k in d5 if k.startswith("ferry_")]:
        bars.append(
            (
                f"5 subscribe\n(outst. {key.split('_')[1]})",
                med(d5[key], "rate"),
                med(d5["raw"], "rate"),
                "raw consumer",
            )
        )
    title = "2/3/5 · events/s: Ferry vs baseline"
    if not bars:
        return _empty(ax, title)
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] or 0 for b in bars], 0.4, color=FERRY, label="Ferry")
    ax.bar(
        [x + 0.2 for x in xs],
        [b[2] or 0 for b in bars],
        0.4,
        color=BASE,
        label="baseline (echo / raw client)",
    )
    for x, (_, f, b, _) in zip(xs, bars, strict=True):
        if f and b:
            ax.text(x - 0.2, f, f"{f / b:.2f}\u00d7", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("events/s (log)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return None


def payload_scaling(ax: Axes, data: Any) -> None:
    title = "7a · Throughput by payload size (16 callers)"
    if not data or not data.get("rows"):
        return _empty(ax, title)
    sizes = [row["payload"] for row in data["rows"]]
    for side, color, label in (("ferry", FERRY, "Ferry"), ("echo", BASE, "echo")):
        ax.plot(
            sizes,
            [med(row[side], "rate") or float("nan") for row in data["rows"]],
            marker="o",
            color=color,
            label=f"{label} calls/s",
        )
    ax.set_xscale("log")
    ax.set_xticks(sizes, [tables.size_label(s) for s in sizes])
    ax.set_ylabel("calls/s")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    rss = [med(row["ferry"], "server.peak_rss_mb") or float("nan") for row in data["rows"]]
    twin.plot(sizes, rss, ":", marker="s", color=BASE2, label="Ferry peak RSS MB")
    twin.set_ylabel("MB")
    twin.set_ylim(0, max([r for r in rss if r == r] or [1.0]) * 1.4)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    return None


def backlog_scaling(ax: Axes, data: Any) -> None:
    title = "7b · Publish cost by WAL backlog"
    if not data or not data.get("rows"):
        return _empty(ax, title)
    labels = [f"{row['backlog']:,}" for row in data["rows"]]
    xs = range(len(labels))
    rates = [med(row["ferry"], "rate") or 0.0 for row in data["rows"]]
    ax.bar(list(xs), rates, 0.5, color=FERRY, label="calls/s")
    ax.set_xticks(list(xs), labels)
    ax.set_xlabel("rows pending in the WAL")
    ax.set_ylabel("calls/s")
    twin = ax.twinx()
    rss = [med(row["ferry"], "server.peak_rss_mb") or float("nan") for row in data["rows"]]
    twin.plot(list(xs), rss, ":", marker="s", color=BASE2, label="peak RSS MB")
    twin.set_ylabel("MB")
    twin.set_ylim(0, max([r for r in rss if r == r] or [1.0]) * 1.4)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    return None


def recovery_curve(ax: Axes, data: Any) -> None:
    title = "6 · WAL depth after Kafka returns"
    if not data or "curve" not in data:
        return _empty(ax, title)
    ts, ds = zip(*data["curve"], strict=True)
    ax.plot(ts, ds, color=FERRY)
    ax.axvline(data["kafka_restart_s"], color=BASE, ls=":", label="Kafka ready")
    ax.set_xlabel("seconds since Kafka start")
    ax.set_ylabel("rows pending")
    lat = data.get("probe_draining", {}).get("lat", {})
    if lat:
        ax.text(
            0.02,
            0.5,
            f"publish while draining:\np50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms",
            ha="left",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
        )
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    return None


def cpu_per_op(ax: Axes, sc: Results) -> None:
    """Server CPU microseconds per event: Ferry's cost against the baseline's."""
    items: list[tuple[str, Any, Any, str]] = []
    rows1 = sc.get("s1_unary", {}).get("rows") or []
    if rows1:
        top = rows1[-1]
        items.append((f"1 unary\nc={top['concurrency']}", top["ferry"], top["echo"], "rate"))
    if "ferry" in sc.get("s2_batch", {}):
        items.append(("2 batch", sc["s2_batch"]["ferry"], sc["s2_batch"]["echo"], "events_rate"))
    if "durable" in sc.get("s4_fixed_load", {}):
        d = sc["s4_fixed_load"]
        items.append(("4 1,000/s", d["durable"], d["echo"], "rate"))
    title = "Server CPU per event (µs): Ferry vs echo"
    if not items:
        return _empty(ax, title)

    def per(summary: Any, path: str) -> float:
        cores, rate = med(summary, "server.cpu_cores"), med(summary, path)
        return cores / rate * 1e6 if cores and rate else 0.0

    xs = range(len(items))
    ax.bar([x - 0.2 for x in xs], [per(i[1], i[3]) for i in items], 0.4, color=FERRY, label="Ferry")
    ax.bar([x + 0.2 for x in xs], [per(i[2], i[3]) for i in items], 0.4, color=BASE, label="echo")
    ax.set_xticks(list(xs), [i[0] for i in items], fontsize=8)
    ax.set_ylabel("µs of server CPU per event")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return None


def write(results: Results, path: Path) -> None:
    sc = results["scenarios"]
    fig, axes = plt.subplots(2, 4, figsize=(22, 10))
    unary_throughput(axes[0][0], sc.get("s1_unary"))
    unary_latency(axes[0][1], sc.get("s1_unary"))
    fixed_latency(axes[0][2], sc.get("s4_fixed_load"))
    side_by_side(axes[0][3], sc)
    cpu_per_op(axes[1][0], sc)
    payload_scaling(axes[1][1], sc.get("s7a_payload"))
    backlog_scaling(axes[1][2], sc.get("s7b_backlog"))
    recovery_curve(axes[1][3], sc.get("s6_recovery"))
    m, plan = results.get("machine", {}), results.get("plan", {})
    mode = "quick" if plan.get("quick") else "full"
    fig.suptitle(
        f"Ferry benchmarks ({mode} mode, {results.get('started', '')}) — {m.get('cores')} cores "
        f"{m.get('cpu', '')}, Python {m.get('python')}, grpcio {m.get('grpcio')}, librdkafka "
        f"{m.get('librdkafka')}; medians of {plan.get('reps')} run(s), bars = min\u2013max",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)
