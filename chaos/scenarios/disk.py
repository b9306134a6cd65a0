"""Disk full: the write-ahead log on a small tmpfs, filled by a filler file under load.

Each round fills the file system to the last byte, keeps it full for a while, then gives
space back, alternately by deleting the filler and by remounting the tmpfs bigger. Even
rounds also pause Kafka while the disk is full, so that the log must grow (with Kafka
healthy, SQLite may keep reusing pages it already has and never hit the full disk).
Checked: nothing ok is lost, the only errors are RESOURCE_EXHAUSTED and UNAVAILABLE, Ferry
keeps running, and the log drains to empty once space is back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path

from chaos.harness import (
    Env,
    Run,
    ScenarioResult,
    codes_outside,
    log,
    result_for_skip,
)
from chaos.history import UNKNOWN

ALLOWED = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "UNAVAILABLE_NOT_CONNECTED"}
SIZE_MB = 24
FULL_S = 4.0
KAFKA_PAUSE_S = 4.0


def mount_tmpfs(path: Path, size_mb: int) -> str | None:
    """Mount a tmpfs of `size_mb` at `path`; the reason when that is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if res.returncode != 0:
        return f"cannot mount a tmpfs ({res.stderr.strip() or res.returncode}); needs root"
    return None


def remount(path: Path, size_mb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(path)], check=True)


def fill(path: Path) -> int:
    """Write a filler file until the file system is full; return its size in bytes."""
    chunk = b"\0" * 65536
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    written += os.write(fd, chunk[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return written


def disk_full(env: Env) -> ScenarioResult:
    rounds = 6 if env.full else 2
    base = env.scratch("diskfull")
    mnt = base / "mnt"
    reason = mount_tmpfs(mnt, SIZE_MB)
    if reason:
        return result_for_skip("disk-full", env, reason)
    size = SIZE_MB
    try:
        run = Run(env, "disk-full", data_dir=mnt / "wal",
                  plan={"payload_bytes": 4000, "retry_budget_s": 1.0})  # fmt: skip
        run.start()
        filler = mnt / "filler"
        for i in range(rounds):
            time.sleep(3)
            pause = i % 2 == 0
            fault = run.history.fault("disk full" + (" + kafka paused" if pause else ""),
                                      f"#{i + 1}")  # fmt: skip
            if pause:
                env.kafka.pause(env.kafka.nodes[0])
            written = fill(filler)
            log(f"disk-full #{i + 1}: filler {written >> 10} KiB, kafka paused={pause}")
            if pause:  # shorter than the consumer session timeout, longer than message timeout
                time.sleep(KAFKA_PAUSE_S)
                env.kafka.resume(env.kafka.nodes[0])
            time.sleep(FULL_S)  # still full: the forwarder's retirements meet the full disk
            run.check_alive()
            if not run.alive():
                run.start_ferry()
            healed = time.monotonic()
            if i % 2 == 0:
                filler.unlink()
            else:  # the filler stays; the next round rewrites it to fill the new space
                size += 8
                remount(mnt, size)
            run.heal(fault, kafka=True, at=healed)
        time.sleep(2)
        result = run.finish()
        history = run.history
        bad = codes_outside(history, ALLOWED)
        if bad:
            result.problems.append(f"errors other than {sorted(ALLOWED)} under disk full: {bad}")
        exhausted = history.error_codes()["RESOURCE_EXHAUSTED"]
        result.extra["resource_exhausted"] = exhausted
        result.extra["unknown_outcomes"] = sum(1 for o in history.ops() if o.outcome == UNKNOWN)
        if not exhausted:
            result.problems.append("the disk never filled up (no RESOURCE_EXHAUSTED): no test")
        return result
    finally:
        with contextlib.suppress(Exception):
            env.kafka.resume(env.kafka.nodes[0])
        subprocess.run(["umount", "-l", str(mnt)], check=False)
