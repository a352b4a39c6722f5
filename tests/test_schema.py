"""Migrations from a blank file, sql/schema.sql kept equal to them, and version checks."""

from __future__ import annotations

import apsw
import pytest

from magray import Memory, SchemaTooNew, StoreError
from magray.db import open_connection
from magray.schema import dump_schema, latest_version, migrate, query


def test_blank_file_migrates_to_the_schema_in_sql_schema_sql(tmp_path):
    migrated = open_connection(tmp_path / "migrated.db")
    assert migrate(migrated) == latest_version()
    assert migrated.execute("PRAGMA user_version").fetchone()[0] == latest_version()

    reference = open_connection(tmp_path / "reference.db")
    reference.execute(query("schema"))
    assert dump_schema(migrated) == dump_schema(reference)


def test_migrating_twice_changes_nothing(tmp_path):
    conn = open_connection(tmp_path / "m.db")
    migrate(conn)
    before = dump_schema(conn)
    assert migrate(conn) == latest_version()
    assert dump_schema(conn) == before


def test_each_migration_applies_on_the_previous_version(tmp_path):
    from magray.schema import migrations

    conn = open_connection(tmp_path / "step.db")
    for number, _name, sql in migrations():
        conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    assert dump_schema(conn) == dump_schema(_migrated(tmp_path / "ref.db"))


def _migrated(path):
    conn = open_connection(path)
    migrate(conn)
    return conn


def test_newer_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "future.db"
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version = {latest_version() + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="newer"):
        Memory.open(path)
    assert path.read_bytes() == before


def test_file_in_wal_mode_and_private(tmp_path):
    path = tmp_path / "sub" / "m.db"
    with Memory.open(path) as m:
        assert m.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert m.connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert m.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL in the safe profile
        # Read through a memory map (SQLite silently keeps 0 where its build forbids it).
        assert m.connection.execute("PRAGMA mmap_size").fetchone()[0] > 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_not_sqlite_and_directory_are_refused(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a magray memory file"):
        Memory.open(junk)
    assert junk.read_bytes() == b"this is not a database" * 100
    with pytest.raises(StoreError, match="directory"):
        Memory.open(tmp_path)


def test_a_read_only_file_is_not_memory_mapped(tmp_path):
    # A follower's file is rewritten by Litestream outside SQLite's locks: no mapping there.
    path = tmp_path / "m.db"
    Memory.open(path).close()
    conn = open_connection(path, read_only=True)
    assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 0
    conn.close()
    with Memory.open(path) as m:
        assert m.connection.execute("PRAGMA mmap_size").fetchone()[0] > 0
