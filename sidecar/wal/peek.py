"""A read-only look into a log from outside the sidecar (tests, benchmarks, fault runs, and
later the admin view): safe while Ferry runs, it takes no lock and writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sidecar.wal.store import DB_NAME


def _query(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    db = data_dir / DB_NAME
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def pending_rows(data_dir: Path) -> int:
    """Events still in the log (not yet acknowledged by Kafka and retired)."""
    rows = _query(data_dir, "SELECT COUNT(*) FROM events")
    return int(str(rows[0][0])) if rows else 0


def pending_event_ids(data_dir: Path) -> list[str]:
    """Event ids of the events still in the log, oldest first."""
    return [str(r[0]) for r in _query(data_dir, "SELECT event_id FROM events ORDER BY seq")]
