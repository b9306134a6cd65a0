"""The forwarder process: a `Forwarder` fed by Ferry over a pipe, reporting back over it.

Started by Ferry (sidecar/forward/supervisor.py) as `python -m sidecar.forward.child FD`: a
fresh interpreter that imports only the forwarder (no gRPC, no settings), so that no state
of the parent is copied into it and it starts in a fraction of a second. FD is its end of a
socket pair; the first message on it is its `ForwarderConfig`. It has its own interpreter
lock, which is the point: sending to Kafka does not compete with the gRPC servicers and the
log writer for one core.

Its threads: the main thread reads the pipe (committed rows, the order to stop); `forwarder`
and `kafka-probe` (sidecar/forward/forwarder.py); `forwarder-report`, which sends the
forwarder's state a few times a second; librdkafka's own.

It ignores SIGINT and SIGTERM: Ferry decides when it stops (a Ctrl-C reaches the whole
process group, and the forwarder must drain after Ferry's subscribers, not before). When
Ferry is gone (its end of the pipe closed: kill -9), this process exits at once; what it
had in flight is still in the log and is sent again by the next forwarder. A supervised
thread that dies exits it with EXIT_INTERNAL_ERROR, for Ferry to restart it.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import NoReturn

import structlog

from sidecar import failpoints
from sidecar.forward.build import configured_forwarder
from sidecar.forward.channels import CommittedRows
from sidecar.forward.messages import (
    Committed,
    Deliveries,
    ForwarderConfig,
    Report,
    RetireNow,
    Settle,
    Stop,
    Stopped,
    Up,
)
from sidecar.lifecycle import EXIT_INTERNAL_ERROR, on_thread_death, supervised
from sidecar.model import DeliveredEvent, Settlement
from sidecar.observability.logging import configure_logging, register_secrets, sensitive_values

log = structlog.get_logger(__name__)

#: How often the forwarder's state goes to Ferry (its health watch looks every 0.5 s).
REPORT_EVERY_S = 0.25


class FerryLink:
    """This process's end of the pipe: the forwarder's `Retirements`, its delivery reports,
    and its state. Thread-safe; a send that finds Ferry gone ends this process."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: Up) -> None:
        try:
            with self._lock:
                self._conn.send(message)
        except OSError:
            _ferry_gone()

    def retire(self, settlement: Settlement) -> concurrent.futures.Future[None]:
        """Hand the settlement to Ferry, which commits it before its log closes: the future
        is done once it is handed over."""
        self.send(Settle(settlement))
        handed: concurrent.futures.Future[None] = concurrent.futures.Future()
        handed.set_result(None)
        return handed

    def retire_now(self) -> None:
        self.send(RetireNow())

    def delivered(self, events: list[DeliveredEvent]) -> None:
        self.send(Deliveries(events))


def main(conn: Connection) -> None:
    """Run the forwarder as Ferry configures it over `conn`, until Ferry says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        config: ForwarderConfig = conn.recv()
    except (EOFError, OSError):
        os._exit(0)
    configure_logging(config.log_level)
    register_secrets(sensitive_values(config.kafka_options))
    if config.arm_failpoints:
        failpoints.arm_from_env()
    failpoints.kill_first(config.parent_pid)
    on_thread_death(lambda _name, _exc: os._exit(EXIT_INTERNAL_ERROR))
    link = FerryLink(conn)
    committed = CommittedRows()
    forwarder = configured_forwarder(config, committed, link, link.delivered)
    forwarder.start()
    stop_reporting = threading.Event()

    def report() -> None:
        while not stop_reporting.wait(REPORT_EVERY_S):
            link.send(Report(forwarder.status(), forwarder.counters))

    reporter = threading.Thread(
        target=supervised("forwarder-report", report), name="forwarder-report", daemon=True
    )
    reporter.start()
    log.info("forwarder_process_started", pid=os.getpid())
    grace_s = _read_until_stop(conn, committed)
    forwarder.stop(grace_s)
    stop_reporting.set()
    reporter.join()
    link.send(Report(forwarder.status(), forwarder.counters))
    link.send(Stopped())
    conn.close()


def _read_until_stop(conn: Connection, committed: CommittedRows) -> float:
    """Pass committed rows on to the forwarder until Ferry says stop; its drain grace."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            _ferry_gone()
        if isinstance(message, Committed):
            committed.report(message.topic_max)
        elif isinstance(message, Stop):
            return message.grace_s


def _ferry_gone() -> NoReturn:
    log.warning("forwarder_process_orphaned", hint="Ferry is gone; its next start forwards")
    os._exit(0)


if __name__ == "__main__":
    main(Connection(int(sys.argv[1])))
