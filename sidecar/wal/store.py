"""The SQLite file behind the write-ahead log: opening, pragmas, schema, lock, statements.

Owns durability settings: WAL journal mode with synchronous=FULL, both read
back after being set (Ferry refuses to run if SQLite did not take them). An
exclusive lock on the data directory keeps two sidecars off one log. This
module runs statements; it never decides when to commit (the writer does).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from sidecar.errors import ConfigError
from sidecar.model import Delivered, Headers, Parked, PendingEvent
from sidecar.wal.admission import Usage
from sidecar.wal.digest import event_digest

#: seq, event_id, topic, key, payload, headers (encoded), digest, size, published_ms
InsertRow = tuple[int, str, str, bytes | None, bytes | None, str, bytes, int, int]

DB_NAME = "wal.sqlite3"
BUSY_TIMEOUT_MS = 10_000
LOCK_NAME = "ferry.lock"

#: The schema's version, kept in SQLite's user_version. Version 0 (the first release) stored
#: header values as UTF-8 text and could not hold a null payload; `migrate` lifts it.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
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
CREATE INDEX IF NOT EXISTS events_by_topic ON events (topic, seq);
CREATE TABLE IF NOT EXISTS delivered_ids (
    event_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    seq INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL,
    delivered_at REAL NOT NULL,
    published_ms INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered_ids (delivered_at);
CREATE TABLE IF NOT EXISTS parked (
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
#: The columns an event row has in `events` and in `parked` alike.
EVENT_COLUMNS = "seq, event_id, topic, key, payload, headers, digest, size, published_ms"
#: A delivered id whose content fingerprint is not known (remembered by an older release): a
#: publish of that id is answered as a duplicate, never as a conflict.
UNKNOWN_DIGEST = b""


NO_HEADERS = "[]"


def encode_headers(headers: Headers) -> str:
    """Headers as stored: a JSON list of [key, value] pairs, in order, repeats kept.

    Values are bytes; each byte travels as the code point of the same number (latin-1), which
    JSON carries exactly, and a null value as null.
    """
    if not headers:
        return NO_HEADERS  # most events carry none: skip the encoder
    return json.dumps(
        [(k, None if v is None else v.decode("latin-1")) for k, v in headers],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_headers(text: str) -> Headers:
    if text == NO_HEADERS:
        return ()
    return tuple(
        (str(k), None if v is None else str(v).encode("latin-1")) for k, v in json.loads(text)
    )


def lock_directory(data_dir: Path) -> IO[bytes]:
    """Create the data directory (0700) and hold its exclusive lock for the process's life."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    handle = open(data_dir / LOCK_NAME, "ab")  # noqa: SIM115 - held until close()
    os.chmod(data_dir / LOCK_NAME, 0o600)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"{data_dir} is locked by another Ferry process; two sidecars cannot share one log"
        ) from None
    return handle


