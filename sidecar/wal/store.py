"""The SQLite file behind the write-ahead log: opening, pragmas, lock, statements.

Owns durability settings: WAL journal mode with synchronous=FULL, both read
back after being set (Ferry refuses to run if SQLite did not take them). An
exclusive lock on the data directory keeps two sidecars off one log. This
module runs statements; it never decides when to commit (the writer does).
The tables are in schema.py; how events are packed into slices in slices.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple

from sidecar.errors import ConfigError
from sidecar.ids import parse_id
from sidecar.model import DeliveredEvent, KafkaPosition, OutgoingEvent, Parked, PendingEvent
from sidecar.wal.admission import Usage
from sidecar.wal.digest import event_digest
from sidecar.wal.migrate import migrate
from sidecar.wal.schema import (
    SCHEMA_VERSION,
    SLICE_COLUMNS,
    SLICE_VALUES,
    UNKNOWN_DIGEST,
    create_schema,
    decode_headers,
    encode_headers,
)
from sidecar.wal.slices import (
    SliceBuilder,
    SliceRow,
    StoredSlice,
    decode_runs,
    decode_slice,
    sequence_of,
    stored_slice,
)

#: event_id, digest, seq, published_ms
ClientIdRow = tuple[str, bytes, int, int]

DB_NAME = "wal.sqlite3"
BUSY_TIMEOUT_MS = 10_000
LOCK_NAME = "ferry.lock"
PARKED_COLUMNS = "seq, event_id, topic, key, payload, headers, digest, size, published_ms"
_SLICE_COLUMNS = "first_seq, last_seq, topic, events, ids_tail, ids_runs, published_ms"

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "UNKNOWN_DIGEST",
    "ClientIdRow",
    "Known",
    "ParkedRow",
    "SliceRow",
    "Statements",
    "connect",
    "lock_directory",
]


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


def _create_owner_only(path: Path) -> None:
    """Create the log file owner-only if it does not exist; SQLite gives the -wal and -shm
    files it creates the database file's mode.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's included. A connection of another process (the
    forwarder's, a reader's) that closes then finds no lock but its own, takes itself for
    the last one and deletes the -wal file, and what this process commits afterwards goes to
    the unlinked file: lost. (A umask would not open the file, but it is the whole process's,
    and other threads' files would race with it.)
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def connect(data_dir: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the log with durable pragmas, verified; create the schema on first use."""
    path = data_dir / DB_NAME
    _create_owner_only(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
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


class ParkedRow(NamedTuple):
    """A parked event as an operator lists it."""

    sequence: int
    event_id: str
    topic: str
    size: int
    reason: str
    parked_at: float


class Known(NamedTuple):
    """What the log knows of an event id a client sent."""

    sequence: int
    digest: bytes
    published_ms: int
    delivered: bool
    position: KafkaPosition | None


class Statements:
    """Every SQL statement the log runs, on one connection. Callers own transactions."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- what is pending ---------------------------------------------------------------------

    def usage(self) -> Usage:
        """Pending events and bytes, in all and per topic (a slice counts whole until retired)."""
        usage = Usage()
        for topic, rows, size in self.conn.execute(
            "SELECT topic, SUM(last_seq - first_seq + 1), SUM(size) FROM slices GROUP BY topic"
        ):
            usage.topics[str(topic)] = [int(rows), int(size)]
            usage.rows += int(rows)
            usage.size += int(size)
        return usage

    def totals(self) -> tuple[int, int]:
        usage = self.usage()
        return usage.rows, usage.size

    def last_sequence(self) -> int:
        """The highest sequence ever handed out (AUTOINCREMENT remembers retired ones too)."""
        row = self.conn.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'slices'), 0),"
            " COALESCE((SELECT MAX(last_seq) FROM slices), 0))"
        ).fetchone()
        return int(row[0])

    def topics(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT topic FROM slices")]

    def settled_to(self) -> dict[str, int]:
        """Each topic's retirement watermark: its events up to it are delivered or parked."""
        return {str(t): int(s) for t, s in self.conn.execute("SELECT topic, settled_to FROM lanes")}

    def pending_for_topic(self, topic: str, after_seq: int, limit: int) -> list[PendingEvent]:
        """Up to `limit` events of `topic` above `after_seq`, in order."""
        events: list[PendingEvent] = []
        rows = self.conn.execute(
            f"SELECT {_SLICE_COLUMNS} FROM slices WHERE topic = ? AND last_seq > ?"
            " ORDER BY last_seq",
            (topic, after_seq),
        )
        for row in rows:
            events.extend(decode_slice(stored_slice(row), after_seq))
            if len(events) >= limit:
                break
        return events[:limit]

    # -- what the writer adds ----------------------------------------------------------------

    def insert_slices(self, slices: Sequence[SliceRow], client_ids: Sequence[ClientIdRow]) -> None:
        self.conn.executemany(
            f"INSERT INTO slices ({SLICE_COLUMNS}) VALUES ({SLICE_VALUES})", slices
        )
        if client_ids:
            self.conn.executemany(
                "INSERT INTO client_ids (event_id, digest, seq, published_ms) VALUES (?, ?, ?, ?)",
                client_ids,
            )

    def find_client_id(self, event_id: str) -> Known | None:
        row = self.conn.execute(
            "SELECT seq, digest, published_ms, partition, kafka_offset, delivered_at"
            " FROM client_ids WHERE event_id = ?",
            (event_id,),
        ).fetchone()
        if row is None:
            return None
        seq, digest, published_ms, partition, offset, delivered_at = row
        position = None if partition is None else KafkaPosition(int(partition), int(offset))
        return Known(int(seq), bytes(digest), int(published_ms), delivered_at is not None, position)

    def find_assigned_id(self, event_id: str) -> Known | None:
        """An id Ferry assigned, sent back by a client to retry: pending, or delivered lately."""
        parsed = parse_id(event_id)
        if parsed is None:
            return None
        stamp, tail = parsed
        for row in self.conn.execute(
            f"SELECT {_SLICE_COLUMNS} FROM slices WHERE ids_high >= ? AND ids_tail = ?",
            (stamp, tail),
        ):
            stored = stored_slice(row)
            seq = sequence_of(stored, stamp)
            if seq is not None:
                return Known(seq, UNKNOWN_DIGEST, stored.published_ms, False, None)
        for row in self.conn.execute(
            "SELECT first_seq, last_seq, ids_tail, ids_runs, published_ms FROM retired_blocks"
            " WHERE ids_high >= ? AND ids_tail = ?",
            (stamp, tail),
        ):
            first, last, tail_, runs, published_ms = row
            stored = StoredSlice(first, last, "", b"", decode_runs(tail_, runs), published_ms)
            if stored.ids is not None and stored.ids.index_of(stamp) is not None:
                # The events of a retired slice are gone: a slice that mixed client ids in
                # answers with its first sequence.
                seq = sequence_of(stored, stamp) if _all_assigned(stored) else first
                return Known(int(seq or first), UNKNOWN_DIGEST, int(published_ms), True, None)
        return None

    # -- what retirement removes -------------------------------------------------------------

    def retire_lane(self, topic: str, settled_to: int, now: float, keep_ids: bool) -> list[int]:
        """Remove `topic`'s slices wholly at or below `settled_to`; return [rows, bytes] gone."""
        self.conn.execute(
            "INSERT INTO lanes (topic, settled_to) VALUES (?1, ?2) ON CONFLICT (topic)"
            " DO UPDATE SET settled_to = MAX(settled_to, ?2)",
            (topic, settled_to),
        )
        if keep_ids:
            self.conn.execute(
                "INSERT INTO retired_blocks (ids_tail, ids_runs, ids_high, first_seq, last_seq,"
                " published_ms, delivered_at) SELECT ids_tail, ids_runs, ids_high, first_seq,"
                " last_seq, published_ms, ?3 FROM slices"
                " WHERE topic = ?1 AND last_seq <= ?2 AND ids_high IS NOT NULL",
                (topic, settled_to, now),
            )
        removed = self.conn.execute(
            "DELETE FROM slices WHERE topic = ? AND last_seq <= ?"
            " RETURNING last_seq - first_seq + 1, size",
            (topic, settled_to),
        ).fetchall()
        return [sum(int(r[0]) for r in removed), sum(int(r[1]) for r in removed)]

    def record_deliveries(
        self, delivered: Sequence[DeliveredEvent], now: float, keep_ids: bool
    ) -> None:
        """Client ids Kafka acknowledged: keep their position for the dedupe window, or forget."""
        if keep_ids:
            self.conn.executemany(
                "UPDATE client_ids SET partition = ?, kafka_offset = ?, delivered_at = ?"
                " WHERE event_id = ?",
                [(partition, offset, now, event_id) for event_id, partition, offset in delivered],
            )
        else:
            self.conn.executemany(
                "DELETE FROM client_ids WHERE event_id = ?", [(e,) for e, _, _ in delivered]
            )

    def forget_delivered_before(self, cutoff: float, limit: int) -> int:
        """Forget up to `limit` ids delivered before `cutoff`; a bounded step, repeat if full."""
        forgotten = self.conn.execute(
            "DELETE FROM client_ids WHERE event_id IN (SELECT event_id FROM client_ids"
            " WHERE delivered_at < ? LIMIT ?)",
            (cutoff, limit),
        ).rowcount
        forgotten += self.conn.execute(
            "DELETE FROM retired_blocks WHERE rowid IN (SELECT rowid FROM retired_blocks"
            " WHERE delivered_at < ? LIMIT ?)",
            (cutoff, limit),
        ).rowcount
        return int(forgotten)

    # -- parked events -----------------------------------------------------------------------

    def park(self, parked: Sequence[Parked], now: float) -> int:
        """Keep events Kafka refused for good aside (their slices retire with the lane)."""
        rows = []
        for p in parked:
            e = p.event
            headers = encode_headers(e.headers)
            size = len(e.payload or b"") + len(e.key or b"")
            size += sum(len(k.encode()) + len(v or b"") for k, v in e.headers)
            digest = event_digest(e.topic, e.key, e.payload, headers)
            rows.append(
                (
                    e.sequence,
                    e.event_id,
                    e.topic,
                    e.key,
                    e.payload,
                    headers,
                    digest,
                    size,
                    e.publish_time_ms,
                    p.reason,
                    now,
                )
            )
        return int(
            self.conn.executemany(
                f"INSERT OR IGNORE INTO parked ({PARKED_COLUMNS}, reason, parked_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            ).rowcount
        )

    def parked_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM parked").fetchone()[0])

    def find_parked(self, event_id: str) -> Known | None:
        row = self.conn.execute(
            "SELECT seq, digest, published_ms FROM parked WHERE event_id = ?", (event_id,)
        ).fetchone()
        return Known(int(row[0]), bytes(row[1]), int(row[2]), False, None) if row else None

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
        seq = self.last_sequence()
        rows = self.conn.execute(
            f"SELECT {PARKED_COLUMNS} FROM parked WHERE ?1 IS NULL OR topic = ?1 ORDER BY seq",
            (topic,),
        ).fetchall()
        for _, event_id, topic_, key, payload, headers, _, _size, published_ms in rows:
            seq += 1
            builder = SliceBuilder(seq)
            builder.add(_parked_event(event_id, topic_, key, payload, headers))
            self.insert_slices([builder.row(topic_, published_ms)], [])
            self.conn.execute("UPDATE client_ids SET seq = ? WHERE event_id = ?", (seq, event_id))
        self.conn.execute("DELETE FROM parked WHERE ?1 IS NULL OR topic = ?1", (topic,))
        return len(rows)

    def drop_parked(self, topic: str | None) -> int:
        self.conn.execute(
            "DELETE FROM client_ids WHERE event_id IN"
            " (SELECT event_id FROM parked WHERE ?1 IS NULL OR topic = ?1)",
            (topic,),
        )
        return int(
            self.conn.execute(
                "DELETE FROM parked WHERE ?1 IS NULL OR topic = ?1", (topic,)
            ).rowcount
        )

    def free_pages(self) -> int:
        return int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])


def _all_assigned(stored: StoredSlice) -> bool:
    count = stored.last_seq - stored.first_seq + 1
    return stored.ids is not None and sum(n for _, n in stored.ids.runs) == count


def _parked_event(
    event_id: str, topic: str, key: bytes | None, payload: bytes | None, headers: str
) -> OutgoingEvent:
    # The id travels in the slice's bytes: a released event keeps the id it was answered with.
    return OutgoingEvent(event_id, topic, key, payload, decode_headers(headers))
