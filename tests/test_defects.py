"""Defects found by trying to break magray as a hostile user and a busy household of agents would,
each pinned by a test on real files, the real model and the real `magray` command."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading

import pytest

from helpers.reliability import open_raw, run_cli, subprocess_env

from magray import InvalidInput, Memory
from magray import transfer
from magray.cli.main import EXIT_OK, EXIT_STORE, EXIT_USAGE
from magray.config import DAY, HOUR
from magray.memory import MAX_CONTENT_CHARS


def _one_line_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("magray: error: "), proc.stderr
    return proc.stderr


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "-"


# -- files a command writes never replace the memory file (issue 18, item 3) -------------------

def test_export_and_backup_never_overwrite_the_memory_file(db_path, model_path, tmp_path):
    env = subprocess_env(tmp_path)
    with Memory.open(db_path, model=str(model_path)) as mem:
        mem.add("a memory worth keeping", layer="assets")
    before = _sha(db_path)
    for target in (db_path, f"{db_path}-wal", f"{db_path}-shm"):
        for args in (["export", "-o", str(target)], ["export", "--force", "-o", str(target)],
                     ["backup", str(target)], ["backup", "--force", str(target)]):
            proc = run_cli(db_path, env, *args)
            assert "memory file" in _one_line_error(proc, EXIT_USAGE), args
    assert _sha(db_path) == before
    with Memory.open(db_path) as mem:
        assert [m.content for m in mem.list()] == ["a memory worth keeping"]


def test_export_replaces_an_existing_file_only_with_force(db_path, model_path, tmp_path):
    env = subprocess_env(tmp_path)
    with Memory.open(db_path, model=str(model_path)) as mem:
        mem.add("exported memory")
    existing = tmp_path / "notes.jsonl"
    existing.write_text("someone's notes\n", encoding="utf-8")
    assert "already exists" in _one_line_error(run_cli(db_path, env, "export", "-o", str(existing)), EXIT_USAGE)
    assert existing.read_text(encoding="utf-8") == "someone's notes\n"
    assert run_cli(db_path, env, "export", "--force", "-o", str(existing)).returncode == EXIT_OK
    assert "exported memory" in existing.read_text(encoding="utf-8")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


# -- a merged alias lives as long as its survivor (item 6) --------------------------------------

def test_a_merged_alias_lives_as_long_as_the_memory_it_was_merged_into(db_path, model_path):
    clock = [1_800_000_000.0]
    with Memory.open(db_path, model=str(model_path), clock=lambda: clock[0]) as m:
        first = m.add("The user prefers dark mode in the editor", layer="insights")
        alias = m.add("The user prefers dark mode in the editor.", layer="insights")
        assert alias.merged_into == first.id
        for _ in range(4):  # used every 100 days: the survivor is renewed each time
            clock[0] += 100 * DAY
            m.get(first.id)
            m.clean()
        assert clock[0] - 1_800_000_000.0 > 180 * DAY  # past the alias's own expiry
        assert m.get(alias.id, touch=False, include_expired=True).content.endswith("editor.")
        m.unmerge(alias.id)  # on its own again, it lives on
        assert alias.id in {r.id for r in m.list()}
        clock[0] += 181 * DAY  # nobody used either: both expire like any insight
        m.clean()
        assert m.list() == []


# -- import is all or nothing (item 7) ---------------------------------------------------------

def _export_lines(n: int, tmp_path, model_path) -> list[str]:
    with Memory.open(tmp_path / "source.db", model=str(model_path)) as src:
        src.add_many([{"content": f"exported memory number {i}"} for i in range(n)])
        out = io.StringIO()
        transfer.export_jsonl(src, out)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("change", [
    {"uses": [{"session": "s1", "uses": 1, "last_at": 1.0}, {"session": "s1", "uses": 2, "last_at": 2.0}]},
    {"access_count": 2**64},
    {"access_count": 2**63},
    {"uses": [{"session": "s1", "uses": 2**70, "last_at": 1.0}]},
    {"id": 2**64},
])
def test_import_is_all_or_nothing(db_path, model_path, tmp_path, change):
    lines = _export_lines(100, tmp_path, model_path)
    bad = json.loads(lines[-1]) | change
    source = tmp_path / "export.jsonl"
    source.write_text("\n".join(lines + [json.dumps(bad)]) + "\n", encoding="utf-8")
    env = subprocess_env(tmp_path)
    message = _one_line_error(run_cli(db_path, env, "import", str(source)), EXIT_USAGE)
    assert "nothing was imported" in message and "memory 101" in message
    conn = open_raw(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
    finally:
        conn.close()


# -- invalid UTF-8 in a file is one line (item 8) -----------------------------------------------

@pytest.mark.parametrize("command", [["add", "--jsonl"], ["import"]])
def test_invalid_utf8_file_is_one_line_error(db_path, model_path, tmp_path, command):
    with Memory.open(db_path, model=str(model_path)):
        pass
    source = tmp_path / "bad.jsonl"
    header = b'{"format": "magray-export", "version": 1}\n' if command == ["import"] else b""
    source.write_bytes(header + b'{"content": "fine"}\n{"content": "caf\xe9 \xff\xfe"}\n')
    message = _one_line_error(run_cli(db_path, subprocess_env(tmp_path), *command, str(source)), EXIT_USAGE)
    assert "UTF-8" in message and "line" in message


# -- nesting and size of metadata are bounded on every way in (item 9) ---------------------------

def test_deep_metadata_is_refused_everywhere_and_the_file_stays_exportable(db_path, model_path, tmp_path):
    env = subprocess_env(tmp_path)
    deep = json.dumps({"k": json.loads("[" * 600 + "]" * 600)})
    with Memory.open(db_path, model=str(model_path)) as mem:
        mem.add("a memory with plain metadata", metadata={"ok": [1, {"two": 2}]})
        with pytest.raises(InvalidInput, match="nested"):
            mem.add("deep", metadata=json.loads(deep))
        with pytest.raises(InvalidInput, match="characters"):
            mem.add("big", metadata={"k": "x" * 200_000})
    source = tmp_path / "deep.jsonl"
    source.write_text(json.dumps({"content": "deep one", "metadata": json.loads(deep)}) + "\n", encoding="utf-8")
    assert "nested" in _one_line_error(run_cli(db_path, env, "add", "--jsonl", str(source)), EXIT_USAGE)
    source.write_text('{"content": "deeper", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}\n", encoding="utf-8")
    assert "nested" in _one_line_error(run_cli(db_path, env, "add", "--jsonl", str(source)), EXIT_USAGE)
    proc = run_cli(db_path, env, "add", "--meta", "k=" + "[" * 600 + "]" * 600, "--", "deep from the command line")
    assert "nested" in _one_line_error(proc, EXIT_USAGE)
    for args in (["export"], ["--json", "list"], ["--json", "search", "--mode", "text", "memory"]):
        proc = run_cli(db_path, env, *args)
        assert proc.returncode == EXIT_OK, (args, proc.stderr)


# -- YAML front matter and other tools' metadata (item 10) --------------------------------------

def test_yaml_aliases_and_odd_metadata_from_other_tools(db_path, model_path, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "bomb.md").write_text("---\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a]\n"
                                   "c: [*b, *b, *b, *b, *b, *b, *b]\n---\nbody of the bomb\n", encoding="utf-8")
    (notes / "loop.md").write_text("---\nx: &a [*a]\n---\nbody of the loop\n", encoding="utf-8")
    (notes / "deep.md").write_text("---\nx: " + "[" * 3000 + "]" * 3000 + "\n---\nbody of the deep one\n",
                                   encoding="utf-8")
    (notes / "fine.md").write_text("---\ntitle: Fine\ntags: [a, b]\nrating: 3\n---\nA fine note.\n", encoding="utf-8")
    mem0 = tmp_path / "mem0.json"
    mem0.write_text(json.dumps([{"memory": "likes tea", "metadata": [1]},
                                {"memory": "likes coffee", "metadata": "text", "categories": 5},
                                {"memory": "a date", "created_at": 10**400, "user_id": 7}]), encoding="utf-8")
    env = subprocess_env(tmp_path)
    proc = run_cli(db_path, env, "--json", "import", "--from", "markdown", str(notes))
    assert proc.returncode == EXIT_OK, proc.stderr
    report = json.loads(proc.stdout)["data"]
    assert report["added"] == 1 and len(report["skipped"]) == 3
    assert all("alias" in s or "anchor" in s or "nested" in s for s in report["skipped"]), report["skipped"]
    proc = run_cli(db_path, env, "--json", "import", "--from", "mem0", str(mem0))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["data"]["added"] == 3
    with Memory.open(db_path) as mem:
        found = {m.content: m for m in mem.list(limit=10)}
    assert found["likes tea"].metadata["value"] == [1]
    assert found["A fine note."].metadata == {"rating": 3}


# -- update obeys the content limit (item 11) --------------------------------------------------

def test_update_obeys_the_content_limit(mem, tmp_path):
    memory_id = mem.add("short").id
    with pytest.raises(InvalidInput, match=f"{MAX_CONTENT_CHARS:,}"):
        mem.update(memory_id, content="y" * (MAX_CONTENT_CHARS + 1))
    assert mem.get(memory_id, touch=False).content == "short"


# -- reindex beside a process rewriting content (item 5) ----------------------------------------

REWRITER = r"""
import sys
from pathlib import Path
from magray import Memory, ModelMismatch

