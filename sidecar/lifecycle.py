"""Thread supervision (see sidecar/app.py for how it is used).

A thread Ferry depends on (the log writer, the forwarder, a subscription's consumer) runs its
loop through `supervised`: an exception that escapes the loop is logged as one JSON line
(`thread_died`, with the traceback) and reported to the handler the app installed, which
turns Ferry NOT_SERVING and stops it with `EXIT_INTERNAL_ERROR`. Nothing else is done in the
dying thread: what is logged stays in the log for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

#: Exit code of a Ferry that stopped because one of its threads died (sysexits'
#: EX_SOFTWARE). Kubernetes restarts the container.
EXIT_INTERNAL_ERROR = 70

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
