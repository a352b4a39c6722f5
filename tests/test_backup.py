"""Backups on real files and real processes: online backup under a concurrent writer, verification,
restore (atomic for readers and across a crash), refusal of bad files, schema checks, rotation, CLI."""

from __future__ import annotations

import hashlib
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apsw
import pytest

from magray import InvalidInput, Memory, NotFound, SchemaTooNew, StoreError
from magray import backup as backup_mod, retention
from magray import records, schema

ROOT = Path(__file__).resolve().parent.parent


class Lines:
    """Lines printed by a child process, read as they come (with a generous safety timeout so a
    broken child fails the test instead of hanging it; nothing is timed)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.buffer = proc, b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ)

    def next(self, timeout: float = 120) -> str | None:
        while b"\n" not in self.buffer:
            if not self.selector.select(timeout):
                raise AssertionError(f"no line from the child process in {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def pending(self) -> list[str]:
        """The lines already printed, without waiting."""
        lines = []
        while self.selector.select(0):
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            lines.append(line.decode())
        return lines


def spawn(script: str, *args: str, stdin=None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                            stdin=stdin, env=env, bufsize=0)


def file_state(path: Path) -> tuple[str, ...]:
    """sha256 of the file and its -wal: equal before and after means untouched."""
    out = []
    for p in (path, Path(str(path) + "-wal")):
        out.append(hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-")
    return tuple(out)


def contents(mem: Memory) -> dict[int, str]:
    return dict(mem.connection.execute("SELECT id, content FROM memories WHERE deleted_at IS NULL"))


def plain_copy(src: Path, dest: Path) -> Path:
    """A backup without its manifest: only the file's own checks apply."""
    shutil.copyfile(src, dest)
    return dest


# -- making and checking backups ------------------------------------------------------------------

def test_backup_is_private_standalone_and_verified(mem, tmp_path, model_path):
    mem.add_many([{"content": f"fact number {i} about the garden"} for i in range(20)])
    report = mem.backup()
    path = Path(report.path)
    assert path.parent == tmp_path / "backups"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(backup_mod.manifest_path(path).stat().st_mode) == 0o600
    # Self-contained: rollback-journal header (no -wal needed), nothing else beside it.
    assert path.read_bytes()[18:20] == b"\x01\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".json"]
    manifest = backup_mod.read_manifest(path)
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["memories"] == 20 and manifest["schema_version"] == schema.latest_version()
    assert manifest["model"]["sha256"] == mem.load_model().sha256 and manifest["verified"]
    again = backup_mod.verify(path)
    assert again.manifest and again.memories == 20 and again.sha256 == manifest["sha256"]
    # The backup is a working memory file on its own.
    elsewhere = plain_copy(path, tmp_path / "elsewhere.db")
    with Memory.open(elsewhere, model=str(model_path), create=False) as other:
        assert other.search("garden fact", mode="vector", k=3)
        assert other.search("garden", mode="text", k=3)


def test_backup_destination_folder_or_new_file(mem, tmp_path):
    mem.add("one memory")
    folder = tmp_path / "usb"
    folder.mkdir()
    in_folder = Path(mem.backup(folder).path)
    assert in_folder.parent == folder and in_folder.name.startswith("memory-")
    named = Path(mem.backup(tmp_path / "named" / "copy.db").path)
    assert named == (tmp_path / "named" / "copy.db").resolve()
    with pytest.raises(InvalidInput, match="already exists"):
        mem.backup(named)
    # Two backups in the same second get distinct names.
    assert Path(mem.backup(folder).path) != in_folder


def test_verify_notices_a_backup_changed_after_it_was_made(mem):
    mem.add("a memory to keep")
    path = Path(mem.backup().path)
    with apsw.Connection(str(path)) as conn:
        conn.execute("UPDATE memories SET content = 'tampered'")
    with pytest.raises(StoreError, match="does not match its manifest"):
        backup_mod.verify(path)
    with pytest.raises(NotFound):
        backup_mod.verify(path.with_name("missing.db"))


def test_copy_of_a_closed_file_is_a_valid_backup(db_path, model_path, tmp_path):
    with Memory.open(db_path, model=str(model_path)) as m:
        m.add_many([{"content": "the cat sleeps on the warm windowsill", "tags": ["pets"]},
                    {"content": "quarterly taxes are due in April", "layer": "assets"}])
    copy = tmp_path / "other-machine" / "memory.db"
    copy.parent.mkdir()
    shutil.copyfile(db_path, copy)
    report = backup_mod.verify(copy)
    assert report.memories == 2 and not report.manifest
    assert not Path(str(copy) + "-wal").exists()  # checking it left nothing beside it
    with Memory.open(copy, model=str(model_path), create=False) as other:
        assert other.search("where does the kitten nap?", mode="vector", k=1)[0].memory.content.startswith("the cat")
        assert other.search("taxes", mode="text", k=1)[0].memory.layer == "assets"
        assert other.status().counts["assets"] == 1
    # ... and it can be restored like a backup.
    with Memory.open(tmp_path / "fresh.db") as fresh:
        assert fresh.restore(copy).memories == 2


