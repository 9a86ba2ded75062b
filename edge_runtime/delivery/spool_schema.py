"""The spool file's format: its schema, the marks that make an SQLite file a spool, the
migration of older files and the checks made when one is opened (:func:`prepare`).

**The file.** An SQLite database marked as a spool (``PRAGMA application_id`` "EDSP",
``user_version`` = :data:`SCHEMA_VERSION`): a ``messages`` table and a one-row ``meta`` table
(``next_seq``, depth, bytes, loss totals, the file's
:attr:`~edge_runtime.delivery.spool_file.SpoolFile.identity`). Journal mode is WAL. Schema 1
files (no identity) are migrated at open: they get a new identity; a file of a newer schema is
refused. Opening, ownership and the batched writes are in :mod:`edge_runtime.delivery.spool_file`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime.delivery.spool_space import is_full, release_reserve_of
from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
APPLICATION_ID = 0x45445350  # "EDSP": marks the file as an edge-runtime spool

_SCHEMA = """
CREATE TABLE messages (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    qos      INTEGER NOT NULL,
    expiry_s REAL,
    created  REAL    NOT NULL,
    seq      INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    size     INTEGER NOT NULL
);
CREATE INDEX messages_deadline ON messages (created + expiry_s) WHERE expiry_s IS NOT NULL;
CREATE TABLE meta (
    id               INTEGER PRIMARY KEY CHECK (id = 0),
    next_seq         INTEGER NOT NULL,
    depth            INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    dropped_overflow INTEGER NOT NULL,
    expired          INTEGER NOT NULL,
    created          REAL    NOT NULL,
    identity         TEXT,
    unspooled        INTEGER NOT NULL DEFAULT 0,
    lost             INTEGER NOT NULL DEFAULT 0
);
"""
# Schema 1 -> 2: the file's identity and the full-disk totals (the columns schema 2 adds last).
_MIGRATE_1_TO_2 = (
    "ALTER TABLE meta ADD COLUMN identity TEXT",
    "ALTER TABLE meta ADD COLUMN unspooled INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE meta ADD COLUMN lost INTEGER NOT NULL DEFAULT 0",
)


def prepare(conn: sqlite3.Connection, path: Path, synchronous: str) -> None:
    """Check that ``conn`` is a spool of a schema we read (or create one, or migrate a schema 1
    file), set the pragmas (``synchronous``: ``"normal"`` or ``"full"``)."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise ConfigError(f"spool {path}: an SQLite database but not an edge-runtime spool; give another --spool")
    elif app_id != APPLICATION_ID or version < 1:
        raise ConfigError(f"spool {path}: an SQLite database but not an edge-runtime spool; give another --spool")
    elif version > SCHEMA_VERSION:
        raise ConfigError(
            f"spool {path}: written by a newer edge-runtime (spool schema {version}, this one reads"
            f" {SCHEMA_VERSION}); upgrade edge-runtime or give another --spool"
        )
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ConfigError(f"spool {path}: the file system does not support SQLite WAL (journal mode {mode})")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    if app_id == 0:
        statements = [s for s in _SCHEMA.split(";") if s.strip()]
        _transaction(conn, path, [
            *((s, ()) for s in statements),
            ("INSERT INTO meta (id, next_seq, depth, bytes, dropped_overflow, expired, created, identity)"
             " VALUES (0, 0, 0, 0, 0, 0, ?, ?)", (time.time(), secrets.token_hex(8))),
            (f"PRAGMA application_id = {APPLICATION_ID}", ()),
            (f"PRAGMA user_version = {SCHEMA_VERSION}", ()),
        ])  # fmt: skip
        logger.info("spool %s: created (schema %d)", path, SCHEMA_VERSION)
    elif version == 1:
        _transaction(conn, path, [
            *((s, ()) for s in _MIGRATE_1_TO_2),
            ("UPDATE meta SET identity = ? WHERE id = 0", (secrets.token_hex(8),)),
            ("PRAGMA user_version = 2", ()),
        ])  # fmt: skip
        logger.info("spool %s: migrated from schema 1 to %d (it has an identity now)", path, SCHEMA_VERSION)


def _transaction(conn: sqlite3.Connection, path: Path, statements: list[tuple[str, Sequence[Any]]]) -> None:
    """Run ``statements`` in one transaction; on a full disk, once more after releasing the reserve."""
    for attempt in (1, 2):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
            return
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            if attempt == 2 or not is_full(exc) or not release_reserve_of(path):
                raise
            logger.warning("spool %s: the disk is full (%s): released the reserve to set up the file", path, exc)
