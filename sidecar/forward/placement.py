"""Where the forwarder runs: in a process of its own, or as a thread of Ferry.

- `process` (the default): a child interpreter with its own interpreter lock
  (sidecar/forward/supervisor.py). Sending to Kafka does not compete with the gRPC servicers
  and the log writer for one core, which is what high rates need; it costs a second
  interpreter (about 35 MB) and a pipe message each way per commit.
- `thread`: the same `Forwarder` on threads of Ferry, fed straight by the log writer's commit
  hook and retiring through the writer itself. One interpreter and fewer wake-ups per publish:
  less memory, and less CPU at modest rates, for pods of a core or less. A forwarder
  thread that dies takes Ferry down (exit 70) like any supervised thread, instead of being
  restarted alone.

Both give the same guarantees: they read the same log and settle through the same writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sidecar.config import FORWARDER_MODES
from sidecar.forward.build import configured_forwarder
from sidecar.forward.channels import CommittedRows, Retirements
from sidecar.forward.counters import ForwarderCounters, ForwarderStatus
from sidecar.forward.messages import ForwarderConfig
from sidecar.forward.supervisor import ForwarderProcess
from sidecar.model import DeliveredEvent

PROCESS, THREAD = FORWARDER_MODES


class ForwarderHandle(Protocol):
    """The forwarder as Ferry drives it, wherever it runs."""

    def start(self) -> None: ...

    def stop(self, grace_s: float) -> None:
        """Drain for up to `grace_s`, then stop; settlements are queued on the log on return."""
        ...

    def status(self) -> ForwarderStatus: ...

    @property
    def counters(self) -> ForwarderCounters: ...


def make_forwarder(
    mode: str,
    config: ForwarderConfig,
    committed: CommittedRows,
    retirements: Retirements,
    *,
    on_delivered: Callable[[list[DeliveredEvent]], None],
) -> ForwarderHandle:
    """A forwarder for `mode` (one of FORWARDER_MODES), not started yet."""
    if mode == THREAD:
        return configured_forwarder(config, committed, retirements, on_delivered)
    if mode == PROCESS:
        return ForwarderProcess(config, committed, retirements, on_delivered=on_delivered)
    raise ValueError(
        f"forwarder mode: expected one of {' or '.join(FORWARDER_MODES)}, got {mode!r}"
    )
