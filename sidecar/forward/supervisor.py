"""Ferry's side of the forwarder process: starts it, feeds it, hears it, restarts it.

`ForwarderProcess` stands in for the forwarder inside Ferry (start, stop, status, counters).
Two threads of Ferry serve it:

- `forwarder-feed` passes what the log committed (`CommittedRows`) down the pipe;
- `forwarder-link` reads the pipe: settlements go to the log (`Retirements`), deliveries to
  the publishers waiting for Kafka, reports to `status()`; when the process dies, it logs
  why and starts another after a backoff (sidecar/forward/restarts.py), or gives up by
  raising, which Ferry's thread supervision turns into a drain and EXIT_INTERNAL_ERROR.

A dead forwarder process loses nothing: every event it had not settled is still in the log,
and the next one starts from each topic's watermark (a resend, counted as a duplicate in
Kafka at worst). Totals survive restarts: each process counts from zero and the supervisor
adds up those of the dead ones.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import structlog

from sidecar.forward.channels import CommittedRows, Retirements
from sidecar.forward.counters import ForwarderCounters, ForwarderStatus
from sidecar.forward.messages import (
    Committed,
    Deliveries,
    Down,
    ForwarderConfig,
    Report,
    RetireNow,
    Settle,
    Stop,
    Stopped,
)
from sidecar.forward.restarts import RestartPolicy, killed_by_signal
from sidecar.lifecycle import supervised
from sidecar.model import DeliveredEvent

log = structlog.get_logger(__name__)

CHILD_MODULE = "sidecar.forward.child"
FEED_WAIT_S = 0.5
#: After its drain grace, how long a stopping forwarder process may take to report and exit.
EXIT_WAIT_S = 2.0
#: What `status()` says while no forwarder process runs.
NOT_RUNNING = ForwarderStatus(False, 0, 0, 0, 0, {})


class ForwarderGaveUp(RuntimeError):
    """The forwarder process crashed again and again: Ferry stops (sidecar/forward/restarts.py)."""


class ForwarderProcess:
    """The forwarder, run in a child process. Start with start(); stop with stop(grace)."""

    def __init__(
        self,
        config: ForwarderConfig,
        committed: CommittedRows,
        retirements: Retirements,
        *,
        on_delivered: Callable[[list[DeliveredEvent]], None],
    ) -> None:
        self._config = config
        self._committed = committed
        self._retirements = retirements
        self._on_delivered = on_delivered
        self._policy = RestartPolicy()
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._started_at = 0.0
        self._retiring: list[concurrent.futures.Future[None]] = []
        self._status = NOT_RUNNING
        self._counters = ForwarderCounters()
        self._ended = _EndedTotals()
        #: Makes folding an ended process's totals into `_ended` one step for readers, whose
        #: sums would otherwise count them twice or not at all for a moment.
        self._totals_lock = threading.Lock()
        self.restarts = 0
        self._feed = threading.Thread(
            target=supervised("forwarder-feed", self._run_feed), name="forwarder-feed", daemon=True
        )
        self._link = threading.Thread(
            target=supervised("forwarder-link", self._run_link), name="forwarder-link", daemon=True
        )

    # -- called from other threads -----------------------------------------------------------

    def start(self) -> None:
        self._spawn(arm_failpoints=True)
        self._feed.start()
        self._link.start()

    def stop(self, grace_s: float) -> None:
        """Drain for up to `grace_s` seconds, then stop; what is left stays in the log. The
        settlements the process reported are queued on the log before this returns."""
        self._stopping.set()
        self._committed.wake.set()
        self._send(Stop(grace_s))
        # The link thread returns once the process ended (it waits for it without a timeout:
        # Popen.wait's timeout polls with time.sleep, which fails under a faked wall clock).
        self._link.join(grace_s + EXIT_WAIT_S)
        if self._link.is_alive():
            process = self._process
            if process is not None:
                log.warning("forwarder_process_killed", pid=process.pid, after_s=grace_s)
                process.kill()
            self._link.join()
        self._feed.join()
        if self._retiring:
            self._retirements.retire_now()
            concurrent.futures.wait(self._retiring, timeout=EXIT_WAIT_S)

    def status(self) -> ForwarderStatus:
        with self._totals_lock:
            now, ended = self._status, self._ended
            return dataclasses.replace(
                now,
                delivered_total=ended.delivered + now.delivered_total,
                resent_total=ended.resent + now.resent_total,
                parked_total=ended.parked + now.parked_total,
            )

    @property
    def counters(self) -> ForwarderCounters:
        with self._totals_lock:
            now, ended = self._counters, self._ended
            return ForwarderCounters(
                sent_events=ended.sent_events + now.sent_events,
                found_in_kafka=ended.found_in_kafka + now.found_in_kafka,
                lane_restarts=ended.lane_restarts + now.lane_restarts,
                errors=dict(ended.errors + collections.Counter(now.errors)),
                process_restarts=self.restarts,
            )

    # -- the process -------------------------------------------------------------------------

    def _spawn(self, *, arm_failpoints: bool) -> None:
        """Start a forwarder process: a fresh interpreter that imports only the forwarder
        (sidecar/forward/child.py), given its end of a socket pair and then its settings over
        it (they hold Kafka's secrets, kept off its command line and environment)."""
        ours, theirs = socket.socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
            )
            conn = Connection(ours.detach())
        # Only the child holds its end now: its death is our end's EOF.
        conn.send(dataclasses.replace(self._config, arm_failpoints=arm_failpoints))
        with self._send_lock:
            self._process, self._conn = process, conn
            if self._stopping.is_set():  # stop() came while this one was starting
                conn.send(Stop(0.0))
        self._started_at = time.monotonic()

    def _send(self, message: Down) -> None:
        """To the process, if it runs; one that died missed nothing: its successor starts by
        reading the log."""
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.send(message)
            except OSError:
                self._conn = None

    def _run_feed(self) -> None:
        wake, committed = self._committed.wake, self._committed
        while not self._stopping.is_set():
            wake.wait(FEED_WAIT_S)
            wake.clear()
            topic_max = committed.take()
            if topic_max and not self._stopping.is_set():
                self._send(Committed(topic_max))

    def _run_link(self) -> None:
        while True:
            conn, process = self._conn, self._process
            assert conn is not None
            assert process is not None
            self._hear(conn)
            conn.close()
            process.wait()
            self._end_of(process)
            if self._stopping.is_set():
                return
            delay = self._policy.after_death(
                process.returncode, time.monotonic() - self._started_at
            )
            if delay is None:
                raise ForwarderGaveUp(
                    f"the forwarder process crashed {self._policy.crashes} times in a row"
                )
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn(arm_failpoints=False)

    def _hear(self, conn: Connection) -> None:
        """Handle what the process says until it stops or dies."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if isinstance(message, Settle):
                self._retiring = [f for f in self._retiring if not f.done()]
                self._retiring.append(self._retirements.retire(message.settlement))
            elif isinstance(message, Deliveries):
                self._on_delivered(message.events)
            elif isinstance(message, Report):
                self._status, self._counters = message.status, message.counters
            elif isinstance(message, RetireNow):
                self._retirements.retire_now()
            elif isinstance(message, Stopped):
                return

    def _end_of(self, process: subprocess.Popen[bytes]) -> None:
        """Fold the ended process's totals into the past ones and say how it ended."""
        with self._send_lock:
            self._conn = None
        with self._totals_lock:
            self._ended.add(self._status, self._counters)
            self._status, self._counters = NOT_RUNNING, ForwarderCounters()
        code = process.returncode
        if self._stopping.is_set() and code == 0:
            return
        log.error(
            "forwarder_process_died",
            pid=process.pid,
            exit_code=code,
            killed_by_signal=killed_by_signal(code),
            ran_s=round(time.monotonic() - self._started_at, 2),
            restarts=self.restarts,
        )


@dataclass(slots=True)
class _EndedTotals:
    """The running totals of the forwarder processes that ended, added up."""

    delivered: int = 0
    resent: int = 0
    parked: int = 0
    sent_events: int = 0
    found_in_kafka: int = 0
    lane_restarts: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, status: ForwarderStatus, counters: ForwarderCounters) -> None:
        self.delivered += status.delivered_total
        self.resent += status.resent_total
        self.parked += status.parked_total
        self.sent_events += counters.sent_events
        self.found_in_kafka += counters.found_in_kafka
        self.lane_restarts += counters.lane_restarts
        self.errors.update(counters.errors)
