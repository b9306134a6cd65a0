"""A read-only look into a log from outside the writer (tests, benchmarks, fault runs, the
admin view and the metrics): safe while Ferry runs, it takes no lock and writes nothing.

"Pending" means above its topic's settled watermark: the part of a slice at or below the
watermark is delivered (or parked) and only waits for the rest of its slice to retire.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from sidecar.model import PendingEvent
from sidecar.wal.slices import decode_slice, stored_slice
from sidecar.wal.store import DB_NAME

_ABOVE_WATERMARK = (
    " FROM slices s LEFT JOIN lanes l ON l.topic = s.topic"
    " WHERE s.last_seq > COALESCE(l.settled_to, 0)"
)


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
    """Events still in the log that Kafka has not acknowledged (nor refused for good)."""
    rows = _query(
        data_dir,
        "SELECT SUM(s.last_seq - MAX(s.first_seq, COALESCE(l.settled_to, 0) + 1) + 1)"
        + _ABOVE_WATERMARK,
    )
    return int(str(rows[0][0] or 0)) if rows else 0


def pending_event_ids(data_dir: Path) -> list[str]:
    """Event ids of the pending events, oldest first."""
    return [e.event_id for e in pending_events(data_dir)]


def pending_events(data_dir: Path) -> list[PendingEvent]:
    """The pending events, oldest first."""
    rows = _query(
        data_dir,
        "SELECT s.first_seq, s.last_seq, s.topic, s.events, s.ids_tail, s.ids_runs,"
        " s.published_ms, COALESCE(l.settled_to, 0)" + _ABOVE_WATERMARK,
    )
    events: list[PendingEvent] = []
    for row in rows:
        events.extend(decode_slice(stored_slice(row[:7]), int(str(row[7]))))
    return sorted(events, key=lambda e: e.sequence)


def oldest_pending_ms(
    data_dir: Path, topics: Iterable[str], timeout: float = 1.0
) -> dict[str, int]:
    """The publish time (Unix ms) of each topic's oldest pending event; topics without one, or
    whose oldest event's time is unknown (logged by an older release), are left out. One index
    look-up per topic (slices_by_topic)."""
    rows = _query(
        data_dir,
        "SELECT topic, published_ms FROM slices WHERE topic = ?1 AND last_seq >"
        " COALESCE((SELECT settled_to FROM lanes WHERE topic = ?1), 0)"
        " ORDER BY last_seq LIMIT 1",
        [(topic,) for topic in topics],
        timeout,
    )
    return {str(topic): int(str(ms)) for topic, ms in rows if int(str(ms)) > 0}
