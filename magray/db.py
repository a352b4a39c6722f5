"""Opening the memory file: the only place that sets connection PRAGMAs and runs write transactions."""

from __future__ import annotations

import functools
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from .config import DURABILITY
from .errors import Busy, MagrayError, NotFound, StoreError

# How long one statement waits for another process's lock before SQLite gives up.
BUSY_TIMEOUT_MS = 10_000
# After SQLite's own wait, BEGIN IMMEDIATE is retried this many times with jittered back-off.
WRITE_RETRIES = 5


def open_connection(path: Path, *, profile: str = "safe", create: bool = True,
                    check: Callable[[apsw.Connection], object] | None = None,
                    read_only: bool = False) -> apsw.Connection:
    """Open (and with `create`, make) the memory file, with sqlite-vec loaded and PRAGMAs set.
    `check` runs before anything is written to the file (e.g. refusing a newer schema).
    `read_only` opens it for reading only (a follower that Litestream keeps up to date)."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a memory file")
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is {_kind_of(path)}, not a memory file: name a regular file")
    if not path.exists():
        if not create or read_only:
            raise NotFound(f"no memory file at {path} (run `magray init`)")
        _create_private_file(path)
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI
    name = str(path)
    if read_only:
        from urllib.parse import quote

        flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        name = f"file:{quote(str(path.resolve()))}?mode=ro"
    with translate_errors(path):
        conn = apsw.Connection(name, flags=flags)
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        load_sqlite_vec(conn)
        try:
            for attempt in range(WRITE_RETRIES + 1):
                try:
                    # Fails here, with a clear error, if the file is not a SQLite database.
                    conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
                    if check is not None:
                        check(conn)
                    _apply_pragmas(conn, profile)
                    break
                except apsw.BusyError:
                    # Right after another process was killed, the first one in recovers the WAL
                    # index and others may be told SQLITE_BUSY without waiting: try again.
                    if attempt == WRITE_RETRIES:
                        raise
                    time.sleep(random.uniform(0.01, 0.05) * (2**attempt))
        except BaseException:
            conn.close()
            raise
    return conn


def _kind_of(path: Path) -> str:
    """What a path that is not a regular file is, in words (a FIFO, a device...)."""
    import stat

    mode = path.stat().st_mode
    for test, words in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


@functools.cache
def _sqlite_vec_path() -> str:
    """Where the sqlite-vec extension is, found without importing the `sqlite_vec` package (whose
    import pulls in numpy and would add ~50 ms to every command's start)."""
    import importlib.util

    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        raise StoreError("the sqlite-vec package is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "vec0")


def load_sqlite_vec(conn: apsw.Connection) -> None:
    conn.enable_load_extension(True)
    conn.load_extension(_sqlite_vec_path())
    conn.enable_load_extension(False)


def _create_private_file(path: Path) -> None:
    # Memories are private: the folder is 0700 and the file 0600 before SQLite ever writes to it;
    # SQLite gives the -wal and -shm files the mode of the database file.
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror}") from None


# Up to this much of the file is memory-mapped (SQLite caps it at its build's maximum, 2 GB by
# default); the rest is read as usual.
MMAP_BYTES = 4 << 30


def _apply_pragmas(conn: apsw.Connection, profile: str) -> None:
    # WAL: readers never block the writer and a crash never leaves a half-written page visible.
    # (Asked first: setting it on a file already in WAL mode would still take a lock.)
    # A file opened read-only (a follower, whose journal mode Litestream owns) is left as it is.
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal" and not conn.readonly("main"):
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal" and not conn.readonly("main"):
        raise StoreError(f"cannot switch the memory file to WAL mode (got {mode})")
    # FULL fsyncs the WAL on every commit (power-safe); NORMAL only at checkpoints (crash-safe).
    conn.execute(f"PRAGMA synchronous={DURABILITY[profile].synchronous}")
    # Tags and chunks belong to their memory; deleting a memory must take them with it.
    conn.execute("PRAGMA foreign_keys=ON")
    # Temporary b-trees of big sorts stay in memory instead of the user's /tmp.
    conn.execute("PRAGMA temp_store=MEMORY")
    # Checkpoint the WAL back into the file once it reaches ~4 MB (SQLite's default, made explicit).
    conn.execute("PRAGMA wal_autocheckpoint=1000")
    # Read the file through the OS's page cache mapped in memory rather than copied into each
    # connection's 2 MB cache: a search of a large file reads many pages it does not keep (1M
    # memories: hybrid p50 29 -> 24 ms, bench/RESULTS.md). Not on a read-only follower, whose
    # file another program (Litestream) rewrites outside SQLite's locks: a mapped page of a file
    # that shrinks under it would crash the process rather than fail a read.
    if not conn.readonly("main"):
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")


@contextmanager
def write_transaction(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """One short write transaction: BEGIN IMMEDIATE (take the write lock up front, so that it
    cannot fail half-way with SQLITE_BUSY), bounded retry, commit or roll back. A file that cannot
    be written (read-only, disk full, I/O error) gives a one-line StoreError, after the rollback."""
    if conn.readonly("main") and is_follower(Path(conn.filename)):
        raise StoreError(f"{conn.filename} is a read-only follower of a replica: write on the primary")
    with translate_errors(conn.filename):
        for attempt in range(WRITE_RETRIES + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except apsw.BusyError:
                if attempt == WRITE_RETRIES:
                    raise Busy("the memory file stayed locked by another process; try again") from None
                time.sleep(random.uniform(0.01, 0.05) * (2**attempt))
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            raise


# Litestream's follow mode keeps this file beside the copy it updates (the last transaction applied).
FOLLOWER_SUFFIX = "-txid"


def is_follower(path: Path) -> bool:
    """A file that `litestream restore -f` (`magray follow`) keeps up to date from a replica."""
    return Path(str(path) + FOLLOWER_SUFFIX).is_file()


@contextmanager
def read_snapshot(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """A consistent view across several SELECTs (WAL snapshot), without taking the write lock."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if not conn.getautocommit():
            conn.execute("COMMIT")


_ERROR_MESSAGES: list[tuple[type[BaseException], str]] = [
    (apsw.NotADBError, "is not a magray memory file (not a SQLite database)"),
    (apsw.CorruptError, "is corrupt (run `magray doctor`, or restore a backup)"),
    (apsw.FullError, "cannot be written: the disk is full (nothing was changed)"),
    (apsw.ReadOnlyError, "is read-only (check the permissions of the file and its folder)"),
    (apsw.CantOpenError, "cannot be opened (check that the path and its folder exist and are writable)"),
    (apsw.PermissionsError, "cannot be opened: permission denied"),
    (apsw.IOError, "could not be read or written (I/O error; the disk may be full)"),
    (apsw.BusyError, "stayed locked by another process; try again"),
]


def describe(exc: apsw.Error) -> str:
    """What a SQLite failure means for the file it happened to, as the end of a sentence."""
    for cls, message in _ERROR_MESSAGES:
        if isinstance(exc, cls):
            return message
    return f"could not be used: {exc}"


@contextmanager
def translate_errors(path: Path | str) -> Iterator[None]:
    """Turn SQLite's failures into one-line StoreErrors that name the file."""
    try:
        yield
    except MagrayError:
        raise
    except apsw.Error as exc:
        for cls, message in _ERROR_MESSAGES:
            if isinstance(exc, cls):
                raise (Busy if cls is apsw.BusyError else StoreError)(f"{path} {message}") from None
        raise
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror or exc}") from None


# -- the settings table (a JSON value per key) --------------------------------------------------

def get_setting(conn: apsw.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def set_setting(conn: apsw.Connection, key: str, value: Any) -> None:
    if value is None:
        conn.execute("DELETE FROM settings WHERE key = ?", (key,))
    else:
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))