with Memory.open(Path(sys.argv[1])) as mem:
    mem.load_model()
    print("ready", flush=True)
    round = 0
    while True:
        round += 1
        for memory_id in range(1, int(sys.argv[2]) + 1):
            try:
                mem.update(memory_id, content=f"rewritten in round {round}: note {memory_id} on bridges")
            except ModelMismatch:  # the reindex switched models: this process is done
                print("switched", flush=True)
                sys.exit(0)
"""


def _stale_single_chunk(db) -> list[int]:
    """Live memories embedded as one chunk whose text is not their content (checked here with
    plain SQL, independently of the doctor)."""
    conn = open_raw(db)
    try:
        generation = conn.execute("SELECT generation FROM model_binding").fetchone()[0]
        return [r[0] for r in conn.execute(
            "SELECT m.id FROM memories AS m JOIN chunks AS c ON c.memory_id = m.id AND c.generation = ? "
            "WHERE m.deleted_at IS NULL GROUP BY m.id HAVING count(*) = 1 AND max(c.text_hash) != m.content_hash",
            (generation,))]
    finally:
        conn.close()


def test_reindex_beside_a_process_rewriting_content_leaves_no_stale_vectors(db_path, model_path, tmp_path):
    other = model_path.with_name("all-MiniLM-L6-v2-f16.gguf")
    count = 300
    with Memory.open(db_path, model=str(model_path)) as mem:
        mem.add_many([{"content": f"note {i} about rivers", "layer": "assets"} for i in range(1, count + 1)])
    env = subprocess_env(tmp_path)
    rewriter = subprocess.Popen([sys.executable, "-c", REWRITER, str(db_path), str(count)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rewriter.stdout.readline().strip() == "ready", rewriter.stderr.read()
        proc = run_cli(db_path, env, "reindex", "--model", str(other), timeout=600)
    finally:
        rewriter.kill()
        _, err = rewriter.communicate()
    if proc.returncode != EXIT_OK:  # rewritten after the last batch: finish it, as the message says
        assert "run it again" in proc.stderr, proc.stderr
        assert run_cli(db_path, env, "reindex", "--model", str(other), timeout=600).returncode == EXIT_OK
    assert "Traceback" not in err, err
    assert _stale_single_chunk(db_path) == []
    doctor = run_cli(db_path, env, "--json", "doctor")
    assert doctor.returncode == EXIT_OK, doctor.stdout


def test_doctor_finds_and_reembeds_vectors_of_another_text(db_path, model_path, tmp_path):
    long_text = " ".join(f"paragraph {i} on the migration of cranes across the northern wetlands"
                         for i in range(60))
    with Memory.open(db_path, model=str(model_path)) as mem:
        short = mem.add("the kettle is on the left shelf", layer="assets").id
        long = mem.add(long_text, layer="assets").id
        mem.add("an untouched memory", layer="assets")
    from magray.records import content_hash

    conn = open_raw(db_path)  # content changed behind magray's back: its vectors are now stale
    for memory_id, text in ((short, "the kettle moved to the right shelf"),
                            (long, long_text.replace("cranes", "geese"))):
        conn.execute("UPDATE memories SET content = ?, content_hash = ? WHERE id = ?",
                     (text, content_hash(text), memory_id))
    conn.close()
    env = subprocess_env(tmp_path)
    proc = run_cli(db_path, env, "--json", "doctor")
    data = json.loads(proc.stdout)["data"]
    stale = {f["problem"]: f for f in data["findings"]}["stale_vectors"]
    assert proc.returncode == 8 and stale["count"] == 2 and set(stale["sample"]) == {short, long}
    proc = run_cli(db_path, env, "--json", "doctor", "--repair")
    assert proc.returncode == EXIT_OK, proc.stdout
    assert _stale_single_chunk(db_path) == []
    with Memory.open(db_path, model=str(model_path)) as mem:
        assert mem.search("geese migration wetlands", mode="vector", k=1, touch=False)[0].memory.id == long
        assert mem.doctor().healthy


# -- config values are checked; config and log files are private (items 12, 16) ------------------

@pytest.mark.parametrize("key, value", [
    ("dedup.min_similarity", "nan"), ("dedup.min_similarity", "inf"), ("dedup.min_similarity", "2"),
    ("dedup.min_similarity", "-0.1"), ("dedup.min_similarity", "high"), ("cache.max_entries", "-5"),
    ("cache.max_entries", "1.5"), ("cache.max_entries", "1e999"), ("promotion.interact_min_uses", "0"),
    ("dedup.layers", "interact,nonsense"), ("maintenance.expire_per_write", "99999999999999999999"),
])
def test_config_set_refuses_bad_values_and_keeps_the_file_usable(db_path, tmp_path, key, value):
    env = subprocess_env(tmp_path)
    assert run_cli(db_path, env, "config", "set", "dedup.min_similarity", "0.9").returncode == EXIT_OK
    config = tmp_path / "xdg-config" / "magray" / "config.toml"
    before = config.read_text(encoding="utf-8")
    _one_line_error(run_cli(db_path, env, "config", "set", key, value), EXIT_USAGE)
    assert config.read_text(encoding="utf-8") == before
    proc = run_cli(db_path, env, "--json", "config", "show")
    assert proc.returncode == EXIT_OK and json.loads(proc.stdout)["data"]["rules"]["dedup"]["min_similarity"] == 0.9


def test_a_hand_edited_config_is_a_one_line_error(db_path, tmp_path):
    env = subprocess_env(tmp_path)
    config = tmp_path / "xdg-config" / "magray" / "config.toml"
    config.parent.mkdir(parents=True)
    for text in ("[dedup]\nmin_similarity = nan\n", "[cache]\nmax_entries = \"many\"\n",
                 "[dedup]\nlayers = 3\n", "[promotion]\ninteract_min_uses = -1\n"):
        config.write_text(text, encoding="utf-8")
        assert "config.toml" in _one_line_error(run_cli(db_path, env, "--json", "config", "show"), EXIT_USAGE)


def test_config_and_log_files_are_private_under_umask_000(db_path, tmp_path):
    env = subprocess_env(tmp_path)
    log = tmp_path / "magray.log"
    proc = run_cli(db_path, env, "--log-file", str(log), "-v", "config", "set", "cache.max_entries", "100",
                   preexec_fn=lambda: os.umask(0))
    assert proc.returncode == EXIT_OK, proc.stderr
    config = tmp_path / "xdg-config" / "magray" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert [p.name for p in config.parent.iterdir()] == ["config.toml"]
    proc = run_cli(db_path, env, "--log-file", str(db_path), "status")
    assert "memory file" in _one_line_error(proc, EXIT_USAGE)


# -- text output neutralises control characters (item 17) ---------------------------------------

def test_text_output_shows_control_characters_as_escapes(db_path, model_path, tmp_path):
    hostile = "tea \x1b]0;pwned\x07 \x1b[2J\x1b[31mred\x9b1m \u202eevil\r done"
    with Memory.open(db_path, model=str(model_path)) as mem:
        memory_id = mem.add(hostile, title="\x1b[5mtitle", tags=["ok"]).id
    env = subprocess_env(tmp_path)
    for args in (["list"], ["get", str(memory_id)], ["search", "--mode", "text", "tea"]):
        proc = run_cli(db_path, env, *args)
        assert proc.returncode == EXIT_OK, proc.stderr
        assert not any(c in proc.stdout for c in "\x1b\x07\x9b\u202e\r"), (args, proc.stdout)
        assert "\\x1b" in proc.stdout
    data = json.loads(run_cli(db_path, env, "--json", "get", str(memory_id)).stdout)["data"]
    assert data["content"] == hostile and data["title"] == "\x1b[5mtitle"  # JSON stays exact
    proc = run_cli(db_path, env, "add", "--layer", "x\x1b[31m", "--", "text")
    assert "\x1b" not in proc.stderr


# -- a FIFO or a device as the memory file (item 18) ---------------------------------------------

def test_a_fifo_or_device_as_the_memory_file_says_what_it_is(tmp_path):
    env = subprocess_env(tmp_path)
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    for path, words in ((fifo, "named pipe"), ("/dev/null", "character device")):
        for args in (["status"], ["add", "note"], ["list"]):
            message = _one_line_error(run_cli(path, env, *args), EXIT_STORE)
            assert words in message and "disk" not in message, message
