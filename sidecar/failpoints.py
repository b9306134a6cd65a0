"""Crash points for fault testing: Ferry fails at a chosen place.

`FERRY_FAILPOINTS="forwarder.after_ack=3"` kills Ferry the 3rd time it reaches that point,
so a fault run can crash it exactly where a bug would hide (after the log commit but before
the reply, after Kafka's ack but before the row is retired, while a lease is redelivered)
instead of only at random moments. Two kinds of point: a kill point SIGKILLs the process; a
thread point (`*.crash`) raises `InjectedCrash` in the thread that reaches it, as a bug would,
so that the thread dies and Ferry's supervision (sidecar/lifecycle.py) is what stops it.
Unset (always, outside tests) every point is one truth test of an empty dict. Unknown names
stop Ferry at start, like any invalid setting.

Ferry's forwarder runs in a process of its own (sidecar/forward/child.py). A kill point hit
there kills Ferry first, then itself: a kill point stands for the whole of Ferry dying at that
place. A thread point hit there ends the forwarder process only, which Ferry restarts; a
restarted forwarder process runs unarmed, so that a point fires once per start of Ferry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from sidecar.errors import ConfigError

ENV = "FERRY_FAILPOINTS"
POINTS = {
    "wal.after_commit": "the log committed a transaction; no publish in it has been answered",
    "forwarder.after_ack": "Kafka acknowledged records; their rows are not retired yet",
    "subscribe.redeliver": "a record is being leased again (nack, expiry, lost stream)",
    "wal.crash": "the log writer took publishes to commit; they are neither logged nor answered",
    "forwarder.crash": "the forwarder handed a wave of rows to the producer; none is retired",
    "consumer.crash": "a subscription's consumer fetched records, before handing them over",
}
#: Points that raise in the thread that reaches them instead of killing the process.
THREAD_POINTS = frozenset(name for name in POINTS if name.endswith(".crash"))


class InjectedCrash(RuntimeError):
    """Raised by a thread point: the thread dies as it would of a bug."""


_armed: dict[str, int] = {}
_lock = threading.Lock()
_kill_first: list[int] = []


def parse(text: str) -> dict[str, int]:
    """`name=N,name=N` (N >= 1) into {name: N}; ConfigError naming what is wrong."""
    armed: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, count = part.partition("=")
        name = name.strip()
        if name not in POINTS:
            raise ConfigError(f"{ENV}: unknown point {name!r}; known: {', '.join(sorted(POINTS))}")
        if not sep:
            count = "1"
        if not count.strip().isdigit() or int(count) < 1:
            raise ConfigError(f"{ENV}: {name} needs a hit count >= 1, got {count!r}")
        armed[name] = int(count)
    return armed


def arm_from_env() -> None:
    """Arm the points named in $FERRY_FAILPOINTS (called once at start)."""
    armed = parse(os.environ.get(ENV, ""))
    with _lock:
        _armed.clear()
        _armed.update(armed)


def kill_first(pid: int) -> None:
    """A kill point hit in this process SIGKILLs `pid` before this process."""
    _kill_first.append(pid)


def hit(name: str) -> None:
    """Count a pass through point `name`; on its armed count, SIGKILL this process (a kill
    point) or raise InjectedCrash (a thread point, which is then disarmed)."""
    if not _armed:
        return
    with _lock:
        left = _armed.get(name)
        if left is None:
            return
        if left > 1:
            _armed[name] = left - 1
            return
        if name in THREAD_POINTS:
            del _armed[name]
    if name in THREAD_POINTS:
        raise InjectedCrash(f"failpoint {name} (FERRY_FAILPOINTS)")
    # Straight to stdout, the log, in one write: file descriptor 2 is a pipe that a thread of
    # this process reads (sidecar/observability/stderr.py), and it dies with the process.
    line = f'{{"event": "failpoint_hit", "point": "{name}", "level": "warning"}}\n'
    os.write(1, line.encode())
    for pid in _kill_first:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
