"""Thread supervision and the shutdown budget (see sidecar/app.py for how they are used).

A thread Ferry depends on (the log writer, the forwarder, a subscription's consumer) runs its
loop through `supervised`: an exception that escapes the loop is logged as one JSON line
(`thread_died`, with the traceback) and reported to the handler the app installed, which
turns Ferry NOT_SERVING and stops it with `EXIT_INTERNAL_ERROR`. Nothing else is done in the
dying thread: what is logged stays in the log for the next start.

`ShutdownBudget` is the bound on the time from SIGTERM to exit; every drain step waits at most
its share (`run_blocking` runs a blocking step on a daemon thread and stops waiting at its
timeout), and `arm_deadline` exits the process when the whole budget is spent, whatever hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

#: Exit code of a Ferry that stopped because one of its threads died, or whose shutdown
#: overran its budget (sysexits' EX_SOFTWARE). Kubernetes restarts the container.
EXIT_INTERNAL_ERROR = 70

#: Drain steps besides the forwarder's `--drain-grace-s`, in seconds.
CONSUMERS_CLOSE_S = 5.0  # every subscription's consumer closes (in parallel): commit, leave
FORWARDER_STOP_S = 3.0  # the forwarder settles its last deliveries after the grace period
RPC_GRACE_S = 5.0  # calls in progress finish before the gRPC server cancels them
WAL_CLOSE_S = 2.0  # the log writer commits what is queued and closes
EXIT_SLACK_S = 1.0  # everything else: health, logging, interpreter exit
#: Kubernetes' default terminationGracePeriodSeconds: SIGKILL follows SIGTERM after it.
KUBERNETES_GRACE_S = 30.0

ThreadDeathHandler = Callable[[str, BaseException], None]

_handler: ThreadDeathHandler | None = None


def on_thread_death(handler: ThreadDeathHandler | None) -> None:
    """Install the process-wide handler of supervised thread deaths (None: only log them).

    It runs in the dying thread, so it must be thread-safe and must not block.
    """
    global _handler
    _handler = handler


def supervised(name: str, run: Callable[[], None]) -> Callable[[], None]:
    """`run` as a thread target whose death (an escaping exception) is logged and reported."""

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            log.exception("thread_died", thread=name, error=repr(exc))
            handler = _handler
            if handler is not None:
                handler(name, exc)

    return target


class ThreadDeaths:
    """Deaths of supervised threads, reported from any thread to an event on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self._loop = loop
        self._stop = stop
        self.threads: list[str] = []

    def report(self, name: str, _exc: BaseException) -> None:
        """A ThreadDeathHandler: note the death and set the stop event (thread-safe)."""
        self.threads.append(name)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            self._loop.call_soon_threadsafe(self._stop.set)


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """How long each drain step may take; `total_s` bounds SIGTERM to exit."""

    consumers_s: float
    forwarder_s: float  # the grace period plus FORWARDER_STOP_S
    rpc_s: float
    wal_s: float
    slack_s: float

    @classmethod
    def for_grace(cls, drain_grace_s: float) -> ShutdownBudget:
        return cls(
            CONSUMERS_CLOSE_S, drain_grace_s + FORWARDER_STOP_S, RPC_GRACE_S, WAL_CLOSE_S,
            EXIT_SLACK_S,
        )  # fmt: skip

    @property
    def total_s(self) -> float:
        return self.consumers_s + self.forwarder_s + self.rpc_s + self.wal_s + self.slack_s


async def run_blocking(fn: Callable[[], object], timeout_s: float | None, name: str) -> bool:
    """Run `fn` on a daemon thread; True if it returned within `timeout_s` (None: no limit).

    An exception of `fn` is raised here. On timeout `fn` keeps running on its thread, which
    never holds up the process's exit (unlike `asyncio.to_thread`, whose executor is joined).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            fn()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout_s)
    except TimeoutError:
        return False
    return True


def arm_deadline(budget_s: float) -> threading.Timer:
    """Exit the process with EXIT_INTERNAL_ERROR if it is still alive `budget_s` from now."""

    def overrun() -> None:
        log.error("shutdown_budget_exceeded", budget_s=budget_s)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(EXIT_INTERNAL_ERROR)

    timer = threading.Timer(budget_s, overrun)
    timer.name = "shutdown-deadline"
    timer.daemon = True
    timer.start()
    return timer
