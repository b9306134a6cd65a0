"""The log's tables, and how a few values are stored in them.

Events live in `slices`: one row per (commit, topic), see slices.py. The
other tables hold what dedupe needs (`client_ids`: ids clients chose, with
their content digest, and their Kafka position once delivered;
`retired_blocks`: the assigned-id runs of delivered slices, for the dedupe
window), each topic's retirement watermark (`lanes`), and the events Kafka
refused for good (`parked`, one row per event). `AUTOINCREMENT` on
`slices.last_seq` keeps the highest sequence ever handed out, retired or not.
"""

from __future__ import annotations

import json
import sqlite3

from sidecar.model import Headers

#: The schema's version, kept in SQLite's user_version. Version 0 (the first release) stored
#: header values as UTF-8 text and could not hold a null payload; version 1 stored one row
#: per event (`migrate.py` lifts both).
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS slices (
    last_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    events BLOB NOT NULL,
    ids_tail TEXT,
    ids_runs TEXT,
    ids_high INTEGER,
    size INTEGER NOT NULL,
    published_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS slices_by_topic ON slices (topic, last_seq);
CREATE INDEX IF NOT EXISTS slices_by_ids ON slices (ids_high) WHERE ids_high IS NOT NULL;
CREATE TABLE IF NOT EXISTS lanes (
    topic TEXT PRIMARY KEY,
    settled_to INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS client_ids (
    event_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    seq INTEGER NOT NULL,
    published_ms INTEGER NOT NULL,
    partition INTEGER,
    kafka_offset INTEGER,
    delivered_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS client_ids_by_delivery ON client_ids (delivered_at)
    WHERE delivered_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS retired_blocks (
    ids_tail TEXT NOT NULL,
    ids_runs TEXT NOT NULL,
    ids_high INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    published_ms INTEGER NOT NULL,
    delivered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS retired_blocks_by_ids ON retired_blocks (ids_high);
CREATE INDEX IF NOT EXISTS retired_blocks_by_time ON retired_blocks (delivered_at);
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
#: The columns of a slice row, in the order slices.SliceRow holds them.
SLICE_COLUMNS = (
    "last_seq, first_seq, topic, events, ids_tail, ids_runs, ids_high, size, published_ms"
)
SLICE_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, ?"
#: A client id whose content fingerprint is not known (logged by an older release, or an id
#: Ferry assigned that a client sent back to retry): a publish of it is answered as a
#: duplicate, never as a conflict.
UNKNOWN_DIGEST = b""
NO_HEADERS = "[]"


def create_schema(conn: sqlite3.Connection) -> None:
    """Create what is missing, statement by statement (executescript would end a transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def encode_headers(headers: Headers) -> str:
    """Headers as the parked table and content digests hold them: a JSON list of [key, value]
    pairs, in order, repeats kept.

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
