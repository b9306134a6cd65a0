"""Keeps SQLite's -wal file small, off the commit path, and bounded for the disk reserve.

The writer's connection never checkpoints by itself (`wal_autocheckpoint` is
off): a checkpoint copies frames into the database and fsyncs it, and on the
commit path that cost landed on whichever publish happened to commit next.
Instead a `Checkpointer` thread with a connection of its own runs a PASSIVE
checkpoint CHECKPOINT_EVERY_S after a commit nudged it (later commits join
that one): it never waits for readers or for the writer, and SQLite starts the
file over at the next commit once every frame is in the database. At most 20
checkpoints a second keeps the -wal file's live part well below the hard bound
at any commit rate the writer reaches.

A reader in a read transaction at the wrong moment (the forwarder, slowed down
on a busy machine) keeps its frames from being checkpointed, and the file grows.
The writer therefore still checks the file's size after each commit: past the
hard bound (half the disk reserve, reserve.py) it checkpoints with TRUNCATE on
its own connection, waiting for readers to let go and holding further commits
back meanwhile; `journal_size_limit` cuts a file that grew back to that bound
whenever SQLite starts it over. The rest of the reserve is left for the
retirements that free space once the disk is full (issue #2).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

import structlog

from sidecar.lifecycle import supervised
from sidecar.wal.store import BUSY_TIMEOUT_MS, connect

log = structlog.get_logger(__name__)

#: The -wal file may grow to this much even without a reserve (or with a small one).
MIN_HARD_BOUND = 4 * 1024 * 1024
#: How long after a nudge the checkpointer runs, gathering the commits meanwhile into one.
CHECKPOINT_EVERY_S = 0.05
THREAD_NAME = "wal-checkpoint"


def wal_file_size(db_path: Path) -> int:
    try:
        return os.stat(f"{db_path}-wal").st_size
    except FileNotFoundError:
        return 0


class Checkpointer:
    """A thread that runs PASSIVE checkpoints on its own connection after commits."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: Held while a checkpoint runs: SQLite lets one connection checkpoint at a time, and a
        #: TRUNCATE from the writer must wait for a PASSIVE one to finish, not fail beside it.
        self.running = threading.Lock()
        self.checkpoints = 0
        self._thread = threading.Thread(
            target=supervised(THREAD_NAME, self._run), name=THREAD_NAME, daemon=True
        )
        self._thread.start()

    def nudge(self) -> None:
        """A commit happened; thread-safe and cheap."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn = connect(self._data_dir, readonly=True)
        try:
            while True:
                self._wake.wait()
                if self._stop.wait(CHECKPOINT_EVERY_S):
                    break
                self._wake.clear()  # commits from here on nudge the next checkpoint
                # close() sets `_stop` before `_wake`: a close whose wake-up that clear swallowed
                # is seen here, and a later one wakes the wait above.
                if self._stop.is_set():
                    break
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            with self.running:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the writer's hard bound still holds the file in check
            log.warning("wal_checkpoint_failed", error=str(exc))
            return
        self.checkpoints += 1


class WalBound:
    """Bounds the -wal file beside `db_path`, from the writer's connection."""

    def __init__(self, conn: sqlite3.Connection, data_dir: Path, db_path: Path, reserve: int):
        self._conn = conn
        self._db_path = db_path
        self.hard = max(reserve // 2, MIN_HARD_BOUND)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA journal_size_limit = {self.hard}")
        self.checkpointer = Checkpointer(data_dir)
        self.hard_truncations = 0

    def size(self) -> int:
        return wal_file_size(self._db_path)

    def after_commit(self) -> None:
        """Nudge the checkpointer; past the hard bound, truncate here, waiting for readers."""
        self.checkpointer.nudge()
        size = self.size()
        if size <= self.hard:
            return
        self.hard_truncations += 1
        if not self.truncate(BUSY_TIMEOUT_MS):
            log.warning("wal_checkpoint_blocked", wal_bytes=size, bound_bytes=self.hard)

    def truncate(self, wait_ms: int) -> bool:
        """Checkpoint everything and truncate the -wal file, waiting up to `wait_ms` for
        readers to let go; False if one still held on (or SQLite failed)."""
        try:
            if wait_ms != BUSY_TIMEOUT_MS:
                self._conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            with self.checkpointer.running:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("wal_checkpoint_failed", error=str(exc))
            return False
        finally:
            if wait_ms != BUSY_TIMEOUT_MS:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return not busy

    def close(self) -> None:
        self.checkpointer.close()