# -- the done-when: a backup while another process writes ---------------------------------------------

WRITER = r"""
import sys
from magray import Memory
with Memory.open(sys.argv[1], model=sys.argv[2]) as mem:
    i = 0
    while True:
        i += 1
        result = mem.add(f"writer note number {i}", layer="assets")
        print(f"ack {result.id} {i}", flush=True)  # printed only once the write is committed
"""


def test_backup_while_another_process_writes_then_restore(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as seed:
        seed.add_many([{"content": f"seed memory {i} with a few more words in it"} for i in range(150)])
    writer = spawn(WRITER, db_path, model_path)
    lines = Lines(writer)
    acked: dict[int, str] = {}
    during: list[str] = []
    try:
        for _ in range(5):
            _, memory_id, n = lines.next().split()
            acked[int(memory_id)] = f"writer note number {n}"
        acked.update({int(l.split()[1]): f"writer note number {l.split()[2]}" for l in lines.pending()})

        def progress(done: int, total: int) -> None:
            # Mid-backup (the snapshot is held): the writer must still get its writes through.
            if done < total and len(during) < 3:
                during.extend(lines.next() for _ in range(3))

        with Memory.open(db_path) as mem:
            report = backup_mod.create(mem, step_pages=8, progress=progress)
            assert len(during) == 3, "the backup finished in one step; the test needs a bigger file"
            writer.kill()
            writer.wait()
            assert backup_mod.verify(report.path).memories == report.memories
            restored = mem.restore(report.path)
            assert restored.memories == report.memories
            now = contents(mem)
            for memory_id, text in acked.items():
                assert now.get(memory_id) == text
            assert mem.connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with Memory.open(db_path, model=str(model_path)) as after:
            assert after.search("writer note number 1", mode="vector", k=5)
    finally:
        writer.kill()
        writer.wait()


# -- restore ------------------------------------------------------------------------------------------

READER = r"""
import sys
from pathlib import Path
from magray.db import open_connection
conn = open_connection(Path(sys.argv[1]))
last = None
while True:
    # One statement reads one snapshot of the whole table.
    seen = conn.execute("SELECT group_concat(content, '|') FROM (SELECT content FROM memories ORDER BY content)").fetchone()[0]
    if seen != last:
        print(seen, flush=True)
        last = seen
    if sys.argv[2] in seen:
        break
"""


def test_readers_see_old_or_new_content_never_a_mix(db_path, tmp_path):
    with Memory.open(tmp_path / "other.db") as other:
        _insert_plain(other, [f"new memory {i}" for i in range(300)])
        source = Path(other.backup().path)
    with Memory.open(db_path) as mem:
        _insert_plain(mem, [f"old memory {i}" for i in range(300)])
        old = "|".join(sorted(f"old memory {i}" for i in range(300)))
        new = "|".join(sorted(f"new memory {i}" for i in range(300)))
        reader = spawn(READER, db_path, "new memory 299")
        try:
            lines = Lines(reader)
            assert lines.next() == old
            backup_mod.restore(mem, source, step_pages=1)
            seen = []
            while (line := lines.next()) is not None:
                seen.append(line)
            assert seen and seen[-1] == new and set(seen) <= {old, new}
        finally:
            reader.kill()
            reader.wait()


def _insert_plain(mem: Memory, texts: list[str]) -> None:
    """Rows without vectors (no model needed): enough for tests about whole-file copies."""
    from magray.db import write_transaction

    with write_transaction(mem.connection):
        for text in texts:
            records.insert(mem.connection, {
                "layer": "assets", "content": text, "content_hash": records.content_hash(text), "title": None,
                "kind": None, "source": None, "project": "", "session": "", "metadata": "{}",
                "created_at": mem.now(), "importance": 0.5, "expires_at": None}, [])


RESTORER = r"""
import sys
from magray import Memory, backup
with Memory.open(sys.argv[1]) as mem:
    def progress(done, total):
        print(f"copied {done} of {total}", flush=True)
        sys.stdin.readline()  # the test kills this process here, in the middle of the copy
    backup.restore(mem, sys.argv[2], step_pages=2, progress=progress)
    print("done", flush=True)
"""


def test_a_crash_during_restore_leaves_the_old_content(db_path, tmp_path):
    with Memory.open(tmp_path / "other.db") as other:
        _insert_plain(other, [f"backup row {i}" for i in range(400)])
        source = Path(other.backup().path)
    with Memory.open(db_path) as mem:
        _insert_plain(mem, [f"live row {i}" for i in range(50)])
        before = contents(mem)
    restorer = spawn(RESTORER, db_path, source, stdin=subprocess.PIPE)
    try:
        line = Lines(restorer).next()
        assert line.startswith("copied ") and line.split()[1] != line.split()[3]
        restorer.send_signal(signal.SIGKILL)
        restorer.wait()
    finally:
        restorer.kill()
        restorer.wait()
    with Memory.open(db_path) as mem:
        assert contents(mem) == before
        assert mem.connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert mem.restore(source).memories == 400
        assert sorted(contents(mem).values()) == sorted(f"backup row {i}" for i in range(400))


def _corrupt(path: Path) -> None:
    """Overwrite the root page of the memories table with garbage."""
    with apsw.Connection(str(path)) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'memories'").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _foreign_sqlite(path: Path) -> None:
    path.unlink()
    with apsw.Connection(str(path)) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")


def _text_file(path: Path) -> None:
    path.write_text("just some notes, not a database\n" * 200)


@pytest.mark.parametrize("damage, message", [
    (_corrupt, "is damaged"), (_truncate, "truncated"),
    (_foreign_sqlite, "not a magray memory file"), (_text_file, "not a SQLite database"),
])
def test_restore_refuses_a_bad_file_and_leaves_the_live_file_untouched(db_path, tmp_path, damage, message):
    with Memory.open(tmp_path / "source.db") as source:
        _insert_plain(source, [f"row {i}" for i in range(200)])
        bad = plain_copy(Path(source.backup().path), tmp_path / "bad.db")
    damage(bad)
    with Memory.open(db_path) as mem:
        _insert_plain(mem, ["the live content"])
        mem.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = file_state(db_path)
        with pytest.raises(StoreError, match=message):
            mem.restore(bad)
        assert file_state(db_path) == before
        assert not (tmp_path / "backups").exists() or not any(
            "pre-restore" in p.name for p in (tmp_path / "backups").iterdir())
        assert list(contents(mem).values()) == ["the live content"]


def test_newer_schema_backup_is_refused(db_path, tmp_path):
    with Memory.open(db_path) as mem:
        _insert_plain(mem, ["keep me"])
        newer = plain_copy(Path(mem.backup().path), tmp_path / "newer.db")
        with apsw.Connection(str(newer)) as conn:
            conn.execute(f"PRAGMA user_version = {schema.latest_version() + 1}")
        with pytest.raises(SchemaTooNew):
            backup_mod.verify(newer)
        with pytest.raises(SchemaTooNew):
            mem.restore(newer)
        assert list(contents(mem).values()) == ["keep me"]


def test_older_schema_backup_is_migrated_on_restore(db_path, tmp_path):
    old = tmp_path / "v1.db"
    with apsw.Connection(str(old)) as conn:
        conn.execute(schema.migrations()[0][2])
        conn.execute("PRAGMA user_version = 1")
        text = "written by magray schema one"
        conn.execute("INSERT INTO memories (layer, content, content_hash, created_at, updated_at) "
                     "VALUES ('assets', ?, ?, 1.0, 2.0)", (text, records.content_hash(text)))
    with Memory.open(db_path) as mem:
        _insert_plain(mem, ["current content"])
        report = mem.restore(old)
        assert report.migrated_from == 1 and report.schema_version == schema.latest_version()
        assert report.safety_copy and backup_mod.verify(report.safety_copy).memories == 1
        assert list(contents(mem).values()) == [text]
        assert mem.connection.execute("SELECT count(*) FROM events").fetchone()[0] == 0
        assert mem.search("schema", mode="text")[0].memory.content == text
    assert backup_mod.verify(old).schema_version == 1  # the backup itself was not changed
    assert not [p for p in (tmp_path / "backups").iterdir() if p.name.startswith(".restore")]


# -- listing and rotation -------------------------------------------------------------------------------

def _backups_at(db_path: Path, times: list[datetime]) -> dict[datetime, str]:
    made = {}
    for when in times:
        with Memory.open(db_path, clock=lambda: when.timestamp()) as mem:
            made[when] = mem.backup().path
    return made


def test_prune_keeps_newest_per_day_and_week(db_path):
    monday = datetime(2026, 3, 2, 12, tzinfo=timezone.utc)
    times = [monday + timedelta(days=d) for d in range(14)] + [monday + timedelta(days=13, hours=-3)]
    made = _backups_at(db_path, times)
    folder = backup_mod.default_dir(db_path)
    listed = retention.list_backups(folder)
    assert [b["file"] for b in listed][0] == made[times[13]] and all(b["verified"] for b in listed)
    policy = {"keep_last": None, "keep_daily": 3, "keep_weekly": 2}
    dry = retention.prune(folder, policy, dry_run=True)
    assert len(dry["removed"]) == 11 and len(list(folder.glob("*.db"))) == 15
    result = retention.prune(folder, policy)
    expected = {made[monday + timedelta(days=d)] for d in (13, 12, 11, 6)}
    assert set(result["kept"]) == expected
    assert {str(p) for p in folder.glob("*.db")} == expected
    assert len(list(folder.glob("*.json"))) == 4
    retention.prune(folder, {"keep_last": 1})
    assert [str(p) for p in folder.glob("*.db")] == [made[times[13]]]
    with pytest.raises(InvalidInput, match="must keep something"):
        retention.prune(folder, {"keep_last": 0, "keep_daily": 0})


def test_prune_never_touches_files_without_a_manifest(db_path):
    made = _backups_at(db_path, [datetime(2026, 1, d, tzinfo=timezone.utc) for d in (1, 2)])
    folder = backup_mod.default_dir(db_path)
    stranger = folder / "someone-elses.db"
    stranger.write_bytes(b"x")
    retention.prune(folder, {"keep_last": 1})
    assert stranger.exists() and len(list(folder.glob("*.db"))) == 2
    assert not Path(min(made.items())[1]).exists()


# -- the CLI ------------------------------------------------------------------------------------------

def test_cli_backup_list_verify_policy_rotate(cli, tmp_path):
    assert cli("add", "remember the milk").returncode == 0
    out = cli.json("backup")
    assert out["ok"] and out["data"]["memories"] == 1 and out["data"]["manifest"]
    plain = cli("backup")
    assert plain.returncode == 0 and plain.stderr == ""  # no progress bar when not on a terminal
    assert len(cli.json("backup", "list")["data"]) == 2
    assert "memories" in cli("backup", "list").stdout
    verified = cli.json("backup", "verify", out["data"]["path"])
    assert verified["data"]["sha256"] == out["data"]["sha256"]
    assert cli.json("backup", "policy")["data"] == retention.DEFAULT_POLICY | {"every_seconds": None}
    assert cli.json("backup", "policy", "--keep", "1")["data"]["keep_last"] == 1
    rotated = cli.json("backup", "--rotate")
    # keep-daily 7 still applies: one per day survives, the newest of today.
    assert rotated["data"]["rotation"]["kept"] == [rotated["data"]["path"]]
    assert len(cli.json("backup", "list")["data"]) == 1
    pruned = cli.json("backup", "prune", "--keep", "5", "--dry-run")
    assert pruned["data"]["removed"] == [] and pruned["data"]["dry_run"]


def test_cli_restore_errors_have_exit_codes(cli, tmp_path):
    assert cli("add", "remember the milk").returncode == 0
    foreign = tmp_path / "foreign.db"
    foreign.write_text("hello")
    proc = cli("restore", str(foreign))
    assert proc.returncode == 5 and "not a SQLite database" in proc.stderr
    missing = cli("backup", "verify", str(tmp_path / "nope.db"))
    assert missing.returncode == 3
    newer = Path(cli.json("backup")["data"]["path"])
    with apsw.Connection(str(newer)) as conn:
        conn.execute("PRAGMA user_version = 99")
    assert cli("restore", str(newer)).returncode == 5  # the manifest no longer matches
    backup_mod.manifest_path(newer).unlink()
    assert cli("restore", str(newer)).returncode == 7
    ok = cli.json("restore", str(Path(cli.json("backup")["data"]["path"])))
    assert ok["ok"] and ok["data"]["memories"] == 1


# -- restores while other processes write ---------------------------------------------------------

def _acked(lines: Lines) -> list[str]:
    import json

    return [json.loads(line)["content"] for line in lines.pending()]


def _held_contents(path: Path) -> set[str]:
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return {r[0] for r in conn.execute("SELECT content FROM memories WHERE deleted_at IS NULL")}
    finally:
        conn.close()


def test_restores_under_writers_lose_no_acknowledged_write(db_path, tmp_path, model_path):
    """Two writer processes add memories without pause while `magray restore` runs again and
    again. Each restore must succeed, and every write a writer was told had landed must be in the
    live file or in the safety copy of one of the restores (the one that replaced it)."""
    import json

    from helpers.reliability import run_cli, start_worker, subprocess_env

    with Memory.open(db_path, model=str(model_path)) as seed:
        seed.add_many([{"content": f"memory {i} kept in the backup", "layer": "assets"} for i in range(40)])
        backup = seed.backup(tmp_path / "base.db").path
    env = subprocess_env(tmp_path)
    writers = [start_worker("crash-writer", db_path, env, "--tag", tag) for tag in ("wa", "wb")]
    outputs = [Lines(w) for w in writers]
    acked: list[str] = []
    safety_copies: list[Path] = []
    try:
        for out in outputs:  # each writer is up and writing
            acked.append(json.loads(out.next())["content"])
        for _ in range(4):
            proc = run_cli(db_path, env, "--json", "restore", str(backup))
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)["data"]
            assert report["memories"] == 40
            assert report["safety_copy"], report
            safety_copies.append(Path(report["safety_copy"]))
            for out in outputs:  # writes go on after each restore
                acked.append(json.loads(out.next())["content"])
                acked += _acked(out)
        for w in writers:
            assert w.poll() is None, w.stderr.read()
    finally:
        for w in writers:
            w.kill()
            w.wait()
    for out in outputs:
        acked += _acked(out)
    held = _held_contents(db_path)
    for copy in safety_copies:
        assert backup_mod.verify(copy).kind == "pre-restore"
        held |= _held_contents(copy)
    lost = [c for c in acked if c not in held]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes are nowhere: {lost[:5]}"
    assert len(acked) > 8


