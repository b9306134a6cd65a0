"""A log written by the first release (schema version 0) opens, migrated, with nothing lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from sidecar.model import Accepted, Delivered, KafkaPosition, OutgoingEvent, Rejected
from sidecar.wal.store import DB_NAME, SCHEMA_VERSION, Statements, connect
from sidecar.wal.writer import WalLimits, WalWriter

#: The first release's schema, as its files hold it.
SCHEMA_V0 = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key BLOB,
    payload BLOB NOT NULL,
    headers TEXT NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX events_by_topic ON events (topic, seq);
CREATE TABLE delivered_ids (
    event_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    seq INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    delivered_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX delivered_by_time ON delivered_ids (delivered_at);
"""
LIMITS = WalLimits(max_rows=100, max_bytes=1 << 20, dedupe_window_s=3600.0)


def write_v0_log(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_V0)
    rows = [
        (5, "a", "orders", b"k", b"one", json.dumps([["h", "é日"], ["z", ""]]), b"d" * 16, 13),
        (6, "b", "orders", None, b"", "[]", b"e" * 16, 0),
        (9, "c", "audit", b"k2", b"three", "[]", b"f" * 16, 7),
    ]
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO delivered_ids VALUES ('old', ?, 3, 1, 41, 1e9)", (b"x" * 16,))
    # Sequences 10-12 were handed out and retired: they must never come again.
    conn.execute("UPDATE sqlite_sequence SET seq = 12 WHERE name = 'events'")
    conn.commit()
    conn.close()


def test_a_version_0_log_is_migrated_with_every_pending_event(data_dir: Path) -> None:
    write_v0_log(data_dir)
    conn = connect(data_dir)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        sql = Statements(conn)
        assert sql.totals() == (3, 20)
        assert sql.last_sequence() == 12
        [a, b] = sql.pending_for_topic("orders", 0, 10)
        [c] = sql.pending_for_topic("audit", 0, 10)
    finally:
        conn.close()
    assert (a.sequence, a.event_id, a.key, a.payload) == (5, "a", b"k", b"one")
    assert a.headers == (("h", "é日".encode()), ("z", b""))
    assert a.publish_time_ms == 0  # not known for events the first release logged
    assert (b.sequence, b.key, b.payload, b.headers) == (6, None, b"", ())
    assert (c.sequence, c.topic, c.payload) == (9, "audit", b"three")


async def test_after_migration_dedupe_holds_and_sequences_go_on(data_dir: Path) -> None:
    write_v0_log(data_dir)
    writer = WalWriter(data_dir, LIMITS)
    try:
        headers = (("h", "é日".encode()), ("z", b""))
        same = OutgoingEvent("a", "orders", b"k", b"one", headers)
        other = OutgoingEvent("a", "orders", b"k", b"two", headers)
        delivered = OutgoingEvent("old", "orders", None, b"whatever", ())
        new = OutgoingEvent("n", "orders", None, None, ())
        dup, conflict, old, fresh = await writer.append([same, other, delivered, new])
        assert isinstance(dup, Accepted)
        assert (dup.sequence, dup.duplicate) == (5, True)
        assert isinstance(conflict, Rejected)  # re-digested: other content is still refused
        # The first release digested other bytes: a delivered id is taken as a duplicate.
        assert old == Accepted("old", 3, True, 0, KafkaPosition(1, 41))
        assert isinstance(fresh, Accepted)
        assert fresh.sequence == 13
        await asyncio.wrap_future(writer.retire([Delivered(5, "a", KafkaPosition(0, 1))]))
        assert writer.pending_rows == 3
    finally:
        await asyncio.to_thread(writer.close)


def test_migrating_twice_changes_nothing(data_dir: Path) -> None:
    write_v0_log(data_dir)
    connect(data_dir).close()
    conn = connect(data_dir)
    try:
        assert Statements(conn).totals() == (3, 20)
    finally:
        conn.close()
