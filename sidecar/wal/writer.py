"""The log's single writer: group commit of appends and retirements on one thread.

Every publish that arrives while a commit is in flight joins the next
transaction, so one fsync covers many events, written as one slice row per
topic (slices.py). No append is answered before
its transaction committed; a failed commit answers every request in it with
an error and changes nothing. Appends come first: retirements ride along a
bounded number of rows per commit (see backlog.py), so a publish never waits
behind a large retirement, and they wait a little for an append to share its
commit rather than paying an fsync of their own. This module never talks to Kafka.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from sidecar import failpoints
from sidecar.errors import (
    DiskFull,
    FerryError,
    ShuttingDown,
    StorageFailure,
)
from sidecar.lifecycle import supervised
from sidecar.model import Outcome, OutgoingEvent, Settlement
from sidecar.wal.admission import Admission, Usage
from sidecar.wal.appends import Appender, Tally
from sidecar.wal.backlog import RetireBacklog, RetireRequest, RetireSlice
from sidecar.wal.checkpoint import WalBound
from sidecar.wal.full_disk import FullDisk, disk_full_error, storage_error
from sidecar.wal.reserve import DiskReserve
from sidecar.wal.store import (
    DB_NAME,
    Statements,
    connect,
    lock_directory,
)

log = structlog.get_logger(__name__)

THREAD_NAME = "wal-writer"
MAX_EVENTS_PER_COMMIT = 20_000
#: Rows a commit that also appends writes for retirements (at least; as many as it appends if
#: more), and a commit of retirements alone. Small enough that a publish waits for little.
RETIRE_ROWS_BESIDE_APPENDS = 1_000
RETIRE_ROWS_ALONE = 5_000
#: How long retirements wait for an append to share its commit before committing alone.
RETIRE_ALONE_AFTER_S = 0.5
PRUNE_EVERY_S = 60.0
PRUNE_ROWS = 5_000


@dataclass(slots=True)
class _Append:
    events: Sequence[OutgoingEvent]
    future: asyncio.Future[list[Outcome]]
    loop: asyncio.AbstractEventLoop


_STOP = object()
_RETIRE_NOW = object()


@dataclass(frozen=True, slots=True)
class WalLimits:
    max_rows: int
    max_bytes: int
    dedupe_window_s: float
    disk_reserve_bytes: int = 8 * 1024 * 1024
    #: The fraction of max_rows and max_bytes one topic may hold (1.0: no share).
    topic_share: float = 1.0


class WalWriter:
    """Owns the only writing connection to the log. Thread-safe entry points: append, retire."""

    def __init__(
        self,
        data_dir: Path,
        limits: WalLimits,
        on_commit: Callable[[dict[str, int]], None] = lambda _: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._data_dir = data_dir
        self._limits = limits
        self._on_commit = on_commit
        self._wall_clock = wall_clock
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock_handle = lock_directory(data_dir)
        self._conn = connect(data_dir)
        self._sql = Statements(self._conn)
        admission = Admission(limits.max_rows, limits.max_bytes, limits.topic_share)
        self._appender = Appender(self._sql, admission)
        self._usage = self._sql.usage()
        self.parked_rows = self._sql.parked_count()
        self._last_seq = self._sql.last_sequence()
        self._backlog = RetireBacklog()
        self._prune_more = False
        reserve = DiskReserve(data_dir, limits.disk_reserve_bytes)
        reserve.ensure()
        self._wal = WalBound(self._conn, data_dir, data_dir / DB_NAME, reserve.size)
        self._full_disk = FullDisk(self._conn, self._sql, self._wal, reserve)
        self._stopping = False
        self._disk_full = False
        # Closing and queueing are one step under this lock, so nothing is queued after _STOP.
        self._gate = threading.Lock()
        self._closed = False
        self._last_prune = 0.0
        self._retire_due_at = 0.0
        self.commits = 0
        self._thread = threading.Thread(
            target=supervised(THREAD_NAME, self._run), name=THREAD_NAME, daemon=True
        )
        self._thread.start()

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def pending_rows(self) -> int:
        return self._usage.rows

    @property
    def pending_bytes(self) -> int:
        return self._usage.size

    @property
    def usage(self) -> Usage:
        """Pending events and bytes, in all and per topic, as of the last commit: a snapshot,
        since a commit replaces it with a new one and never changes it. Read from any thread."""
        return self._usage

    async def append(self, events: Sequence[OutgoingEvent]) -> list[Outcome]:
        """Log `events` in one transaction; answer once it committed (or failed)."""
        return await self.submit(events)

    def submit(self, events: Sequence[OutgoingEvent]) -> asyncio.Future[list[Outcome]]:
        """Queue `events` for the next commit; the future resolves once it committed (or failed).

        Call on the event loop. A caller that stops waiting leaves the events to be logged all
        the same."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        with self._gate:
            if self._closed:
                raise ShuttingDown("Ferry is shutting down")
            self._queue.put(_Append(events, future, loop))
        return future

    def retire(self, settlement: Settlement) -> concurrent.futures.Future[None]:
        """Queue what Kafka answered: slices retired up to each topic's watermark, delivered
        client ids remembered, refused events parked; the future resolves at commit."""
        item = RetireRequest(settlement)
        with self._gate:
            if self._closed:
                item.future.set_exception(ShuttingDown("the write-ahead log is closed"))
            else:
                self._queue.put(item)
        return item.future

    def retire_now(self) -> None:
        """Commit the queued retirements without waiting for an append to share the commit
        (a caller is about to wait for them). Thread-safe."""
        with self._gate:
            if not self._closed:
                self._queue.put(_RETIRE_NOW)

    def close(self) -> None:
        """Finish queued work, then close the log and release the directory lock."""
        with self._gate:
            already, self._closed = self._closed, True
            if not already:
                self._queue.put(_STOP)
        self._thread.join()
        self._wal.close()
        self._conn.close()
        self._lock_handle.close()

    def _run(self) -> None:
        stop = False
        while not stop or self._backlog:
            appends, stopping = self._gather()
            if appends:
                failpoints.hit("wal.crash")  # escapes: the thread dies (fault tests)
            stop = self._stopping = stop or stopping
            if not appends and self._backlog and not self._retirement_due():
                continue  # retirements ride along the next append's commit, or wait a little
            budget = RETIRE_ROWS_ALONE
            if appends:
                budget = max(RETIRE_ROWS_BESIDE_APPENDS, sum(len(a.events) for a in appends))
            taken = self._backlog.take(budget)
            try:
                self._commit(appends, taken)
                if self._disk_full:
                    self._disk_full = not self._full_disk.recover(self.pending_rows)
            except Exception as exc:  # a bug must fail this batch, not hang every later append
                log.exception("wal_writer_error")
                error = StorageFailure(f"the write-ahead log failed: {exc}")
                self._fail(appends, self._backlog.drop(taken), error)

    def _gather(self) -> tuple[list[_Append], bool]:
        """Wait for work; take every queued append (up to the cap) and note every retirement."""
        if self._prune_more or (self._backlog and self._retirement_due()):
            timeout = 0.0  # work is waiting already: only pick up what else arrived
        elif self._backlog:
            timeout = max(0.0, self._retire_due_at - time.monotonic())
        else:
            timeout = 1.0 if self._disk_full else PRUNE_EVERY_S
        appends: list[_Append] = []
        stop = False
        events = 0
        try:
            item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            while True:
                if item is _STOP:
                    stop = True
                elif item is _RETIRE_NOW:
                    self._retire_due_at = 0.0
                elif isinstance(item, _Append):
                    appends.append(item)
                    events += len(item.events)
                    if events >= MAX_EVENTS_PER_COMMIT:
                        break
                elif isinstance(item, RetireRequest):
                    if not self._backlog:
                        self._retire_due_at = time.monotonic() + RETIRE_ALONE_AFTER_S
                    self._backlog.add(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return appends, stop

    def _retirement_due(self) -> bool:
        """Whether retirements commit now even without an append to ride along.

        A commit of retirements alone costs an fsync and frees nothing a publish needs, so it
        waits RETIRE_ALONE_AFTER_S for an append to share it; a retirement lost in a crash
        meanwhile only means a resend (a duplicate in Kafka). Not while stopping, on a full
        disk (retiring is what frees space), or with a backlog worth a commit of its own.
        """
        return (
            self._stopping
            or self._disk_full
            or self._backlog.rows >= RETIRE_ROWS_ALONE
            or time.monotonic() >= self._retire_due_at
        )

    def _fail(
        self, appends: Sequence[_Append], retires: Sequence[RetireRequest], error: FerryError
    ) -> None:
        _resolve_all([(item, error) for item in appends])
        for request in retires:
            if not request.future.done():
                request.future.set_exception(error)

    def _commit(self, appends: list[_Append], taken: RetireSlice) -> None:
        if self._disk_full and appends:
            # Publishes wait until retirements have made room; they must not take it first.
            _resolve_all([(item, disk_full_error()) for item in appends])
            appends = []
        now = self._wall_clock()
        prune = self._limits.dedupe_window_s >= 0 and (
            self._prune_more or now - self._last_prune >= PRUNE_EVERY_S
        )
        if not appends and taken.empty and not prune:
            return
        results: list[list[Outcome] | FerryError] = []
        tally = Tally(self._usage.copy(), self._last_seq)
        parked = 0
        pruned = 0
        topic_max: dict[str, int] = {}
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            if not taken.empty:
                parked = self._record_settlements(taken, tally, now)
            if appends:
                results, topic_max = self._appender.log(
                    [a.events for a in appends], tally, int(now * 1000), self.parked_rows
                )
            if prune:
                cutoff = now - self._limits.dedupe_window_s
                pruned = self._sql.forget_delivered_before(cutoff, PRUNE_ROWS)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            log.error("wal_commit_failed", error=str(exc), requests=len(appends))
            error = storage_error(exc)
            if isinstance(error, DiskFull) and (self._enter_disk_full() or not self._stopping):
                # Retirements are what frees space: they stay queued and are tried again once
                # the reserve is free or the checkpoint and vacuum made room (not failed, which
                # would strand delivered rows in the log).
                self._fail(appends, [], error)
            else:
                self._fail(appends, self._backlog.drop(taken), error)
            return
        if appends:
            failpoints.hit("wal.after_commit")  # committed, nobody answered yet (fault tests)
        if prune:
            self._last_prune = now
            self._prune_more = pruned >= PRUNE_ROWS
        self.commits += 1
        self._usage, self._last_seq = tally.usage, tally.seq
        if parked:
            self.parked_rows += parked
            log.warning("events_parked", events=parked, parked_total=self.parked_rows)
        if topic_max:
            try:
                self._on_commit(topic_max)
            except Exception:  # the rows are committed: answer the appends all the same
                log.exception("on_commit_failed")
        _resolve_all(list(zip(appends, results, strict=True)))
        for request in self._backlog.committed(taken):
            if not request.future.done():
                request.future.set_result(None)
        if not self._disk_full:
            self._wal.after_commit()

    def _enter_disk_full(self) -> bool:
        """Enter disk-full mode; True if the reserve was released just now."""
        self._disk_full = True
        return self._full_disk.release_reserve()

    def _record_settlements(self, taken: RetireSlice, tally: Tally, now: float) -> int:
        """Retire slices up to each watermark, remember delivered ids, park refused events;
        return how many events were parked."""
        keep_ids = self._limits.dedupe_window_s > 0
        parked = self._sql.park(taken.parked, now) if taken.parked else 0
        for topic, settled_to in taken.settled_to.items():
            rows, size = self._sql.retire_lane(topic, settled_to, now, keep_ids)
            if rows:
                tally.usage.remove(topic, size, rows)
        if taken.delivered_ids:
            self._sql.record_deliveries(taken.delivered_ids, now, keep_ids)
        return parked

    def _rollback(self) -> None:
        # SQLite may have rolled back already (it does on SQLITE_FULL in some states).
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")


def _resolve_all(settled: list[tuple[_Append, list[Outcome] | FerryError]]) -> None:
    """Answer a commit's requests with one hop per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Append, list[Outcome] | FerryError]]]
    by_loop = {}
    for item, result in settled:
        by_loop.setdefault(item.loop, []).append((item, result))
    for loop, pairs in by_loop.items():
        # A closed loop raises RuntimeError: nobody waits for these answers any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[_Append, list[Outcome] | FerryError]]) -> None:
    for item, result in pairs:
        if item.future.done():
            continue  # the caller went away; its events stay logged all the same
        if isinstance(result, FerryError):
            item.future.set_exception(result)
        else:
            item.future.set_result(result)
