"""Where Ferry's time goes: py-spy on the Ferry process and its forwarder process during a
load run.

py-spy samples the Python threads that are not idle, with their native frames (--native)
and thread names; the raw (collapsed) stacks are kept under the run's work dir and
summarised into the hottest Python frames (self), the hottest Ferry functions
(inclusive), the hottest native leaves (syscalls, SQLite, gRPC core) and CPU per thread.
The per-thread CPU comes from /proc (psutil), so threads py-spy does not sample
(librdkafka's `rdk:*`, gRPC's) are counted too. The forwarder process's threads carry the
prefix `CHILD`, so that each process's share shows by itself.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.sampler import thread_cpu
from testkit.paths import ROOT
from testkit.processes import Children

TOP = 12
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\): ?(?P<name>.*)$")
#: py-spy --subprocesses opens a stack with the process and then each child down to the one
#: sampled: `process PID:"command line"`.
_PROCESS = re.compile(r'^process \d+:"')
#: Before the names of the threads of Ferry's child process (its forwarder).
CHILD = "forwarder process: "


def py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


class Profile:
    """A py-spy recording of `pid` for `duration` seconds, started now."""

    def __init__(
        self, children: Children, pid: int, duration: float, out: Path, native: bool = False
    ) -> None:
        self.pid, self.out, self.children = pid, out, children
        self.proc: subprocess.Popen[bytes] | None = None
        self.threads0 = tree_thread_cpu(pid)
        self.t0 = time.time()
        exe = py_spy()
        if exe is None:
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))),
            "--rate", "100", "--threads", "--subprocesses", "--full-filenames", "--format", "raw",
            "--output", str(out), *(["--native"] if native else []),
        ]  # fmt: skip
        self.proc = children.spawn("py-spy", cmd, out.with_suffix(".log"), stop_timeout=10)

    def finish(self) -> dict[str, Any]:
        threads1, t1 = tree_thread_cpu(self.pid), time.time()
        if self.proc is None:
            return {"error": "py-spy is not installed (pip install py-spy)"}
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(60)
        self.children.stop(self.proc)
        if not self.out.exists():
            return {"error": f"py-spy wrote no profile (see {self.out.with_suffix('.log')})"}
        summary = summarize(self.out.read_text(errors="replace"))
        summary["thread_cpu"] = per_thread(self.threads0, threads1, t1 - self.t0, summary)
        summary["raw"] = (
            str(self.out.relative_to(ROOT)) if self.out.is_relative_to(ROOT) else str(self.out)
        )
        return summary


def _short(path: str) -> str:
    if ".so" in path:
        return path.rsplit("/", 1)[-1]
    for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    root = str(ROOT) + "/"
    return path[len(root) :] if path.startswith(root) else path


def _frame(text: str) -> str:
    match = _FRAME.match(text)
    if match is None:
        return text
    func, where = match["func"], _short(match["file"])
    if func.startswith("0x"):
        func = "?"  # a native address without a symbol
    return f"{func} ({where})"


def _is_python(text: str) -> bool:
    match = _FRAME.match(text)
    return match is not None and (match["file"].endswith(".py") or match["file"].startswith("<"))


#: Frames every Ferry stack passes through: they say nothing about where the time goes.
_ENTRY = ("sidecar/__main__.py", "sidecar/cli.py")


def summarize(raw: str) -> dict[str, Any]:
    """Top native leaves, top Python frames (self), top Ferry functions (inclusive), per thread."""
    native: Counter[str] = Counter()
    python: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    tids: dict[str, str] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        processes = 0
        while frames and _PROCESS.match(frames[0]):
            processes += 1
            frames = frames[1:]
        thread = _THREAD.match(frames[0]) if frames else None
        if thread is not None:
            name = (CHILD if processes > 1 else "") + (thread["name"] or "?")
            tids[thread["tid"]] = name
            threads[name] += count
            frames = frames[1:]
        if not frames:
            continue
        total += count
        if not _is_python(frames[-1]):
            native[_frame(frames[-1])] += count
        py_frames = [f for f in frames if _is_python(f)]
        if py_frames:
            python[_frame(py_frames[-1])] += count
        ours = {
            _frame(f) for f in py_frames if "/sidecar/" in f and not any(e in f for e in _ENTRY)
        }
        for name in ours:
            inclusive[name] += count

    def top(counter: Counter[str]) -> list[list[Any]]:
        if not total:
            return []
        return [[name, n, round(100 * n / total, 1)] for name, n in counter.most_common(TOP)]

    return {
        "samples": total,
        "threads": top(threads),
        "python_self": top(python),
        "native_leaf": top(native),
        "ferry_inclusive": top(inclusive),
        "tids": tids,
    }


def per_thread(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    wall: float,
    summary: dict[str, Any],
) -> list[list[Any]]:
    """Cores used per thread over the recording; Python threads named as py-spy saw them."""
    names = {int(tid): name for tid, name in summary.get("tids", {}).items()}
    used: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        delta = cpu - before.get(tid, (comm, 0.0))[1]
        if delta <= 0:
            continue
        label = names.get(tid) or comm
        used[label] = used.get(label, 0.0) + delta
    ranked = sorted(used.items(), key=lambda item: -item[1])[:16]
    return [[name, round(cpu / wall, 3)] for name, cpu in ranked if wall > 0]


def tree_thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """`thread_cpu` of `pid` and of its children, whose kernel thread names get `CHILD`."""
    result = thread_cpu(pid)
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            for tid, (comm, cpu) in thread_cpu(child.pid).items():
                result[tid] = (CHILD + comm, cpu)
    return result
