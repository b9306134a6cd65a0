"""A read-only look into a log from outside the writer (tests, benchmarks, fault runs, the
admin view and the metrics): safe while Ferry runs, it takes no lock and writes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from sidecar.wal.store import DB_NAME


def _query(
    data_dir: Path, sql: str, params: Iterable[tuple[object, ...]] = ((),), timeout: float = 10
) -> list[tuple[object, ...]]:
    """`sql` run once per parameter tuple, its rows in order."""
    db = data_dir / DB_NAME
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout)
    try:
        return [row for args in params for row in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def pending_rows(data_dir: Path) -> int:
    """Events still in the log (not yet acknowledged by Kafka and retired)."""
    rows = _query(data_dir, "SELECT COUNT(*) FROM events")
    return int(str(rows[0][0])) if rows else 0


def pending_event_ids(data_dir: Path) -> list[str]:
    """Event ids of the events still in the log, oldest first."""
    return [str(r[0]) for r in _query(data_dir, "SELECT event_id FROM events ORDER BY seq")]


def oldest_pending_ms(
    data_dir: Path, topics: Iterable[str], timeout: float = 1.0
) -> dict[str, int]:
    """The publish time (Unix ms) of each topic's oldest pending event; topics without one, or
    whose oldest event's time is unknown (logged by an older release), are left out. One index
    look-up per topic (events_by_topic)."""
    rows = _query(
        data_dir,
        "SELECT topic, published_ms FROM events WHERE topic = ? ORDER BY seq LIMIT 1",
        [(topic,) for topic in topics],
        timeout,
    )
    return {str(topic): int(str(ms)) for topic, ms in rows if int(str(ms)) > 0}
