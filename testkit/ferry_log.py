"""Reading a process's log file: its tail, and Ferry's JSON log entries and what they say."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of `path` ("(no log)" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def json_entries(path: Path, event: str | None = None) -> Iterator[dict[str, Any]]:
    """Ferry's structured log entries in `path` (lines that are not JSON are skipped), only
    those of `event` when given."""
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                yield entry


def assigned_partitions(path: Path, topic: str) -> set[int]:
    """The partitions of `topic` the sidecar logging to `path` holds now, by its consumers'
    `partitions_assigned` and `partitions_revoked` entries."""
    owned: set[int] = set()
    for entry in json_entries(path):
        parts = {p for t, p in entry.get("partitions", []) if t == topic}
        if entry.get("event") == "partitions_assigned":
            owned |= parts
        elif entry.get("event") == "partitions_revoked":
            owned -= parts
    return owned
