"""The SQLite store's file format: tables, ordered migrations, and the header encoding.

Migrations are named functions applied in order and recorded in the `migrations` table;
append new ones, never edit old ones.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable, Iterable

from parallax.streams.base import Header
from parallax.streams.semantics import now_ms

_pack_lengths = struct.Struct(">II").pack


def encode_headers(headers: Iterable[Header]) -> bytes:
    """Length-prefixed name/value pairs; the empty tuple encodes as b''."""
    return b"".join([_pack_lengths(len(name), len(value)) + name + value for name, value in headers])


def decode_headers(blob: bytes) -> tuple[Header, ...]:
    if not blob:
        return ()
    out: list[Header] = []
    offset = 0
    while offset < len(blob):
        name_len, value_len = struct.unpack_from(">II", blob, offset)
        offset += 8
        name = blob[offset : offset + name_len]
        offset += name_len
        out.append((name, blob[offset : offset + value_len]))
        offset += value_len
    return tuple(out)


def _create_schema(conn: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the migration's transaction.
    _execute_each(
        conn,
        """
        CREATE TABLE IF NOT EXISTS streams (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 0,
            last_ts INTEGER NOT NULL DEFAULT 0,
            fencing_token TEXT NOT NULL DEFAULT '',
            trim_point INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS records (
            stream_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            headers BLOB NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (stream_id, seq)
        ) WITHOUT ROWID;
        -- every fence command ever applied, so a fork at any seq knows the token in force there
        CREATE TABLE IF NOT EXISTS fences (
            stream_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            token TEXT NOT NULL,
            PRIMARY KEY (stream_id, seq)
        ) WITHOUT ROWID;
        """,
    )


def _execute_each(conn: sqlite3.Connection, script: str) -> None:
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    for statement in "\n".join(lines).split(";"):
        if statement.strip():
            conn.execute(statement)


# Ordered, named, recorded in the `migrations` table; append new ones, never edit old ones.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_streams_records_fences", _create_schema),
]


def migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM migrations")}
        for name, step in MIGRATIONS:
            if name not in done:
                step(conn)
                conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, now_ms()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
