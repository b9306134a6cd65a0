"""CPU and RSS of the processes under test, sampled by psutil into time series.

A background thread samples every watched process at 10 Hz (wall time, user+sys CPU
seconds, RSS). Any window can then be asked for after the fact: CPU as cores
(CPU seconds / wall seconds) and the peak RSS within it.

A watched process counts with its live child processes (Ferry's forwarder process), whose
share is also kept apart as the series `<name>/children`.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

INTERVAL_S = 0.1
#: The series of the whole machine's busy CPU (every process, ours included).
MACHINE = "machine"
#: The series of a watched process's children: `children_of(name)`.
CHILDREN = "/children"


def children_of(name: str) -> str:
    return name + CHILDREN


@dataclass
class Series:
    """Samples of one process: wall time, CPU seconds (user+sys), RSS bytes."""

    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    """A process over a window: average cores used and the peak RSS in MB."""

    cpu_cores: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, float]:
        return {"cpu_cores": round(self.cpu_cores, 3), "peak_rss_mb": round(self.peak_rss_mb, 1)}


class Sampler:
    """Samples named processes; `usage(name, t0, t1)` answers for any past window."""

    def __init__(self) -> None:
        self._procs: dict[str, psutil.Process] = {}
        self._series: dict[str, Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        """Start sampling `pid` as `name` (a new series; a restarted process starts over)."""
        with self._lock:
            self._procs[name] = psutil.Process(pid)
            self._series[name] = Series()
            self._series[children_of(name)] = Series()
        self._sample_one(name)

    def pid(self, name: str) -> int:
        """The process watched as `name`."""
        with self._lock:
            return self._procs[name].pid

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            with self._lock:
                names = list(self._procs)
            for name in names:
                self._sample_one(name)
            self._sample_machine()

    def _sample_machine(self) -> None:
        """The whole machine as series MACHINE: busy CPU seconds (all processes, ours too)."""
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        with self._lock:
            series = self._series.setdefault(MACHINE, Series())
            series.times.append(time.time())
            series.cpu.append(busy)
            series.rss.append(0)

    def _sample_one(self, name: str) -> None:
        with self._lock:
            proc, series = self._procs.get(name), self._series.get(name)
            kids = self._series.get(children_of(name))
        if proc is None or series is None or kids is None:
            return
        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                rss = proc.memory_info().rss
            children = proc.children(recursive=True)
        except psutil.Error:
            self.unwatch(name)
            return
        kids_cpu, kids_rss = 0.0, 0
        for child in children:
            with contextlib.suppress(psutil.Error), child.oneshot():
                times = child.cpu_times()
                kids_cpu += times.user + times.system
                kids_rss += child.memory_info().rss
        now = time.time()
        with self._lock:
            series.times.append(now)
            series.cpu.append(cpu.user + cpu.system + kids_cpu)
            series.rss.append(rss + kids_rss)
            kids.times.append(now)
            kids.cpu.append(kids_cpu)
            kids.rss.append(kids_rss)

    def usage(self, name: str, t0: float, t1: float) -> Usage:
        """Cores and peak RSS of `name` between wall times t0 and t1 (nearest samples)."""
        with self._lock:
            series = self._series.get(name)
            if series is None or len(series.times) < 2:
                return Usage(0.0, 0.0)
            times, cpu, rss = list(series.times), list(series.cpu), list(series.rss)
        i = min(max(bisect.bisect_left(times, t0), 0), len(times) - 1)
        j = min(max(bisect.bisect_right(times, t1) - 1, i), len(times) - 1)
        if j == i and i > 0:
            i -= 1
        wall = times[j] - times[i]
        cores = (cpu[j] - cpu[i]) / wall if wall > 0 else 0.0
        peak = max(rss[i : j + 1]) if j >= i else rss[i]
        return Usage(cores, peak / 1e6)

    def others(self, t0: float, t1: float) -> float:
        """Cores used by processes this run did not start (the machine minus every series)."""
        with self._lock:
            names = [n for n in self._series if n != MACHINE and not n.endswith(CHILDREN)]
        ours = sum(self.usage(n, t0, t1).cpu_cores for n in names if self._covers(n, t0, t1))
        return max(0.0, self.usage(MACHINE, t0, t1).cpu_cores - ours)

    def _covers(self, name: str, t0: float, t1: float) -> bool:
        with self._lock:
            times = self._series[name].times
            return bool(times) and times[0] <= t1 and times[-1] >= t0

    def peak_rss_mb(self, name: str) -> float:
        with self._lock:
            series = self._series.get(name)
            return max(series.rss) / 1e6 if series and series.rss else 0.0


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds per thread of `pid`: tid -> (kernel thread name, user+sys seconds)."""
    result: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(psutil.Error):
        for thread in psutil.Process(pid).threads():
            try:
                comm = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
            except OSError:
                comm = "?"
            result[thread.id] = (comm, thread.user_time + thread.system_time)
    return result
