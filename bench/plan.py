"""What a run does (full or quick) and what machine it runs on."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.stats import latency_ms
from testkit.kafka_jars import KAFKA_VERSION
from testkit.paths import ROOT


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run. Every scenario runs `reps` times per side."""

    quick: bool
    reps: int
    warmup: float  # seconds of load before a window is measured
    duration: float  # seconds of a measured window
    payload: int = 100  # bytes per event unless a scenario says otherwise
    concurrencies: tuple[int, ...] = (1, 16, 128)
    batch_size: int = 100
    batch_concurrency: int = 16  # PublishBatch calls in flight
    e2e_concurrency: int = 32  # PublishBatch(KAFKA) calls in flight for end to end
    fixed_rate: float = 1000.0
    fixed_duration: float = 15.0
    sub_events: int = 200_000
    sub_max_outstanding: tuple[int, ...] = (1000, 10_000)  # the default, and a tuned stream
    backlog_events: int = 1_000_000
    backlog_reps: int = 1
    payload_sizes: tuple[int, ...] = (100, 1_000, 10_000, 100_000)
    payload_duration: float = 4.0
    wal_backlogs: tuple[int, ...] = (0, 100_000, 1_000_000)
    profile: bool = True
    profile_duration: float = 10.0
    profile_native: bool = False  # py-spy --native: syscalls and C frames, but slows Ferry more

    def procs(self, concurrency: int) -> int:
        """Load generator processes for a closed loop of `concurrency` callers."""
        return 1 if concurrency < 8 else 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Plan(quick=False, reps=3, warmup=2.0, duration=8.0)
QUICK = Plan(
    quick=True,
    reps=1,
    warmup=0.5,
    duration=1.5,
    concurrencies=(1, 128),
    fixed_duration=1.5,
    sub_events=20_000,
    backlog_events=20_000,
    payload_sizes=(100, 10_000),
    payload_duration=1.0,
    wal_backlogs=(0, 20_000),
    profile=False,
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "sidecar"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{rev}{' + uncommitted changes under sidecar/' if dirty else ''}" or "unknown"


def fsync_probe(directory: Path, commits: int = 300) -> dict[str, float]:
    """Latency of a one-row SQLite commit with Ferry's pragmas (WAL, synchronous=FULL) on the
    filesystem of `directory`: the floor under every DURABLE publish."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        conn = sqlite3.connect(Path(tmp) / "probe.sqlite3", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (v BLOB)")
        samples = []
        for _ in range(commits):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 100,))
            conn.execute("COMMIT")
            samples.append(int((time.perf_counter() - t0) * 1e6))
        conn.close()
    return latency_ms(samples)


def machine_info(work: Path) -> dict[str, Any]:
    import confluent_kafka
    import grpc

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": _version("protobuf"),
        "confluent_kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka": KAFKA_VERSION,
        "sqlite": sqlite3.sqlite_version,
        "java": _java_version(),
        "ferry_revision": _git(),
        "sqlite_commit_fsync": fsync_probe(work),
    }


def _java_version() -> str:
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    except OSError:
        return "unknown"
    return out.splitlines()[0] if out else "unknown"
