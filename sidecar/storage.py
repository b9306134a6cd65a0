"""Checks of the data directory before the write-ahead log opens it.

The log holds every event not yet in Kafka. A directory that another user owns, or that the
group or others may write to, lets someone else replace or delete those files (or the lock),
so Ferry refuses to start on it, naming the path. A directory that does not exist yet is
created owner-only (0700) by the log (sidecar/wal/store.py). In Kubernetes, where a volume's
root is often group-writable (fsGroup) or world-writable (emptyDir), point --data-dir at a
subdirectory of the mount: Ferry creates it with its own user and mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.wal.store import DB_NAME, LOCK_NAME

#: Write permission for the group or for others.
SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH


def check_data_dir(data_dir: Path) -> None:
    """ConfigError if `data_dir` (or the log's files in it) is owned by another user or
    writable by group or others; nothing to check if it does not exist yet."""
    try:
        info = os.stat(data_dir)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"data_dir: {data_dir} is not a directory")
    _check_owned_and_private(data_dir, info)
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME):
        path = data_dir / name
        try:
            _check_owned_and_private(path, os.lstat(path))
        except FileNotFoundError:
            continue


def _check_owned_and_private(path: Path, info: os.stat_result) -> None:
    me = os.geteuid()
    if info.st_uid != me:
        raise ConfigError(
            f"data_dir: {path} is owned by uid {info.st_uid}, not by Ferry's uid {me}; "
            "another user could change or delete the log"
        )
    if info.st_mode & SHARED_WRITE:
        raise ConfigError(
            f"data_dir: {path} is writable by its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); make it 0700 (chmod go-w), or use a "
            "subdirectory Ferry creates"
        )
