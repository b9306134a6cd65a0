"""Observations of a process from outside: its memory, file descriptors and threads over time,
and how fast a series grows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int


def sample(pid: int) -> Sample | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return Sample(time.monotonic(), proc.memory_info().rss / 2**20, proc.num_fds(),
                          proc.num_threads())  # fmt: skip
    except psutil.Error:
        return None


def slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / var
