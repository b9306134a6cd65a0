"""Lifting a log written by an older release to the current schema, in one transaction.

Version 0 (the first release) and version 1 stored one row per event in
`events`, and delivered ids in `delivered_ids`. Each pending event becomes a
slice of its own, with its id kept in the slice's bytes and in `client_ids`
(it may have been answered to a client, who may send it again); each
remembered delivered id moves to `client_ids` with its Kafka position.
Sequences go on from the highest one the old log handed out.
"""

from __future__ import annotations

import json
import sqlite3

from sidecar.model import Headers, OutgoingEvent
from sidecar.wal.digest import event_digest
from sidecar.wal.schema import (
    SCHEMA_VERSION,
    SLICE_COLUMNS,
    SLICE_VALUES,
    UNKNOWN_DIGEST,
    create_schema,
    decode_headers,
    encode_headers,
)
from sidecar.wal.slices import SliceBuilder


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the log to SCHEMA_VERSION; a new or current log is left as it is."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version >= SCHEMA_VERSION or not _has_table(conn, "events"):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        _lift(conn, version)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _lift(conn: sqlite3.Connection, version: int) -> None:
    last = int(
        conn.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
            " COALESCE((SELECT MAX(seq) FROM events), 0))"
        ).fetchone()[0]
    )
    conn.execute("DROP INDEX IF EXISTS events_by_topic")
    conn.execute("ALTER TABLE events RENAME TO old_events")
    conn.execute("ALTER TABLE delivered_ids RENAME TO old_delivered_ids")
    create_schema(conn)
    published = "published_ms" if version >= 1 else "0"
    rows = conn.execute(
        f"SELECT seq, event_id, topic, key, payload, headers, digest, size, {published}"
        " FROM old_events ORDER BY seq"
    ).fetchall()
    for seq, event_id, topic, key, payload, stored_headers, digest, _size, ms in rows:
        if version == 0:
            # Version 0 kept header values as text and digested other bytes.
            headers: Headers = tuple(
                (str(k), str(v).encode()) for k, v in json.loads(stored_headers)
            )
            digest = event_digest(topic, key, payload, encode_headers(headers))
        else:
            headers = decode_headers(stored_headers)
        builder = SliceBuilder(int(seq))
        builder.add(OutgoingEvent(event_id, topic, key, payload, headers))
        conn.execute(
            f"INSERT INTO slices ({SLICE_COLUMNS}) VALUES ({SLICE_VALUES})", builder.row(topic, ms)
        )
        conn.execute(
            "INSERT INTO client_ids (event_id, digest, seq, published_ms) VALUES (?, ?, ?, ?)",
            (event_id, digest, seq, ms),
        )
    delivered_digest = "digest" if version >= 1 else "?1"
    delivered_ms = "published_ms" if version >= 1 else "0"
    conn.execute(
        "INSERT OR IGNORE INTO client_ids"
        " (event_id, digest, seq, published_ms, partition, kafka_offset, delivered_at)"
        f" SELECT event_id, {delivered_digest}, seq, {delivered_ms}, partition, kafka_offset,"
        " delivered_at FROM old_delivered_ids",
        (UNKNOWN_DIGEST,) if version == 0 else (),
    )
    conn.execute("DROP TABLE old_events")
    conn.execute("DROP TABLE old_delivered_ids")
    conn.execute("DELETE FROM sqlite_sequence WHERE name IN ('events', 'old_events', 'slices')")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('slices', ?)", (last,))
