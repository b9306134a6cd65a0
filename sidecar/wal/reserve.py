"""Disk space held back so that a full disk can still be recovered from.

Retiring delivered rows is itself a write (WAL frames, then a checkpoint), so
a log that filled the disk could never shrink on its own. A reserve file is
allocated beside the log at start; when SQLite reports the disk full, the
reserve is released so that SQLite can checkpoint its WAL file and
retirements can run; publishes are refused until space is back (the reserve
can be allocated again). The writer keeps the WAL file within half the
reserve (checkpoint.py), so the other half is left for the retirements.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

RESERVE_NAME = "disk-reserve"
#: The reserve never takes more than this share of the filesystem.
MAX_SHARE = 0.25


class DiskReserve:
    """A preallocated file of up to `size` bytes in `directory`."""

    def __init__(self, directory: Path, size: int) -> None:
        self.path = directory / RESERVE_NAME
        total = shutil.disk_usage(directory).total
        self.size = min(size, int(total * MAX_SHARE))

    @property
    def held(self) -> bool:
        return self.path.exists() and self.path.stat().st_size >= self.size

    def ensure(self) -> bool:
        """Allocate the reserve if it is not there; False if the disk has no room for it."""
        if self.size <= 0 or self.held:
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.warning("disk_reserve_unavailable", error=str(exc), bytes=self.size)
            return False
        return True

    def release(self) -> bool:
        """Free the reserve; True if there was one to free."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk_reserve_released", bytes=self.size)
        return True

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path.parent).free

    def room_to_restore(self) -> bool:
        """Whether the disk has room for the reserve again, and half as much to spare."""
        return self.free_bytes() >= self.size + self.size // 2
