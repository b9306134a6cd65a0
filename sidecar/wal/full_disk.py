"""The log on a full disk: what a failed write means, and how the writer gets room back.

A commit that meets SQLITE_FULL answers DISK_FULL and changes nothing. The
writer then releases the disk reserve (a file kept beside the log for this
moment) so that retirements, which free space, can still commit; once they
have, free pages go back to the filesystem in small vacuum steps and the
reserve is made again. Runs on the writer's thread, on its connection.
"""

from __future__ import annotations

import sqlite3
import time

import structlog

from sidecar.errors import DiskFull, FerryError, StorageFailure
from sidecar.wal.checkpoint import WalBound
from sidecar.wal.reserve import DiskReserve
from sidecar.wal.store import Statements

log = structlog.get_logger(__name__)

SQLITE_FULL = 13
#: How long a checkpoint on a full disk waits for readers (clients are waiting for answers).
FULL_DISK_CHECKPOINT_WAIT_MS = 1_000
#: Free pages handed back per step on a full disk, and time spent on it per round.
VACUUM_STEP_PAGES = 128
VACUUM_BUDGET_S = 0.5
REPORT_EVERY_S = 10.0


def disk_full_error() -> DiskFull:
    return DiskFull(
        "the disk under the write-ahead log is full; nothing was written. Publishing resumes "
        "once delivered events have freed space",
        5.0,
    )


def storage_error(exc: sqlite3.Error) -> FerryError:
    """The error a failed commit answers with."""
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc):
        return disk_full_error()
    return StorageFailure(f"the write-ahead log could not be written: {exc}")


class FullDisk:
    """Releases the reserve when the disk fills, and wins the room back afterwards."""

    def __init__(
        self, conn: sqlite3.Connection, sql: Statements, wal: WalBound, reserve: DiskReserve
    ) -> None:
        self._conn = conn
        self._sql = sql
        self._wal = wal
        self._reserve = reserve
        self._next_report = 0.0

    def release_reserve(self) -> bool:
        """Free the reserve; True if it was held until now."""
        released = self._reserve.release()
        if released:
            # Move the WAL file's frames into the database and truncate it, while there is room.
            self._wal.truncate(FULL_DISK_CHECKPOINT_WAIT_MS)
        return released

    def recover(self, pending_events: int) -> bool:
        """One round of getting room back; True once the reserve fits again, with half as much
        to spare (the writer leaves disk-full mode)."""
        # Vacuum in small steps, each checkpointed: one vacuum of the whole free list writes more
        # -wal frames than a full disk has room for, fails, and gives nothing back.
        deadline = time.monotonic() + VACUUM_BUDGET_S
        try:
            while self._sql.free_pages() and time.monotonic() < deadline:
                # executescript steps the pragma to the end; execute() would free a single page.
                self._conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")
                self._wal.truncate(FULL_DISK_CHECKPOINT_WAIT_MS)
        except sqlite3.Error as exc:
            log.warning("wal_vacuum_failed", error=str(exc))
        self._wal.truncate(FULL_DISK_CHECKPOINT_WAIT_MS)
        if self._reserve.room_to_restore() and self._reserve.ensure():
            log.info("disk_space_recovered", pending_events=pending_events)
            return True
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + REPORT_EVERY_S
            log.warning(
                "disk_full_waiting",
                pending_events=pending_events,
                free_bytes=self._reserve.free_bytes(),
                reserve_bytes=self._reserve.size,
                wal_bytes=self._wal.size(),
            )
        return False
