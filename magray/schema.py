"""The schema: numbered migrations applied in order, the version kept in PRAGMA user_version,
and the named SQL files the library runs."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import apsw

from .db import write_transaction
from .errors import SchemaTooNew, StoreError

log = logging.getLogger(__name__)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _resource_dir(name: str) -> Path:
    """`sql/` or `migrations/`: inside the installed wheel, else at the top of a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_data" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"magray's {name}/ folder is missing from the installation")


@functools.cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, file name, SQL) for every migration, in order."""
    found = []
    for path in sorted(_resource_dir("migrations").glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001.. without gaps, found {versions}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


@functools.cache
def query(name: str) -> str:
    """The text of `sql/<name>.sql`."""
    return (_resource_dir("sql") / f"{name}.sql").read_text(encoding="utf-8")


def current_version(conn: apsw.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def check_version(conn: apsw.Connection, path: Path | str) -> int:
    version = current_version(conn)
    if version > latest_version():
        raise SchemaTooNew(
            f"{path} has schema version {version}, newer than this magray understands "
            f"({latest_version()}); upgrade magray to open it"
        )
    return version


def migrate(conn: apsw.Connection, path: Path | str = "memory file") -> int:
    """Bring the file to the latest schema. Each migration runs in one transaction together with its
    user_version bump, so a crash leaves the file at the old or the new version, never between."""
    version = check_version(conn, path)
    if version == latest_version():
        return version
    # A migration may rebuild a table (SQLite's way to change a column): dropping the old table
    # must not cascade to the rows that refer to it, so foreign keys are off meanwhile (the pragma
    # cannot change inside a transaction) and checked before each migration commits.
    enforced = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for number, name, sql in migrations():
            if number <= version:
                continue
            with write_transaction(conn):
                # Another process may have migrated while this one waited for the write lock.
                now = check_version(conn, path)
                if now >= number:
                    continue
                if now != number - 1:
                    raise StoreError(f"{path} is at schema version {now}, cannot apply {name}")
                conn.execute(sql)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(f"{path}: migration {name} would leave {len(broken)} rows pointing "
                                     f"at nothing (first: {broken[0]}); nothing was changed")
                conn.execute(f"PRAGMA user_version = {number}")
            log.info("%s: applied migration %s", path, name)
            version = number
    finally:
        conn.execute(f"PRAGMA foreign_keys={'ON' if enforced else 'OFF'}")
    return version


def dump_schema(conn: apsw.Connection) -> list[tuple]:
    """Every schema object, for comparing two files: tables by their columns and foreign keys (an
    ALTER TABLE rewrites a table's SQL text differently from a fresh CREATE), the rest by SQL.
    Litestream's own tables in a replicated file (`_litestream_seq`, `_litestream_lock`) are not
    part of magray's schema."""
    objects = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_litestream\\_%' ESCAPE '\\' "
        "ORDER BY type, name").fetchall()
    out: list[tuple] = []
    for kind, name, table, sql in objects:
        if kind == "table" and not sql.upper().startswith("CREATE VIRTUAL"):
            columns = conn.execute(f"SELECT * FROM pragma_table_xinfo('{name}')").fetchall()
            keys = conn.execute(f"SELECT * FROM pragma_foreign_key_list('{name}')").fetchall()
            checks = sorted(re.findall(r"CHECK\s*\((?:[^()]|\([^()]*\))*\)", sql))
            autoincrement = bool(re.search(r"\bAUTOINCREMENT\b", sql, re.IGNORECASE))
            out.append((kind, name, tuple(columns), tuple(keys), tuple(checks), autoincrement))
        else:
            out.append((kind, name, table, " ".join(re.sub(r"--[^\n]*", "", sql).split())))
    return out