def test_backups_at_once_each_finish_private_and_clean(db_path, tmp_path, model_path):
    """Several `magray backup` processes started together (same second, same default name):
    each gets its own temporary file and its own final name, every backup is 0600 and verifies,
    and no temporary file is left behind."""
    from helpers.reliability import subprocess_env

    from helpers.reliability import start_worker

    with Memory.open(db_path, model=str(model_path)) as seed:
        seed.add_many([{"content": f"memory {i} to back up", "layer": "assets"} for i in range(30)])
    env = subprocess_env(tmp_path)
    writer = start_worker("crash-writer", db_path, env, "--tag", "wb")  # and a process writing meanwhile
    try:
        Lines(writer).next()
        procs = [subprocess.Popen([sys.executable, "-m", "magray", "--db", str(db_path), "--json", "backup"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        results = [p.communicate(timeout=300) for p in procs]
        assert writer.poll() is None, writer.stderr.read()
    finally:
        writer.kill()
        writer.wait()
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    import json

    paths = {json.loads(out)["data"]["path"] for out, _ in results}
    assert len(paths) == 4
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert backup_mod.verify(path).memories >= 30
    folder = backup_mod.default_dir(db_path)
    assert sorted(p.name for p in folder.iterdir() if "partial" in p.name or p.name.endswith(("-wal", "-shm",
                                                                                              "-journal"))) == []


KILLED_MID_BACKUP = r"""
import sys
from pathlib import Path
from magray import Memory
from magray import backup as backup_mod

def stop(done, total):
    if done < total:
        print("copying", flush=True)
        sys.stdin.readline()  # killed here, its temporary file half written

with Memory.open(Path(sys.argv[1])) as mem:
    backup_mod.create(mem, step_pages=1, progress=stop)
"""


def test_prune_removes_what_a_killed_backup_left(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as seed:
        seed.add_many([{"content": f"memory {i} " + "padding " * 200, "layer": "assets"} for i in range(20)])
        seed.backup()
    proc = spawn(KILLED_MID_BACKUP, db_path, stdin=subprocess.PIPE)
    try:
        assert Lines(proc).next() == "copying"
        folder = backup_mod.default_dir(db_path)
        partials = [p for p in folder.iterdir() if p.name.endswith(".partial")]
        assert partials, "the backup was killed before it made its temporary file"
        with Memory.open(db_path) as mem:  # its writer is alive: not stale yet
            assert mem.prune_backups(keep_last=5)["unfinished_removed"] == []
            assert all(p.exists() for p in partials)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    with Memory.open(db_path) as mem:
        report = mem.prune_backups(keep_last=5)
    assert sorted(report["unfinished_removed"]) == sorted(str(p) for p in partials)
    assert not [p for p in folder.iterdir() if "partial" in p.name]
    assert len(retention.list_backups(folder)) == 1
