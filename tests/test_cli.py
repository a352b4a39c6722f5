"""The real `magray` command in subprocesses: every command with --json, text output, bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest


def test_every_command_with_json(cli, tmp_path):
    init = cli.json("init")
    assert init["ok"] and init["command"] == "init" and init["data"]["model"]["dim"] == 384

    added = cli.json("add", "Deploys go out on Fridays", "--layer", "insights", "--tag", "ops",
                     "--project", "infra", "--session", "s1", "--meta", "owner=ana", "--meta", "n=3",
                     "--title", "deploy day", "--ttl", "30d")
    assert added["ok"] and added["data"]["created"]
    mid = added["data"]["id"]
    piped = cli.json("add", "--layer", "assets", input="a note from a pipe\n")
    assert piped["data"]["created"]

    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text("\n".join(json.dumps({"content": f"batch memory {i}", "tags": ["batch"]}) for i in range(5)))
    batch = cli.json("add", "--jsonl", str(jsonl))
    assert batch["data"]["added"] == 5
    assert cli.json("add", "--jsonl", str(jsonl))["data"] == dict(batch["data"], added=0, existing=5)

    got = cli.json("get", str(mid))["data"]
    assert got["content"] == "Deploys go out on Fridays" and got["metadata"] == {"owner": "ana", "n": 3}
    assert got["tags"] == ["ops"] and got["project"] == "infra" and got["title"] == "deploy day"

    listed = cli.json("list", "--project", "infra")["data"]
    assert [m["id"] for m in listed] == [mid]
    assert len(cli.json("list", "--tag", "batch", "--limit", "3")["data"]) == 3

    hits = cli.json("search", "which day do we ship releases?", "--explain")["data"]
    assert hits[0]["memory"]["id"] == mid and "vector_rank" in hits[0]["parts"]
    assert cli.json("search", "Fridays", "--mode", "text", "--layer", "interact")["data"] == []

    updated = cli.json("update", str(mid), "Deploys go out on Thursdays", "--meta", "n=4")["data"]
    assert updated["content"].endswith("Thursdays") and updated["metadata"] == {"owner": "ana", "n": 4}
    assert cli.json("tag", str(mid), "+urgent", "-ops")["data"]["tags"] == ["urgent"]
    assert cli.json("promote", str(mid), "--to", "assets")["data"]["layer"] == "assets"

    status = cli.json("status")["data"]
    assert status["counts"] == {"interact": 5, "insights": 0, "assets": 2}
    assert status["schema_version"] >= 1 and status["sqlite_vec_version"].startswith("v")

    assert cli.json("rm", str(mid))["data"] == {"id": mid, "deleted": "soft"}
    assert cli.json("model", "list")["data"][0]["bound"] is True

    # The file is a plain SQLite file: the sqlite3 shell (here its Python binding) can read it.
    rows = dict(sqlite3.connect(cli.db).execute(
        "SELECT layer, count(*) FROM memories WHERE deleted_at IS NULL GROUP BY layer").fetchall())
    assert rows == {"interact": 5, "assets": 1}


def test_text_output_for_people(cli):
    assert cli("add", "The user prefers dark mode").stdout.strip() == "added 1"
    assert cli("add", "The user prefers dark mode").stdout.strip() == "exists 1"
    out = cli("search", "dark theme", "--explain").stdout
    assert "The user prefers dark mode" in out and "cosine" in out
    assert "memories:" in cli("status").stdout


def test_options_before_or_after_the_command(cli):
    cli("add", "hello there")
    before = subprocess.run([*cli_cmd(), "--db", str(cli.db), "--json", "list"], capture_output=True, text=True,
                            env=cli.env)
    assert json.loads(before.stdout)["data"][0]["content"] == "hello there"


def cli_cmd():
    import sys
    return [sys.executable, "-m", "magray"]


@pytest.mark.parametrize("args, code, message", [
    (("add", "x", "--layer", "nope"), 2, "invalid choice"),
    (("add", ""), 2, "content is empty"),
    (("add", "x", "--meta", "novalue"), 2, "KEY=VALUE"),
    (("add", "x", "--ttl", "forever"), 2, "bad duration"),
    (("get", "424242"), 3, "no memory with id 424242"),
    (("get", "abc"), 2, "invalid int value"),
    (("list", "--since", "yesterday-ish"), 2, "bad time"),
    (("list", "--limit", "-5"), 2, "limit"),
    (("search", "x", "-k", "0"), 2, "limit"),
    (("tag", "1", "oops"), 2, "bad tag change"),
    (("promote", "1", "--to", "attic"), 2, "invalid choice"),
    (("update", "1"), 2, "nothing to update"),
])
def test_bad_input_one_line_error_and_nothing_changed(cli, args, code, message):
    cli("add", "an existing memory")
    proc = cli(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    listed = cli.json("list")["data"]
    assert [m["content"] for m in listed] == ["an existing memory"]


def test_json_error_envelope(cli):
    cli("init")
    proc = cli("get", "7", "--json")
    assert proc.returncode == 3
    envelope = json.loads(proc.stdout)
    assert envelope == {"ok": False, "command": "get",
                        "error": {"type": "NotFound", "message": "no memory with id 7", "exit_code": 3}}


def test_bad_files(cli, tmp_path):
    directory = tmp_path / "adir"
    directory.mkdir()
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("just some text, not a database\n" * 50)
    missing = tmp_path / "missing.db"
    for path, code, message in [(directory, 5, "is a directory"), (not_sqlite, 5, "not a magray memory file"),
                                (missing, 3, "no memory file")]:
        proc = cli("--db", str(path), "list")
        assert proc.returncode == code and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not missing.exists()
    assert not_sqlite.read_text() == "just some text, not a database\n" * 50


def test_newer_file_refused(cli):
    cli("init")
    conn = sqlite3.connect(cli.db)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    proc = cli("status")
    assert proc.returncode == 7 and "newer than this magray" in proc.stderr


def test_help_has_examples():
    import sys

    for args in (["--help"], ["add", "--help"], ["search", "--help"]):
        out = subprocess.run([sys.executable, "-m", "magray", *args], capture_output=True, text=True).stdout
        assert "examples:" in out
