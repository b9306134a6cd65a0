"""Logs written by earlier releases (schema versions 0 and 1: one row per event) open,
migrated to slices, with nothing lost."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from sidecar.model import Accepted, KafkaPosition, OutgoingEvent, Rejected, Settlement
from sidecar.wal.digest import event_digest
from sidecar.wal.schema import encode_headers
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
        assert sql.totals() == (3, 18)  # sizes recounted as Ferry counts them
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
        assert old == Accepted("old", 3, True, 0, KafkaPosition(1, 41), delivered=True)
        assert isinstance(fresh, Accepted)
        assert fresh.sequence == 13
        settled = Settlement({"orders": 5}, [("a", 0, 1)], [])
        await asyncio.wrap_future(writer.retire(settled))
        assert writer.pending_rows == 3
    finally:
        await asyncio.to_thread(writer.close)


def test_migrating_twice_changes_nothing(data_dir: Path) -> None:
    write_v0_log(data_dir)
    connect(data_dir).close()
    conn = connect(data_dir)
    try:
        assert Statements(conn).totals() == (3, 18)
    finally:
        conn.close()


#: The schema of the release before slices, as its files hold it.
SCHEMA_V1 = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key BLOB,
    payload BLOB,
    headers TEXT NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    published_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_by_topic ON events (topic, seq);
CREATE TABLE delivered_ids (
    event_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    seq INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    delivered_at REAL NOT NULL,
    published_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX delivered_by_time ON delivered_ids (delivered_at);
CREATE TABLE parked (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key BLOB,
    payload BLOB,
    headers TEXT NOT NULL,
    digest BLOB NOT NULL,
    size INTEGER NOT NULL,
    published_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    parked_at REAL NOT NULL
);
"""
V1_HEADERS = (("bin", b"\x00\xff\x80"), ("bin", b""), ("nul", None))
#: (seq, id, topic, key, payload, headers) of the pending events: a tombstone, binary and
#: repeated headers, a null header value, an empty key beside a null one.
V1_EVENTS = [
    (20, "0190f1d2-aaaa-7000-8000-000000000001", "orders", b"k", b"one", V1_HEADERS),
    (21, "client-2", "orders", b"k", None, ()),
    (23, "client-3", "audit", b"", b"", ()),
]


def write_v1_log(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700)
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_V1)
    for seq, event_id, topic, key, payload, headers in V1_EVENTS:
        stored = encode_headers(headers)
        size = len(key) + len(payload or b"") + sum(len(k) + len(v or b"") for k, v in headers)
        conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                event_id,
                topic,
                key,
                payload,
                stored,
                event_digest(topic, key, payload, stored),
                size,
                1_700_000_000_000 + seq,
            ),
        )
    digest = event_digest("orders", None, b"gone", "[]")
    conn.execute(
        "INSERT INTO delivered_ids VALUES ('delivered-1', ?, 11, 2, 77, 1e12, 1700000000011)",
        (digest,),
    )
    conn.execute(
        "INSERT INTO parked VALUES (15, 'parked-1', 'orders', NULL, ?, '[]', ?, 3, 5, 'too large',"
        " 1e9)",
        (b"big", event_digest("orders", None, b"big", "[]")),
    )
    conn.execute("UPDATE sqlite_sequence SET seq = 30 WHERE name = 'events'")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_a_version_1_log_is_migrated_byte_for_byte(data_dir: Path) -> None:
    write_v1_log(data_dir)
    conn = connect(data_dir)
    try:
        sql = Statements(conn)
        assert sql.last_sequence() == 30
        pending = sql.pending_for_topic("orders", 0, 10) + sql.pending_for_topic("audit", 0, 10)
        assert [p.topic for p in sql.parked(None)] == ["orders"]
    finally:
        conn.close()
    assert [
        (p.sequence, p.event_id, p.topic, p.key, p.payload, p.headers) for p in pending
    ] == V1_EVENTS
    assert [p.publish_time_ms for p in pending] == [1_700_000_000_000 + s for s, *_ in V1_EVENTS]
    # Ids kept as they were: none of them is taken for one Ferry assigns in blocks.
    assert not any(p.assigned_id for p in pending)


async def test_after_a_version_1_migration_dedupe_parking_and_sequences_hold(
    data_dir: Path,
) -> None:
    write_v1_log(data_dir)
    writer = WalWriter(data_dir, LIMITS)
    try:
        seq, event_id, topic, key, payload, headers = V1_EVENTS[0]
        same = OutgoingEvent(event_id, topic, key, payload, headers)
        other = same._replace(payload=b"two")
        delivered = OutgoingEvent("delivered-1", "orders", None, b"gone", ())
        parked = OutgoingEvent("parked-1", "orders", None, b"big", ())
        new = OutgoingEvent("n", "orders", None, None, ())
        answers = await writer.append([same, other, delivered, parked, new])
        dup, conflict, old, still_parked, fresh = answers
        assert dup == Accepted(event_id, seq, True, 1_700_000_000_000 + seq)
        assert isinstance(conflict, Rejected)
        assert old == Accepted(
            "delivered-1", 11, True, 1_700_000_000_011, KafkaPosition(2, 77), delivered=True
        )
        assert isinstance(still_parked, Accepted)
        assert still_parked.sequence == 15
        assert isinstance(fresh, Accepted)
        assert fresh.sequence == 31
        assert writer.pending_rows == 4
        assert writer.parked_rows == 1
    finally:
        await asyncio.to_thread(writer.close)
