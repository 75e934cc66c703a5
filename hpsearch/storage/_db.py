"""The SQLite file: checks on its path, the schema, and connections.

One file holds any number of searches. The master writes it from one thread (the
journal's writer); ``hpsearch status``, the dashboard and the plots read it through
read-only connections. WAL mode lets those readers run while the search writes,
and ``synchronous=NORMAL`` makes a commit a write to the log without an fsync: a
commit survives the master process being killed; only a power cut can lose the
last moments of a search (which then reruns those tasks).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from ..errors import HPSearchError

__all__ = ["StorageError", "check_path", "connect_writer", "connect_reader", "SCHEMA_VERSION"]

#: The ``meta`` table says which program and layout a file holds.
FORMAT = "hpsearch-storage"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS searches (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    fingerprint TEXT NOT NULL,
    definition TEXT NOT NULL,      -- JSON: component -> {"text", "digest"}
    n_splits INTEGER NOT NULL,
    total INTEGER,                 -- candidates the strategy will propose, when known
    score_key TEXT NOT NULL,
    score_names TEXT NOT NULL,     -- JSON list
    seed INTEGER,                  -- the seed drawn for random_state=None
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    search_id INTEGER NOT NULL REFERENCES searches(id),
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,          -- running, finished, failed, interrupted
    error TEXT,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ops (   -- every ask and tell, in the order the strategy saw them
    search_id INTEGER NOT NULL REFERENCES searches(id),
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- 'ask', 'ask_idle' (work for idle slots) or 'tell'
    n INTEGER,                     -- ask: how many were asked for
    candidate_ids TEXT,            -- ask: JSON list of the ids it returned
    candidate_id INTEGER,          -- tell
    score REAL,                    -- tell
    PRIMARY KEY (search_id, seq)
);
CREATE TABLE IF NOT EXISTS candidates (
    search_id INTEGER NOT NULL REFERENCES searches(id),
    candidate_id INTEGER NOT NULL,
    params TEXT NOT NULL,          -- JSON, for people and charts (non-JSON values as text)
    params_key TEXT NOT NULL,      -- canonical text, compared on resume
    proposed REAL NOT NULL,
    score REAL,
    told REAL,
    PRIMARY KEY (search_id, candidate_id)
);
CREATE TABLE IF NOT EXISTS results (
    search_id INTEGER NOT NULL REFERENCES searches(id),
    candidate_id INTEGER NOT NULL,
    fold INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    worker TEXT,
    attempt INTEGER NOT NULL,
    finished REAL NOT NULL,        -- wall-clock time the master received it
    fit_time REAL NOT NULL,
    score_time REAL NOT NULL,
    n_test_samples INTEGER NOT NULL,
    test_scores TEXT NOT NULL,     -- JSON
    train_scores TEXT,             -- JSON
    error TEXT,
    PRIMARY KEY (search_id, candidate_id, fold)
);
CREATE TABLE IF NOT EXISTS workers (
    search_id INTEGER NOT NULL REFERENCES searches(id),
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    slots INTEGER,
    joined REAL NOT NULL,
    lost REAL,
    reason TEXT,
    PRIMARY KEY (run_id, name)
);
"""


class StorageError(HPSearchError, ValueError):
    """A storage file that cannot be used (unreadable, not hpsearch's, read-only), or
    a search whose definition differs from the one stored under the same name."""


def check_path(storage: Any, *, must_exist: bool = False) -> Path:
    """The storage path, or a :class:`StorageError` saying why it cannot be used."""
    if not isinstance(storage, (str, os.PathLike)):
        raise StorageError(
            f"storage must be the path of an SQLite file (str or Path), got {storage!r}"
        )
    path = Path(os.fspath(storage)).expanduser()
    if str(path) in ("", ":memory:"):
        raise StorageError(f"storage must be the path of a file, got {storage!r}")
    if path.is_dir():
        raise StorageError(
            f"storage path {str(path)!r} is a directory; give the path of a file inside it, "
            f"e.g. {str(path / 'search.db')!r}"
        )
    if must_exist and not path.exists():
        raise StorageError(f"storage file {str(path)!r} does not exist")
    parent = path.parent
    if not parent.is_dir():
        raise StorageError(
            f"the directory of storage file {str(path)!r} does not exist; create it first"
        )
    return path


def _check_writable(path: Path) -> None:
    # SQLite in WAL mode creates path-wal and path-shm next to the file: the directory
    # must be writable, not only the file. A real file is made to find out: permission
    # bits do not tell (root, read-only mounts, immutable directories).
    try:
        with tempfile.TemporaryFile(dir=path.parent, prefix=".hpsearch-probe-"):
            pass
    except OSError as exc:
        raise StorageError(
            f"cannot write storage file {str(path)!r}: its directory is read-only ({exc.strerror}). "
            "Give a path in a writable directory"
        ) from None
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"cannot write storage file {str(path)!r}: the file is read-only")


def connect_writer(storage: Any) -> tuple[Path, sqlite3.Connection]:
    """Open (creating it if needed) the file for writing, in WAL mode, with the schema."""
    path = check_path(storage)
    _check_writable(path)
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open storage file {str(path)!r}: {exc}") from None
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(
                f"storage file {str(path)!r} cannot use SQLite's WAL mode (got {mode!r}); "
                "is it on a network file system? Use a local disk"
            )
        conn.execute("PRAGMA foreign_keys=ON")
        _check_format(conn, path)
        conn.executescript(  # one transaction, one commit
            f"BEGIN IMMEDIATE;{_SCHEMA}INSERT OR IGNORE INTO meta VALUES "
            f"('format', '{FORMAT}'), ('schema_version', '{SCHEMA_VERSION}');COMMIT;"
        )
    except StorageError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(_describe_error(path, exc)) from None
    return path, conn


def connect_reader(storage: Any) -> tuple[Path, sqlite3.Connection]:
    """A read-only connection to an existing storage file."""
    path = check_path(storage, must_exist=True)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        _check_format(conn, path, required=True)
    except StorageError:
        raise
    except sqlite3.DatabaseError as exc:
        raise StorageError(_describe_error(path, exc)) from None
    return path, conn


def _describe_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"storage file {str(path)!r} is not a readable SQLite database ({text}): it is "
            "corrupt or another kind of file. Give another path, or move this file away"
        )
    return f"storage file {str(path)!r} cannot be used: {text}"


def _check_format(conn: sqlite3.Connection, path: Path, required: bool = False) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        if required:
            raise StorageError(f"storage file {str(path)!r} holds no search yet")
        return
    fmt = None
    if "meta" in tables:
        row = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        fmt = None if row is None else row[0]
    if fmt != FORMAT:
        raise StorageError(
            f"{str(path)!r} is an SQLite database of another program (tables {sorted(tables)}), "
            "not an hpsearch storage file; give another path"
        )
    version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if version is None or int(version[0]) > SCHEMA_VERSION:
        raise StorageError(
            f"storage file {str(path)!r} was written by a newer hpsearch (layout "
            f"{None if version is None else version[0]}, this one reads {SCHEMA_VERSION}); upgrade hpsearch"
        )
