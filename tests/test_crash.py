"""Crash safety: writer processes killed with SIGKILL at random points, an interrupted bulk import,
and the durability profiles. Real processes, the real model, no sleeps: kills are placed by reading
the writers' own output (or the CLI's progress bar on a pseudo-terminal)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import re
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from helpers.reliability import (consistency, memory_complete, model_path, open_raw, run_cli,
                                 start_worker, subprocess_env)

CYCLES = 50
# Every other cycle runs a second writer at once, so that some kills land while the other one
# holds or waits for the write lock: 75 SIGKILLs in all.
KILLS = CYCLES + CYCLES // 2
PROFILES = ("safe", "balanced", "fast")


def _kill_after(proc: subprocess.Popen, lines: int) -> list[dict]:
    """Read `lines` results from a crash-writer, SIGKILL it at once (mid-way through its next add),
    then collect what it had printed before it died: every printed id was a returned add()."""
    printed = []
    for _ in range(lines):
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(json.loads(line))
    proc.kill()
    # Not communicate(): it reads the pipes' file descriptors and would skip lines that readline()
    # already pulled into the text buffer. The process is dead, so reading one pipe cannot block.
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"writer exited by itself ({proc.returncode}): {err[-2000:]}"
    printed += [json.loads(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]
    return printed


def test_sigkill_writers_lose_nothing_they_reported(tmp_path):
    db = tmp_path / "crash.db"
    env = subprocess_env(tmp_path)
    rng = random.Random(int(os.environ.get("MAGRAY_CRASH_SEED", "20240601")))
    printed: list[dict] = []
    started = time.perf_counter()
    kills_before_output = 0
    for cycle in range(CYCLES):
        procs = [(start_worker("crash-writer", db, env, "--tag", f"c{cycle}x{w}",
                               "--profile", PROFILES[(cycle + w) % 3]), rng.choice((0, 1, 3, 8, 15, 30)))
                 for w in range(1 + cycle % 2)]
        for proc, lines in procs:
            kills_before_output += lines == 0
            printed += _kill_after(proc, lines)
    elapsed = time.perf_counter() - started

    problems, counts = consistency(db)
    conn = open_raw(db)
    try:
        for item in printed:
            problems += memory_complete(conn, item["id"], item["content"], item["token"])
    finally:
        conn.close()
    print(f"\ncrash: {CYCLES} cycles, {KILLS} SIGKILLs ({kills_before_output} right "
          f"after start), {len(printed)} reported ids all present; file: {counts}; {elapsed:.1f} s")
    assert not problems, problems[:20]
    from magray import Memory

    with Memory.open(db) as mem:  # magray's own doctor agrees with the independent check
        report = mem.doctor()
    assert report.healthy, str(report)
    assert len(printed) > CYCLES  # the kills did land between adds, not only before the first
    # An add that committed but died before its print is whole too; at most one per killed process.
    assert len(printed) <= counts["memories"] <= len(printed) + KILLS


def _progress_reader(fd: int):
    """Yield (done, total) from a tqdm bar written to the pseudo-terminal `fd`."""
    buffer = ""
    while True:
        try:
            chunk = os.read(fd, 4096).decode("utf-8", "replace")
        except OSError:  # the other side closed: the process ended
            return
        if not chunk:
            return
        buffer += chunk
        *complete, buffer = re.split(r"[\r\n]", buffer)
        for part in complete + [buffer]:
            for done, total in re.findall(r"(\d+)/(\d+)", part):
                yield int(done), int(total)


def test_interrupted_bulk_import_resumes_without_duplicates(tmp_path):
    """`magray add --jsonl` in the fast profile commits a batch at a time (config.WRITE_BATCH): killed
    after a batch, the file holds whole batches only, and running it again adds just the rest."""
    from magray.config import WRITE_BATCH

    db = tmp_path / "bulk.db"
    env = subprocess_env(tmp_path)
    batch = WRITE_BATCH["fast"]
    total = batch + 200
    lines = [json.dumps({"content": f"bulk item {i} note", "tags": [f"b{i % 7}"],
                         "layer": ("interact", "insights")[i % 2]}) for i in range(total)]
    source = tmp_path / "import.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    kill_at = batch  # the first batch is committed; the kill lands while the second is embedded

    # stderr on a pseudo-terminal: the CLI then draws its tqdm bar there, updated after each commit.
    master, slave = pty.openpty()
    # A new pty is 0 columns wide, and tqdm draws nothing in 0 columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "magray", "--db", str(db), "--profile", "fast", "add",
                             "--jsonl", str(source)], env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = 0
    for done, _ in _progress_reader(master):
        seen = max(seen, done)
        if done >= kill_at:
            proc.kill()
            break
    proc.wait()
    os.close(master)
    assert proc.returncode == -signal.SIGKILL, "the import ended before it was killed"

    problems, counts = consistency(db)
    assert not problems, problems
    stored = counts["memories"]
    assert stored % batch == 0 and kill_at <= stored < total, (stored, kill_at)

    again = run_cli(db, env, "--profile", "fast", "--json", "add", "--jsonl", str(source))
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)["data"]
    assert (data["added"], data["existing"]) == (total - stored, stored)
    problems, counts = consistency(db)
    assert not problems, problems
    conn = open_raw(db)
    try:
        distinct = conn.execute("SELECT count(DISTINCT content), count(*) FROM memories").fetchone()
    finally:
        conn.close()
    assert distinct == (total, total)
    doctor = run_cli(db, env, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    print(f"\nbulk import killed at {stored}/{total} (batches of {batch}); re-run added {data['added']}")


@pytest.mark.parametrize("profile, synchronous", [("safe", 2), ("balanced", 1), ("fast", 1)])
def test_durability_profiles_set_synchronous_and_batching(tmp_path, monkeypatch, profile, synchronous):
    """safe = FULL (2), balanced = NORMAL (1), fast = NORMAL and bulk adds committed in big batches
    (counted with SQLite's commit hook)."""
    from magray import Memory
    from magray.config import WRITE_BATCH

    monkeypatch.setenv("MAGRAY_THREADS", "1")
    with Memory.open(tmp_path / "p.db", profile=profile, model=str(model_path())) as mem:
        assert mem.connection.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        assert mem.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        mem.load_model()
        commits = []

        def count_commit() -> bool:
            commits.append(1)
            return False  # False lets the commit go ahead

        mem.connection.set_commit_hook(count_commit)
        n = 70
        mem.add_many([{"content": f"profile {profile} item {i}"} for i in range(n)])
        assert len(commits) == -(-n // WRITE_BATCH[profile])
    assert WRITE_BATCH["fast"] > WRITE_BATCH["balanced"] == WRITE_BATCH["safe"]
