"""Looking into a write-ahead log's SQLite file from outside Ferry (what `sidecar.wal.peek`
does not cover)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def last_sequence(data_dir: Path) -> int:
    """The highest sequence the log ever handed out (it moves only when a row is written)."""
    db = data_dir / "wal.sqlite3"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'slices'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def integrity_check(data_dir: Path) -> str:
    """SQLite's own verdict on the log file ("ok" when sound)."""
    conn = sqlite3.connect(data_dir / "wal.sqlite3")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
