"""`magray doctor`: damage a real file on purpose (vectors, chunks, FTS rows, tags, the vector table,
the binding, a b-tree page) and check that the doctor names each problem, that `--repair` fixes what
derives from the memories without changing them, and that the rest is reported, not touched."""

from __future__ import annotations

import json

import pytest

from helpers.reliability import consistency, content_digest, model_path, open_raw, run_cli, subprocess_env

from magray import vectors

LONG = " ".join(f"paragraph {i} on the migration of cranes across the northern wetlands" for i in range(60))


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A file with a dozen memories over three layers, tags, one soft-deleted and one long enough
    to be embedded in several chunks. Returns (path, {name: id})."""
    from magray import Memory

    monkeypatch.setenv("MAGRAY_THREADS", "1")  # other tests' processes share the cores
    db = tmp_path / "doctor.db"
    with Memory.open(db, model=str(model_path())) as mem:
        ids = {f"m{i}": mem.add(f"token{i} memory about topic {i}", tags=[f"t{i % 3}"],
                                layer=("interact", "insights", "assets")[i % 3]).id for i in range(12)}
        ids["long"] = mem.add(LONG, layer="assets").id
        mem.delete(ids["m11"])
    return db, ids


def _doctor(db, tmp_path, *args):
    proc = run_cli(db, subprocess_env(tmp_path), "--json", "doctor", *args)
    return proc, json.loads(proc.stdout)["data"]


def test_clean_file_is_healthy(built, tmp_path):
    db, _ = built
    proc, data = _doctor(db, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert data["healthy"] and data["findings"] == []
    assert data["checks"] == ["integrity", "fts", "vectors"]
    assert data["counts"]["memories"] == 12 and data["counts"]["vectors"] == data["counts"]["chunks"] > 12


def test_doctor_finds_and_repairs_derived_data(built, tmp_path):
    db, ids = built
    conn = open_raw(db)
    generation = conn.execute("SELECT generation FROM model_binding").fetchone()[0]
    vec = f"vec_chunks_{generation}"
    # m0: its vectors deleted from the vec table.
    conn.execute(f"DELETE FROM {vec} WHERE memory_id = ?", (ids["m0"],))
    # long: one chunk row dropped (its vector is now an orphan, the memory incomplete).
    dropped = conn.execute("SELECT id FROM chunks WHERE memory_id = ? AND seq = 1", (ids["long"],)).fetchone()[0]
    conn.execute("DELETE FROM chunks WHERE id = ?", (dropped,))
    # m1: its FTS entry removed with the FTS 'delete' command.
    row = conn.execute("SELECT id, content, title, tags_text FROM memories WHERE id = ?", (ids["m1"],)).fetchone()
    conn.execute("INSERT INTO memories_fts (memories_fts, rowid, content, title, tags_text) "
                 "VALUES ('delete', ?, ?, ?, ?)", row)
    # m2: a 'delete' with the wrong text: the index keeps m2's real tokens and loses its docsize.
    conn.execute("INSERT INTO memories_fts (memories_fts, rowid, content, title, tags_text) "
                 "VALUES ('delete', ?, 'bogus words', NULL, '')", (ids["m2"],))
    # A bogus FTS row for a memory that does not exist.
    conn.execute("INSERT INTO memories_fts (rowid, content, title, tags_text) VALUES (9999, 'ghost row', NULL, '')")
    # m3 purged behind magray's back as before schema 5 (no cascade, no clean-up triggers): its
    # tags, chunk and vector are orphans. The triggers' clean-up is undone to get there.
    conn.execute("PRAGMA foreign_keys = OFF")
    left_tags = conn.execute("SELECT memory_id, tag FROM memory_tags WHERE memory_id = ?", (ids["m3"],)).fetchall()
    left_chunks = conn.execute("SELECT * FROM chunks WHERE memory_id = ?", (ids["m3"],)).fetchall()
    conn.execute("DELETE FROM memories WHERE id = ?", (ids["m3"],))
    conn.executemany("INSERT INTO memory_tags VALUES (?, ?)", left_tags)
    conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", left_chunks)
    conn.execute("DELETE FROM pending_vector_deletes")
    conn.execute("PRAGMA foreign_keys = ON")
    # m4 (layer insights): its vector re-filed under another layer and project.
    chunk_id, blob, created = conn.execute(f"SELECT chunk_id, embedding, created_at FROM {vec} WHERE memory_id = ?",
                                           (ids["m4"],)).fetchone()
    floats = vectors.decode([blob], vectors.dimension(conn, generation))[0].tobytes()  # the bits come from float32
    conn.execute(f"DELETE FROM {vec} WHERE chunk_id = ?", (chunk_id,))
    conn.execute(f"INSERT INTO {vec} (chunk_id, layer, embedding, embedding_bits, project, session, created_at, "
                 "memory_id) VALUES (?, 'assets', ?, vec_quantize_binary(?), 'elsewhere', '', ?, ?)",
                 (chunk_id, blob, floats, created, ids["m4"]))
    # A chunk row of a generation that no longer exists.
    conn.execute("INSERT INTO chunks (memory_id, generation, seq, text_hash) VALUES (?, 99, 0, 'x')", (ids["m5"],))
    conn.close()
    before = content_digest(db)
    assert consistency(db)[0]  # the independent check sees damage too

    proc, data = _doctor(db, tmp_path)
    assert proc.returncode == 8, proc.stderr  # EXIT_UNHEALTHY
    found = {f["problem"]: f for f in data["findings"]}
    assert set(found) == {"fts_index", "fts_orphans", "fts_missing", "orphan_tags", "orphan_vectors",
                          "orphan_chunks", "misfiled_vectors", "missing_vectors"}
    assert found["fts_orphans"]["sample"] == [9999]
    assert found["fts_missing"]["sample"] == sorted([ids["m1"], ids["m2"]])
    assert found["orphan_tags"]["sample"] == [ids["m3"]]
    assert found["misfiled_vectors"]["sample"] == [ids["m4"]]
    assert found["missing_vectors"]["sample"] == sorted([ids["m0"], ids["long"]])
    assert found["orphan_vectors"]["count"] == 2  # the dropped chunk's vector and m3's
    assert found["orphan_chunks"]["count"] == 2  # m3's chunk and the generation-99 one
    assert not any(f["repaired"] for f in data["findings"])
    assert content_digest(db) == before  # checking changes nothing

    text = run_cli(db, subprocess_env(tmp_path), "doctor")
    assert text.returncode == 8 and "NOT healthy" in text.stdout and "--repair" in text.stdout

    proc, data = _doctor(db, tmp_path, "--repair")
    assert proc.returncode == 0, proc.stderr
    assert data["healthy"] and all(f["repaired"] for f in data["findings"])
    assert content_digest(db) == before  # repairs never touch the memories
    problems, counts = consistency(db)
    assert not problems, problems
    proc, data = _doctor(db, tmp_path)
    assert proc.returncode == 0 and data["findings"] == []

    from magray import Memory

    with Memory.open(db) as mem:
        assert [h.memory.id for h in mem.search("token1", mode="text", k=3)][:1] == [ids["m1"]]
        assert [h.memory.id for h in mem.search("token2", mode="text", k=3)][:1] == [ids["m2"]]
        assert ids["m0"] in [h.memory.id for h in mem.search("token0 memory about topic 0", mode="vector", k=3)]
        assert ids["m4"] in [h.memory.id for h in mem.search("token4 memory about topic 4", mode="vector",
                                                            k=3, filters=_layer("insights"))]
        events = mem.connection.execute("SELECT detail FROM events WHERE kind = 'repair'").fetchall()
    assert len(events) == 1 and json.loads(events[0][0])["fts_rebuilt"] == 1


def _layer(name):
    from magray.types import Filters

    return Filters(layers=(name,))


def test_missing_vector_table_is_rebuilt(built, tmp_path):
    db, ids = built
    conn = open_raw(db)
    generation = conn.execute("SELECT generation FROM model_binding").fetchone()[0]
    conn.execute(f"DROP TABLE vec_chunks_{generation}")
    conn.close()
    before = content_digest(db)
    proc, data = _doctor(db, tmp_path)
    assert proc.returncode == 8
    assert [(f["problem"], f["count"]) for f in data["findings"]] == [("vector_table_missing", 12)]
    proc, data = _doctor(db, tmp_path, "--repair")
    assert proc.returncode == 0 and data["healthy"], proc.stdout
    assert content_digest(db) == before
    problems, _ = consistency(db)
    assert not problems, problems


def test_a_damaged_stored_vector_is_found_and_re_embedded(built, tmp_path):
    db, ids = built
    conn = open_raw(db)
    generation = conn.execute("SELECT generation FROM model_binding").fetchone()[0]
    chunk = conn.execute("SELECT id FROM chunks WHERE memory_id = ?", (ids["m2"],)).fetchone()[0]
    conn.execute(f"UPDATE vec_chunks_{generation} SET embedding = x'00112233' WHERE chunk_id = ?", (chunk,))
    conn.close()
    env = subprocess_env(tmp_path)
    broken = run_cli(db, env, "search", "token2 memory about topic 2", "--json")
    assert broken.returncode != 0 and "doctor --repair" in broken.stderr and broken.stderr.count("\n") == 1
    before = content_digest(db)
    proc, data = _doctor(db, tmp_path)
    assert proc.returncode == 8
    assert [(f["problem"], f["count"], f["sample"]) for f in data["findings"]] == [("damaged_vectors", 1, [ids["m2"]])]
    proc, data = _doctor(db, tmp_path, "--repair")
    assert proc.returncode == 0 and data["healthy"], proc.stdout
    assert content_digest(db) == before
    hits = json.loads(run_cli(db, env, "--json", "search", "token2 memory about topic 2").stdout)["data"]
    assert hits[0]["memory"]["id"] == ids["m2"]


def test_dimension_mismatch_is_reported_not_repaired(built, tmp_path):
    db, _ = built
    conn = open_raw(db)
    conn.execute("UPDATE model_binding SET dim = 128")
    conn.close()
    before = content_digest(db)
    for args in ((), ("--repair",)):
        proc, data = _doctor(db, tmp_path, *args)
        assert proc.returncode == 8
        (finding,) = data["findings"]
        assert finding["problem"] == "dimension_mismatch" and not finding["repairable"] and not finding["repaired"]
        assert "384" in finding["message"] and "128" in finding["message"] and "reindex" in finding["message"]
    assert content_digest(db) == before


def test_damaged_btree_fails_integrity_check(built, tmp_path):
    """A page of an index overwritten with junk: the doctor reports it (nothing to rebuild from) and
    changes nothing; the file's bytes stay as they were."""
    db, _ = built
    conn = open_raw(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'memories_layer_created'").fetchone()[0]
    conn.close()  # the last connection checkpoints the WAL into the file
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xff\x13" * 200)
    damaged = db.read_bytes()
    proc = run_cli(db, subprocess_env(tmp_path), "--json", "doctor", "--repair")
    assert proc.returncode in (5, 8), proc.stderr
    if proc.returncode == 8:
        (finding,) = json.loads(proc.stdout)["data"]["findings"]
        assert finding["problem"] == "integrity" and not finding["repaired"]
    else:  # SQLite refused the file outright: one clear line
        assert proc.stderr.count("\n") == 1 and "corrupt" in proc.stderr
    assert db.read_bytes() == damaged
