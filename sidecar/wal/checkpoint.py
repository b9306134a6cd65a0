"""Keeps SQLite's -wal file small enough for the disk reserve to cover it.

SQLite's automatic checkpoint copies the -wal file's frames into the
database, but the file only starts over from its beginning when no reader
still uses it; a reader in a read transaction at the wrong moment (the
forwarder, slowed down on a busy machine) lets the file grow past its usual
size and, without a size limit, it never shrinks again. On a disk that then
fills up, the reserve (reserve.py) was not enough to checkpoint it, and
publishing never resumed (issue #2).

So the writer, after each commit, checks the file's size: past the soft
bound it tries a TRUNCATE checkpoint without waiting for readers (now and
then); past the hard bound (half the reserve) it waits for readers to let
go, holding further commits back meanwhile. The rest of the reserve is left
for the retirements that free space once the disk is full.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import structlog

from sidecar.wal.store import BUSY_TIMEOUT_MS

log = structlog.get_logger(__name__)

#: The -wal file may grow to this much even without a reserve (or with a small one).
MIN_HARD_BOUND = 4 * 1024 * 1024
#: Between two attempts that do not wait for readers.
RETRY_EVERY_S = 0.05


class WalBound:
    """Bounds the size of the -wal file beside `db_path` on the writer's connection."""

    def __init__(self, conn: sqlite3.Connection, db_path: Path, reserve_bytes: int) -> None:
        self._conn = conn
        self._wal_path = Path(f"{db_path}-wal")
        self.hard = max(reserve_bytes // 2, MIN_HARD_BOUND)
        self.soft = self.hard // 2
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        # Checkpoint automatically at the soft bound, and cut a file that grew past the hard
        # bound back to it whenever SQLite starts the file over.
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(self.soft // page_size, 1)}")
        conn.execute(f"PRAGMA journal_size_limit = {self.hard}")
        self._next_try = 0.0

    def size(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return 0

    def after_commit(self) -> None:
        """Shrink the -wal file if it grew past a bound (waiting for readers past the hard one)."""
        size = self.size()
        if size <= self.soft:
            return
        wait = size > self.hard
        now = time.monotonic()
        if not wait and now < self._next_try:
            return
        self._next_try = now + RETRY_EVERY_S
        if not self.truncate(BUSY_TIMEOUT_MS if wait else 0) and wait:
            log.warning("wal_checkpoint_blocked", wal_bytes=size, bound_bytes=self.hard)

    def truncate(self, wait_ms: int) -> bool:
        """Checkpoint everything and truncate the -wal file, waiting up to `wait_ms` for
        readers to let go; False if one still held on (or SQLite failed)."""
        try:
            if wait_ms != BUSY_TIMEOUT_MS:
                self._conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("wal_checkpoint_failed", error=str(exc))
            return False
        finally:
            if wait_ms != BUSY_TIMEOUT_MS:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return not busy
