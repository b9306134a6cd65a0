"""When Ferry starts its forwarder process again after it died, and when it gives up.

A forwarder process killed by a signal (kill -9, the kernel's OOM killer) is started again
after a backoff, however often: what killed it came from outside, and the log keeps every
event meanwhile. One that exited by itself crashed (a supervised thread died, or an exception
escaped): after `MAX_CRASHES` crashes in a row, each within `HEALTHY_RUN_S` of its start,
Ferry gives up and stops with EXIT_INTERNAL_ERROR, so that Kubernetes sees a crash loop
instead of a forwarder restarting forever inside a pod that looks healthy. A run of
`HEALTHY_RUN_S` or more resets both counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.backoff import backoff_delay

HEALTHY_RUN_S = 10.0
MAX_CRASHES = 3
#: Backoff before a restart: 0.2 s, doubling with each death in a row, at most 10 s.
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 10.0


@dataclass(slots=True)
class RestartPolicy:
    """Counts the deaths in a row; pure logic (the supervisor measures and sleeps)."""

    deaths: int = 0
    crashes: int = 0

    def after_death(self, exitcode: int | None, ran_s: float) -> float | None:
        """The delay before the next start, or None to give up. `exitcode` is the process's:
        negative when a signal killed it."""
        if ran_s >= HEALTHY_RUN_S:
            self.deaths = self.crashes = 0
        self.deaths += 1
        if not killed_by_signal(exitcode):
            self.crashes += 1
            if self.crashes >= MAX_CRASHES:
                return None
        return backoff_delay(self.deaths, base=FIRST_DELAY_S, cap=MAX_DELAY_S)


def killed_by_signal(exitcode: int | None) -> bool:
    return exitcode is not None and exitcode < 0
