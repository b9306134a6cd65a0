"""An operator's hands on parked events: list them, queue them for Kafka again, or drop them.

Events Kafka refused for good (too large for their topic, not authorised) wait in the log's
`parked` table. Once the cause is fixed (the topic's max.message.bytes raised, the ACL
granted), `release` queues them again in their order; `drop` deletes them. Both take the
log's directory lock, so they run while Ferry is stopped and never race its writer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sidecar.wal.store import ParkedRow, Statements, connect, lock_directory


def list_parked(data_dir: Path, topic: str | None = None) -> list[ParkedRow]:
    conn = connect(data_dir, readonly=True)
    try:
        return Statements(conn).parked(topic)
    finally:
        conn.close()


def release_parked(data_dir: Path, topic: str | None = None) -> int:
    """Queue parked events (of `topic`, or all) for Kafka again; return how many."""
    return _change(data_dir, lambda sql: sql.release_parked(topic))


def drop_parked(data_dir: Path, topic: str | None = None) -> int:
    """Delete parked events (of `topic`, or all) for good; return how many."""
    return _change(data_dir, lambda sql: sql.drop_parked(topic))


def _change(data_dir: Path, change: Callable[[Statements], int]) -> int:
    lock = lock_directory(data_dir)
    try:
        conn = connect(data_dir)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = change(Statements(conn))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return count
        finally:
            conn.close()
    finally:
        lock.close()