def connect(data_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the log with durable pragmas, verified; create the schema on first use."""
    path = data_dir / DB_NAME
    old_umask = os.umask(0o077)  # the -wal and -shm files SQLite creates get 0600 too
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    finally:
        os.umask(old_umask)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        # Incremental vacuum lets a drained log hand its pages back to the filesystem, which is
        # how a disk that filled up gets room again. It only takes on a new, empty file.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    # Some builds zero every freed page (secure_delete=ON): retiring a row would write its whole
    # payload again, doubling I/O and failing outright on a full disk. FAST zeroes in place only.
    conn.execute("PRAGMA secure_delete = FAST")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous = FULL")
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    if str(mode).lower() != "wal" or sync != 2:
        conn.close()
        raise ConfigError(
            f"SQLite refused durable settings (journal_mode={mode}, synchronous={sync}); "
            "the data directory must be on a local filesystem"
        )
    if not readonly:
        migrate(conn)
        create_schema(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        os.chmod(path, 0o600)
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing, statement by statement (executescript would end a transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a log written by an older release to SCHEMA_VERSION, in one transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    has_events = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
    ).fetchone()
    if version >= SCHEMA_VERSION or not has_events:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = Statements(conn).last_sequence()
        conn.execute("DROP INDEX IF EXISTS events_by_topic")
        conn.execute("ALTER TABLE events RENAME TO events_v0")
        conn.execute("ALTER TABLE delivered_ids ADD COLUMN published_ms INTEGER NOT NULL DEFAULT 0")
        # Version 0 digested other bytes: a retry of an id it delivered is taken as a duplicate.
        conn.execute("UPDATE delivered_ids SET digest = ?", (UNKNOWN_DIGEST,))
        create_schema(conn)
        rows = conn.execute(
            "SELECT seq, event_id, topic, key, payload, headers, size FROM events_v0 ORDER BY seq"
        )
        for seq, event_id, topic, key, payload, old_headers, size in rows:
            headers = tuple((str(k), str(v).encode()) for k, v in json.loads(old_headers))
            stored = encode_headers(headers)
            fingerprint = event_digest(topic, key, payload, stored)
            conn.execute(
                "INSERT INTO events (seq, event_id, topic, key, payload, headers, digest, size)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, event_id, topic, key, payload, stored, fingerprint, size),
            )
        conn.execute("DROP TABLE events_v0")
        conn.execute("DELETE FROM sqlite_sequence WHERE name IN ('events', 'events_v0')")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (last,))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _json_list(numbers: Iterable[int]) -> str:
    return "[" + ",".join(map(str, numbers)) + "]"


class ParkedRow(NamedTuple):
    """A parked event as an operator lists it."""

    sequence: int
    event_id: str
    topic: str
    size: int
    reason: str
    parked_at: float


class Statements:
    """Every SQL statement the log runs, on one connection. Callers own transactions."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def totals(self) -> tuple[int, int]:
        rows, size = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events"
        ).fetchone()
        return int(rows), int(size)

    def usage(self) -> Usage:
        """Pending events and bytes, in all and per topic."""
        usage = Usage()
        for topic, rows, size in self.conn.execute(
            "SELECT topic, COUNT(*), SUM(size) FROM events GROUP BY topic"
        ):
            usage.topics[str(topic)] = [int(rows), int(size)]
            usage.rows += int(rows)
            usage.size += int(size)
        return usage

    def parked_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM parked").fetchone()[0])

    def find_parked(self, event_id: str) -> tuple[int, bytes, int] | None:
        """(seq, digest, published_ms) of a parked event."""
        row = self.conn.execute(
            "SELECT seq, digest, published_ms FROM parked WHERE event_id = ?", (event_id,)
        ).fetchone()
        return (int(row[0]), bytes(row[1]), int(row[2])) if row else None

    def find_pending(self, event_id: str) -> tuple[int, bytes, int] | None:
        """(seq, digest, published_ms) of a logged event not yet delivered."""
        row = self.conn.execute(
            "SELECT seq, digest, published_ms FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
        return (int(row[0]), bytes(row[1]), int(row[2])) if row else None

    def find_delivered(self, event_id: str) -> tuple[int, bytes, int, int, int] | None:
        """(seq, digest, partition, offset, published_ms) of a delivered event remembered."""
        row = self.conn.execute(
            "SELECT seq, digest, partition, kafka_offset, published_ms FROM delivered_ids"
            " WHERE event_id = ?",
            (event_id,),
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), bytes(row[1]), int(row[2]), int(row[3]), int(row[4])

    def last_sequence(self) -> int:
        """The highest sequence ever handed out (AUTOINCREMENT remembers retired ones too)."""
        row = self.conn.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
            " COALESCE((SELECT MAX(seq) FROM events), 0))"
        ).fetchone()
        return int(row[0])

    def insert_many(self, rows: Sequence[InsertRow]) -> None:
        """Insert rows whose sequences the writer assigned; one statement for all of them."""
        self.conn.executemany(
            "INSERT INTO events"
            " (seq, event_id, topic, key, payload, headers, digest, size, published_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def retire(
        self, delivered: Sequence[Delivered], now: float, keep_ids: bool
    ) -> list[tuple[str, int]]:
        """Delete delivered rows (remembering their ids if asked); return their (topic, size).

        One DELETE for the whole list (the sequences travel as a JSON array) and one batched
        INSERT for the ids: per-row statements made retiring cost more than publishing.
        """
        by_seq = {d.sequence: d for d in delivered}
        if not by_seq:
            return []
        removed = self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))"
            " RETURNING seq, digest, size, published_ms, topic",
            (_json_list(by_seq),),
        ).fetchall()
        # Sequences missing from `removed` were retired already (a repeated delivery report).
        if keep_ids and removed:
            self.conn.executemany(
                "INSERT OR REPLACE INTO delivered_ids"
                " (event_id, digest, seq, partition, kafka_offset, delivered_at, published_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (d.event_id, digest, seq, d.position.partition, d.position.offset, now, ms)
                    for seq, digest, _, ms, _ in removed
                    for d in (by_seq[seq],)
                ],
            )
        return [(str(r[4]), int(r[2])) for r in removed]

    def park(self, parked: Sequence[Parked], now: float) -> list[tuple[str, int]]:
        """Move rows Kafka refused for good out of the forwarder's way; return (topic, size)."""
        by_seq = {p.sequence: p for p in parked}
        if not by_seq:
            return []
        self.conn.executemany(
            f"INSERT OR IGNORE INTO parked ({EVENT_COLUMNS}, reason, parked_at)"
            f" SELECT {EVENT_COLUMNS}, ?, ? FROM events WHERE seq = ?",
            [(p.reason, now, p.sequence) for p in by_seq.values()],
        )
        removed = self.conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))"
            " RETURNING topic, size",
            (_json_list(by_seq),),
        ).fetchall()
        return [(str(topic), int(size)) for topic, size in removed]

    def parked(self, topic: str | None) -> list[ParkedRow]:
        """Parked events, oldest first (of one topic, or all)."""
        rows = self.conn.execute(
            "SELECT seq, event_id, topic, size, reason, parked_at FROM parked"
            " WHERE ?1 IS NULL OR topic = ?1 ORDER BY seq",
            (topic,),
        ).fetchall()
        return [ParkedRow(int(r[0]), r[1], r[2], int(r[3]), r[4], float(r[5])) for r in rows]

    def release_parked(self, topic: str | None) -> int:
        """Queue parked events for Kafka again, in their order, under new sequences."""
        first = self.last_sequence()
        released = self.conn.execute(
            f"INSERT INTO events ({EVENT_COLUMNS})"
            f" SELECT ?1 + ROW_NUMBER() OVER (ORDER BY seq),"
            f" {EVENT_COLUMNS.split(', ', 1)[1]} FROM parked WHERE ?2 IS NULL OR topic = ?2",
            (first, topic),
        ).rowcount
        self.conn.execute("DELETE FROM parked WHERE ?1 IS NULL OR topic = ?1", (topic,))
        return int(released)

    def drop_parked(self, topic: str | None) -> int:
        return int(
            self.conn.execute(
                "DELETE FROM parked WHERE ?1 IS NULL OR topic = ?1", (topic,)
            ).rowcount
        )

    def forget_delivered_before(self, cutoff: float, limit: int) -> int:
        """Forget up to `limit` ids delivered before `cutoff`; a bounded step, repeat if full."""
        return self.conn.execute(
            "DELETE FROM delivered_ids WHERE event_id IN"
            " (SELECT event_id FROM delivered_ids WHERE delivered_at < ? LIMIT ?)",
            (cutoff, limit),
        ).rowcount

    def free_pages(self) -> int:
        return int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])

    def topics(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT topic FROM events")]

    def pending_for_topic(self, topic: str, after_seq: int, limit: int) -> list[PendingEvent]:
        rows = self.conn.execute(
            "SELECT seq, event_id, key, payload, headers, published_ms FROM events"
            " WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?",
            (topic, after_seq, limit),
        ).fetchall()
        return [
            PendingEvent(int(r[0]), r[1], topic, r[2], r[3], decode_headers(r[4]), int(r[5]))
            for r in rows
        ]
