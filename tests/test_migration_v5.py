"""A file made by the previous version (schema 4: migrations 0001-0004, real vectors from the test
model) opened by this magray: migration 0005 rebuilds memories and chunks (AUTOINCREMENT, nullable
hash, default times), adds the plain-SQL triggers and the views, keeps every memory, and cleans
up what plain-SQL deletes of that version left behind."""

from __future__ import annotations

import hashlib
import time

from helpers.reliability import consistency, model_path, open_raw

from magray import Memory
from magray.db import open_connection
from magray.schema import dump_schema, latest_version, migrate, migrations, query

FACTS = ["My sister Lena lives in Porto", "The user drinks green tea every morning",
         "Deploys go out on Fridays", "The wifi password is on the fridge", "The dog is called Pixel"]


def _version_4_file(path):
    """What magray at schema 4 wrote: memories with hashes, tags, chunks and vectors, an alias,
    per-session uses, the newest memory purged (its id only in the event log), and a memory
    deleted with the sqlite3 shell (no cascade then: its tags, chunk and vector left behind)."""
    from magray import binding, vectors
    from magray.db import open_connection
    from magray.embed import models
    from magray.embed.embedder import Embedder

    conn = open_connection(path)
    for number, _name, sql in migrations()[:4]:
        conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    embedder = Embedder(model_path())
    sha = models.verify(model_path(), None)
    now = time.time()
    conn.execute("INSERT INTO models (name, path, sha256, added_at) VALUES ('minilm', ?, ?, ?)",
                 (str(model_path()), sha, now))
    bound = binding.bind(conn, "minilm", sha, embedder.dim, embedder.pooling, 1, now)
    ids = []
    for i, text in enumerate(FACTS):
        memory_id = conn.execute(
            "INSERT INTO memories (layer, content, content_hash, project, created_at, updated_at) "
            "VALUES ('insights', ?, ?, 'home', ?, ?) RETURNING id",
            (text, hashlib.sha256(text.encode()).hexdigest(), now - 100 + i, now - 100 + i)).fetchone()[0]
        conn.execute("INSERT INTO memory_tags (memory_id, tag) VALUES (?, ?)", (memory_id, f"t{i}"))
        vectors.insert_chunks(conn, bound.generation, memory_id, "insights", "home", "", now - 100 + i,
                              [hashlib.sha256(text.encode()).hexdigest()], embedder.embed([text]))
        ids.append(memory_id)
    conn.execute("UPDATE memories SET merged_into = ? WHERE id = ?", (ids[0], ids[1]))
    conn.execute("INSERT INTO memory_uses (memory_id, session, uses, last_at) VALUES (?, 's1', 3, ?)", (ids[0], now))
    # The newest purged by magray (vectors first, then the row; foreign keys on).
    vectors.delete_for_memory(conn, bound.generation, ids[4])
    conn.execute("DELETE FROM memories WHERE id = ?", (ids[4],))
    conn.execute("INSERT INTO events (at, memory_id, kind) VALUES (?, ?, 'purge')", (now, ids[4]))
    # One deleted with the shell, which has foreign keys off.
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("DELETE FROM memories WHERE id = ?", (ids[3],))
    conn.execute("PRAGMA foreign_keys = ON")
    max_chunk = conn.execute("SELECT max(id) FROM chunks").fetchone()[0]
    conn.close()
    embedder.close()
    return ids, max_chunk


def _memories(db):
    conn = open_raw(db)
    try:
        return conn.execute("SELECT id, layer, content, content_hash, project, tags_text, created_at, "
                            "merged_into FROM memories ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_version_4_file_is_migrated_with_its_memories(tmp_path):
    db = tmp_path / "v4.db"
    ids, max_chunk = _version_4_file(db)
    before = _memories(db)
    assert [row[0] for row in before] == ids[:3]
    assert consistency(db)[0]  # the shell's delete left orphans behind

    with Memory.open(db, model=str(model_path())) as mem:
        conn = mem.connection
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        reference = open_connection(tmp_path / "reference.db")
        reference.execute(query("schema"))
        without_vectors = [o for o in dump_schema(conn) if not o[1].startswith(("vec_chunks_", "ann_lists_"))]
        assert without_vectors == dump_schema(reference)
        assert _memories(db) == before
        assert conn.execute("SELECT memory_id, uses FROM memory_uses").fetchall() == [(ids[0], 3)]

        hits = mem.search("where does my sibling live?", mode="vector", k=1, touch=False)
        assert [h.memory.id for h in hits] == [ids[0]]
        assert [h.memory.id for h in mem.search("Fridays", mode="text", touch=False)] == [ids[2]]
        new = mem.add("The user's bike is blue", layer="insights", project="home")
        assert new.id > ids[4]  # the purged newest id is not handed out again
        assert conn.execute("SELECT min(id) FROM chunks WHERE memory_id = ?", (new.id,)).fetchone()[0] > max_chunk
        shown = conn.execute("SELECT tags, state, alias_of FROM memories_view WHERE id = ?", (ids[1],)).fetchone()
        assert shown == ("t1", "alias", ids[0])
        report = mem.doctor()
        assert report.healthy, str(report)
    problems, counts = consistency(db)
    assert not problems, problems
    assert counts["memories"] == 4


def test_migration_keeps_foreign_keys_and_runs_once(tmp_path):
    db = tmp_path / "v4.db"
    _version_4_file(db)
    conn = open_raw(db)
    assert migrate(conn, db) == latest_version()
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert migrate(conn, db) == latest_version()
    conn.close()
