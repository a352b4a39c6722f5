"""The sqlite3 shell as a first-class client: rows written with plain SQL through the real `sqlite3`
binary are hashed, embedded, de-duplicated and cleaned up by magray (the CLI, a long-running
server) before its next read or write, as if they had been written through magray."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import anyio
import pytest

from helpers.reliability import consistency, open_raw, run_cli, start_worker, subprocess_env

SQLITE3 = shutil.which("sqlite3")
pytestmark = pytest.mark.skipif(SQLITE3 is None, reason="the sqlite3 shell is not installed (apt-get install sqlite3)")


def shell(db, sql: str) -> str:
    """Run SQL with the stock sqlite3 shell (no sqlite-vec, foreign keys off, as a person would)."""
    proc = subprocess.run([SQLITE3, "-bail", "-cmd", ".timeout 30000", str(db)], input=sql,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cli_json(db, env, *args):
    proc = run_cli(db, env, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["data"]


def search_ids(db, env, query, k=3, *extra):
    return [h["memory"]["id"] for h in cli_json(db, env, "search", query, "-k", str(k), "--mode", "vector", *extra)]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGRAY_THREADS", "1")
    return subprocess_env(tmp_path)


@pytest.fixture
def seeded(tmp_path, env):
    db = tmp_path / "memory.db"
    ids = [cli_json(db, env, "add", text, "--layer", "insights", "--tag", "family")["id"]
           for text in ("My sister Lena lives in Porto", "The user drinks green tea every morning",
                        "Deploys go out on Fridays")]
    return db, ids


def test_insert_edit_delete_and_tag_with_the_shell(seeded, env):
    db, (lena, tea, deploys) = seeded
    shell(db, f"""
        INSERT INTO memories (layer, content) VALUES ('insights', 'My bike lock code is 4512');
        INSERT INTO memory_tags (memory_id, tag) VALUES (last_insert_rowid(), 'secrets');
        UPDATE memories SET content = 'My brother Tom lives in Oslo' WHERE id = {lena};
        DELETE FROM memories WHERE id = {tea};
    """)
    bike = int(shell(db, "SELECT id FROM memories WHERE content LIKE 'My bike%'"))
    # Before any magray command: the delete cleaned up after itself without foreign keys, and
    # the vectors it could not reach (no sqlite-vec in the shell) wait in a queue.
    leftovers = shell(db, f"SELECT (SELECT count(*) FROM memory_tags WHERE memory_id = {tea}), "
                          f"(SELECT count(*) FROM chunks WHERE memory_id = {tea}), "
                          "(SELECT count(*) FROM pending_vector_deletes)")
    assert leftovers.strip() == "0|0|1"
    status = cli_json(db, env, "status")
    assert status["pending"] == {"memories": 2, "vector_deletes": 1}
    assert "pending:" in run_cli(db, env, "status").stdout

    assert search_ids(db, env, "combination for the bicycle padlock", 1) == [bike]
    assert search_ids(db, env, "where does Tom live?", 1) == [lena]
    assert tea not in search_ids(db, env, "what does the user drink in the morning?", 3)
    assert cli_json(db, env, "status")["pending"] == {"memories": 0, "vector_deletes": 0}

    got = cli_json(db, env, "get", str(bike))
    assert got["content_hash"] == hashlib.sha256(b"My bike lock code is 4512").hexdigest()
    assert got["tags"] == ["secrets"] and got["layer"] == "insights"
    assert got["expires_at"] is not None  # the layer's default lifetime, as `magray add` gives
    edited = cli_json(db, env, "get", str(lena))
    assert edited["content_hash"] == hashlib.sha256(b"My brother Tom lives in Oslo").hexdigest()
    assert edited["tags"] == ["family"]
    assert run_cli(db, env, "get", str(tea)).returncode != 0

    problems, counts = consistency(db)
    assert not problems, problems
    assert counts["memories"] == 3 and counts["vectors"] == counts["chunks"] == 3
    assert run_cli(db, env, "doctor").returncode == 0


def test_soft_delete_move_and_undelete_with_the_shell(seeded, env):
    db, (lena, tea, deploys) = seeded
    shell(db, f"UPDATE memories SET deleted_at = 1 WHERE id = {tea};"
              f"UPDATE memories SET layer = 'assets', project = 'ops' WHERE id = {deploys};")
    assert tea not in search_ids(db, env, "what does the user drink in the morning?", 3)
    assert search_ids(db, env, "when are releases shipped?", 1, "--layer", "assets", "--project", "ops") == [deploys]
    problems, _ = consistency(db)
    assert not problems, problems
    shell(db, f"UPDATE memories SET deleted_at = NULL WHERE id = {tea}")
    assert search_ids(db, env, "what does the user drink in the morning?", 1) == [tea]
    problems, _ = consistency(db)
    assert not problems, problems
    assert run_cli(db, env, "doctor").returncode == 0


def test_exact_duplicates_written_with_the_shell_are_folded(seeded, env):
    db, (lena, tea, deploys) = seeded
    shell(db, f"""
        INSERT INTO memories (layer, content) VALUES ('insights', 'Deploys go out on Fridays');
        INSERT INTO memory_tags (memory_id, tag) VALUES (last_insert_rowid(), 'ops');
        INSERT INTO memories (layer, content, project) VALUES ('insights', 'Deploys go out on Fridays', 'other');
        UPDATE memories SET content = 'My sister Lena lives in Porto' WHERE id = {tea};
    """)
    rows = cli_json(db, env, "list", "--limit", "10")
    contents = sorted((m["content"], m["project"]) for m in rows)
    assert contents == [("Deploys go out on Fridays", ""), ("Deploys go out on Fridays", "other"),
                        ("My sister Lena lives in Porto", "")]
    kept = {m["id"]: m for m in rows}
    assert kept[deploys]["tags"] == ["family", "ops"] and lena in kept and tea not in kept
    events = shell(db, "SELECT kind, memory_id FROM events_view WHERE kind = 'duplicate' ORDER BY memory_id")
    assert events.split() == [f"duplicate|{lena}", f"duplicate|{deploys}"]
    problems, _ = consistency(db)
    assert not problems, problems


def test_times_as_iso_text_and_tags_written_as_tags_text(seeded, env):
    db, _ = seeded
    shell(db, "INSERT INTO memories (layer, content, created_at, expires_at, tags_text) VALUES "
              "('assets', 'The office moved to Lisbon', '2025-01-31', '2030-01-01T08:00:00Z', 'work office,moves')")
    office = next(m for m in cli_json(db, env, "list") if m["content"] == "The office moved to Lisbon")
    assert office["created_at"] == "2025-01-31T00:00:00Z" and office["expires_at"] == "2030-01-01T08:00:00Z"
    assert office["tags"] == ["moves", "office", "work"]
    before = shell(db, "SELECT count(*), max(updated_at) FROM memories")
    for bad in ("INSERT INTO memories (content, created_at) VALUES ('when?', 'yesterday')",
                f"UPDATE memories SET expires_at = 'soon' WHERE id = {office['id']}"):
        proc = subprocess.run([SQLITE3, str(db), bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "times are unix seconds or ISO 8601 text" in proc.stderr
    assert shell(db, "SELECT count(*), max(updated_at) FROM memories") == before
    problems, _ = consistency(db)
    assert not problems, problems


def test_views_read_well_in_the_shell(seeded, env):
    db, (lena, tea, deploys) = seeded
    cli_json(db, env, "get", str(lena))  # one use
    out = shell(db, ".mode box\nSELECT id, layer, content, tags, state, created, uses FROM memories_view ORDER BY id")
    assert "│ family │ live  │" in out and "My sister Lena lives in Porto" in out
    assert shell(db, f"SELECT uses, created LIKE '____-__-__T__:__:__Z' FROM memories_view WHERE id = {lena}").strip() == "1|1"
    assert shell(db, "SELECT total FROM counters_view WHERE name = 'adds'").strip() == "3"
    assert shell(db, "SELECT live FROM layers_view WHERE layer = 'insights'").strip() == "3"


def test_ids_are_never_reused(seeded, env):
    db, (lena, tea, deploys) = seeded
    assert run_cli(db, env, "rm", str(deploys), "--hard").returncode == 0
    again = cli_json(db, env, "add", "A memory added after the newest was purged")["id"]
    assert again > deploys
    shell(db, f"DELETE FROM memories WHERE id = {again}")
    shell(db, "INSERT INTO memories (content) VALUES ('written with plain SQL after a delete')")
    assert int(shell(db, "SELECT max(id) FROM memories")) > again


def test_doctor_notices_a_content_whose_hash_does_not_match(seeded, env):
    db, (lena, tea, deploys) = seeded
    # Content and hash both written by hand (the triggers take that as magray's own write).
    shell(db, f"UPDATE memories SET content = 'The cat is called Miso', content_hash = 'made up' WHERE id = {tea}")
    proc = run_cli(db, env, "--json", "doctor")
    assert proc.returncode == 8, proc.stderr
    found = {f["problem"]: f for f in json.loads(proc.stdout)["data"]["findings"]}
    assert found["hash_mismatch"]["sample"] == [tea]
    assert run_cli(db, env, "doctor", "--repair").returncode == 0
    assert search_ids(db, env, "what is the name of the pet?", 1) == [tea]
    assert cli_json(db, env, "get", str(tea))["content_hash"] == hashlib.sha256(b"The cat is called Miso").hexdigest()
    problems, _ = consistency(db)
    assert not problems, problems


def test_a_long_running_server_sees_shell_writes(seeded, model_path, tmp_path):
    from test_mcp import call, serve

    db, (lena, tea, deploys) = seeded

    async def scenario():
        async with serve(db, model_path, tmp_path / "serve.log") as s:
            before = await call(s, "recall", query="combination for the bicycle padlock", k=1, mode="vector")
            shell(db, "INSERT INTO memories (layer, content) VALUES ('insights', 'My bike lock code is 4512');"
                      f"UPDATE memories SET content = 'My brother Tom lives in Oslo' WHERE id = {lena};"
                      f"DELETE FROM memories WHERE id = {deploys};")
            bike = await call(s, "recall", query="combination for the bicycle padlock", k=1, mode="vector")
            tom = await call(s, "recall", query="where does Tom live?", k=1, mode="vector")
            release = await call(s, "recall", query="when are releases shipped?", k=3, mode="vector")
            return before, bike, tom, release

    before, bike, tom, release = anyio.run(scenario)
    assert "My bike lock code is 4512" not in [r["content"] for r in before["results"]]
    assert bike["results"][0]["content"] == "My bike lock code is 4512"
    assert tom["results"][0]["id"] == lena and tom["results"][0]["content"] == "My brother Tom lives in Oslo"
    assert deploys not in [r["id"] for r in release["results"]]
    problems, _ = consistency(db)
    assert not problems, problems


def test_a_bulk_insert_is_synced_in_batches(tmp_path, env):
    db = tmp_path / "memory.db"
    cli_json(db, env, "add", "seed memory so that the file is bound to the model", "--layer", "assets")
    values = ",".join(f"('assets', 'bulk note number {i} about topic {i % 7}')" for i in range(150))
    shell(db, f"INSERT INTO memories (layer, content) VALUES {values}")
    assert cli_json(db, env, "status")["pending"]["memories"] == 150
    from magray import Memory

    with Memory.open(db) as mem:
        commits = []
        mem.connection.setcommithook(lambda: commits.append(1) or False)
        assert len(mem.list(limit=200)) == 151
        # 150 rows at 64 a batch: three write transactions, none holding all of them.
        assert len(commits) == 3
    problems, counts = consistency(db)
    assert not problems, problems
    assert counts["memories"] == 151


def test_shell_writes_racing_with_magray_writers_lose_nothing(tmp_path, env):
    db = tmp_path / "memory.db"
    cli_json(db, env, "add", "seed memory so that the file is bound to the model")
    writers = [start_worker("writer", db, env, "--tag", f"w{i}", "--count", "25", stdin=subprocess.PIPE)
               for i in range(2)]
    for proc in writers:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    script = []
    for i in range(60):
        script.append(f"INSERT INTO memories (layer, content, project) VALUES ('interact', 'shell note {i}', 'shared');")
        if i % 3 == 2:  # edit an earlier shell note, and tag it
            script.append(f"UPDATE memories SET content = 'shell note {i - 2} edited' WHERE content = 'shell note {i - 2}';")
            script.append(f"INSERT INTO memory_tags (memory_id, tag) SELECT id, 'edited' FROM memories "
                          f"WHERE content = 'shell note {i - 2} edited';")
    sqlite = subprocess.Popen([SQLITE3, "-bail", "-cmd", ".timeout 60000", str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc in writers:
        proc.stdin.write("go\n")
        proc.stdin.close()
    # The shell's statements are fed in step with the first writer's acknowledged adds, so that
    # the two really interleave (each statement is its own transaction, as typed in the shell).
    outputs = [[] for _ in writers]
    for line in writers[0].stdout:
        outputs[0].append(line)
        if line.startswith("add ") and script:
            sqlite.stdin.write("\n".join(script[:3]) + "\n")
            sqlite.stdin.flush()
            del script[:3]
    _, err = sqlite.communicate("\n".join(script), timeout=300)
    assert sqlite.returncode == 0, err
    added = []
    for proc, lines in zip(writers, outputs):
        stdout, stderr = "".join(lines) + proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=300) == 0, stderr[-3000:]
        added += [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("add ")]

    from magray import Memory

    with Memory.open(db) as mem:
        live = {m.id: m for m in mem.list(limit=1000)}
    expected_shell = {f"shell note {i} edited" if i % 3 == 0 and i < 58 else f"shell note {i}" for i in range(60)}
    shell_rows = {m.content: m for m in live.values() if m.content.startswith("shell note")}
    assert set(shell_rows) == expected_shell
    assert all(m.tags == ["edited"] for c, m in shell_rows.items() if c.endswith("edited"))
    assert set(added) <= set(live) and len(added) == 50
    for m in live.values():
        assert m.content_hash == hashlib.sha256(m.content.encode()).hexdigest(), m.id
    problems, counts = consistency(db)
    assert not problems, problems
    assert counts["memories"] == 1 + 50 + 60


def test_datasette_lists_the_views_and_queries_them(seeded, env):
    """`datasette memory.db` with the datasette-sqlite-vec plugin, through Datasette's own test
    client: the views are listed, a query on them runs, and the vector tables open too."""
    datasette_app = pytest.importorskip("datasette.app")
    db, (lena, tea, deploys) = seeded
    generation = int(shell(db, "SELECT generation FROM model_binding"))

    async def browse():
        ds = datasette_app.Datasette([str(db)])
        await ds.invoke_startup()
        plugins = (await ds.client.get("/-/plugins.json")).json()
        database = (await ds.client.get("/memory.json")).json()
        rows = (await ds.client.get("/memory.json", params={
            "sql": "select id, tags, state, created from memories_view where layer = :layer order by id",
            "layer": "insights", "_shape": "array"})).json()
        counters = (await ds.client.get("/memory/counters_view.json", params={"_shape": "array"})).json()
        vectors = (await ds.client.get("/memory.json", params={
            "sql": f"select count(*) as n, vec_length(embedding_bits) as dim from vec_chunks_{generation}",
            "_shape": "array"})).json()
        return plugins, database, rows, counters, vectors

    plugins, database, rows, counters, vectors = anyio.run(browse)
    assert "datasette-sqlite-vec" in {p["name"] for p in plugins}
    assert {"memories_view", "counters_view", "events_view", "layers_view"} <= {v["name"] for v in database["views"]}
    assert [(r["id"], r["tags"], r["state"]) for r in rows] == [(i, "family", "live") for i in (lena, tea, deploys)]
    assert all(r["created"].endswith("Z") for r in rows)
    assert next(c["total"] for c in counters if c["name"] == "adds") == 3
    assert vectors == [{"n": 3, "dim": 384}]


def test_nothing_queued_costs_one_lookup(mem):
    mem.add("The user prefers dark mode", layer="assets")
    statements = []
    mem.connection.exec_trace = lambda cursor, sql, bindings: statements.append(sql) or True
    mem.list()
    mem.get(1, touch=True)
    queue_reads = [s for s in statements if "pending_" in s]
    # list: one check; get: one before its read and one before its write (counting the use).
    assert len(queue_reads) == 3 and len(set(queue_reads)) == 1, queue_reads


# -- property: whatever mix of magray and plain-SQL writes, ids only grow and the file stays whole --

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SHELL_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=60).filter(str.strip)
STEPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["add", "shell_insert", "shell_edit"]), SHELL_TEXT),
    st.tuples(st.sampled_from(["purge_newest", "shell_delete_newest", "shell_soft_delete_newest"]), st.none()),
), min_size=1, max_size=6)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    from helpers.reliability import model_path

    from magray import Memory

    with Memory.open(tmp_path_factory.mktemp("plain") / "plain.db", model=str(model_path())) as mem:
        mem.add("a first memory, so that the file is bound to the model")
        yield mem, {"highest": 1}


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_any_mix_of_magray_and_shell_writes(shared_store, steps):
    mem, seen = shared_store
    db = mem.path
    for op, text in steps:
        newest = int(shell(db, "SELECT coalesce(max(id), 0) FROM memories WHERE deleted_at IS NULL"))
        new_id = None
        if op == "add":
            result = mem.add(text)
            new_id = result.id if result.created else None
        elif op == "shell_insert":
            new_id = int(shell(db, f"INSERT INTO memories (content) VALUES ({_quoted(text)}); SELECT last_insert_rowid();"))
        elif newest and op == "shell_edit":
            shell(db, f"UPDATE memories SET content = {_quoted(text)} WHERE id = {newest}")
        elif newest and op == "purge_newest":
            mem.delete(newest, hard=True)
        elif newest and op == "shell_delete_newest":
            shell(db, f"DELETE FROM memories WHERE id = {newest}")
        elif newest and op == "shell_soft_delete_newest":
            shell(db, f"UPDATE memories SET deleted_at = 1 WHERE id = {newest}")
        if new_id is not None:
            assert new_id > seen["highest"], (op, new_id, seen)
            seen["highest"] = new_id
    mem.list()  # the next read: everything written with plain SQL is finished first
    assert mem.status().pending == {"memories": 0, "vector_deletes": 0}
    for memory_id, content, chash in mem.connection.execute("SELECT id, content, content_hash FROM memories"):
        assert chash == hashlib.sha256(content.encode()).hexdigest(), memory_id
    problems, _ = consistency(db)
    assert not problems, problems


def test_triggers_and_views_need_nothing_a_stock_shell_lacks(tmp_path):
    from magray.schema import query

    db = tmp_path / "stock.db"
    shell(db, query("schema"))  # the whole schema, created by the stock shell (no sqlite-vec)
    bodies = shell(db, "SELECT name || ': ' || sql FROM sqlite_schema WHERE type IN ('trigger', 'view')")
    assert "vec_" not in bodies and "memories_view" in bodies
    shell(db, "INSERT INTO memories (content) VALUES ('x'); UPDATE memories SET content = 'y';"
              "SELECT count(*) FROM memories_view; DELETE FROM memories;")


def test_without_the_model_shell_rows_wait_and_reads_still_work(tmp_path, model_path):
    """A machine where the file's model is missing: reads still answer, the rows get their hash
    and stay queued (status says so) until a process with the model embeds them."""
    copy = tmp_path / "model-copy.gguf"
    shutil.copyfile(model_path, copy)
    env = subprocess_env(tmp_path, MAGRAY_THREADS="1")
    db = tmp_path / "memory.db"
    env["MAGRAY_MODEL"] = str(copy)
    cli_json(db, env, "add", "Deploys go out on Fridays", "--layer", "assets")
    copy.unlink()
    del env["MAGRAY_MODEL"]
    shell(db, "INSERT INTO memories (layer, content) VALUES ('assets', 'My bike lock code is 4512')")
    listed = run_cli(db, env, "--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert "wait for an embedding model" in listed.stderr
    assert len(json.loads(listed.stdout)["data"]) == 2
    assert cli_json(db, env, "status")["pending"]["memories"] == 1
    assert shell(db, "SELECT content_hash FROM memories WHERE content LIKE 'My bike%'").strip() == \
        hashlib.sha256(b"My bike lock code is 4512").hexdigest()

    env["MAGRAY_MODEL"] = str(model_path)  # the same model, found again
    assert search_ids(db, env, "combination for the bicycle padlock", 1) == [2]
    assert cli_json(db, env, "status")["pending"]["memories"] == 0
    problems, _ = consistency(db)
    assert not problems, problems
