"""Several processes on one memory file: 4 writers and 4 readers at once, a fixed number of operations
each (real processes, real model). No `database is locked` may reach a caller, a reader never sees a
half-written memory, and every write lands. Throughput is measured by bench/bench_concurrency.py."""

from __future__ import annotations

from helpers.reliability import consistency, open_raw, run_workers, subprocess_env

WRITERS = READERS = 4
OPERATIONS = 25


def test_writers_and_readers_share_one_file(tmp_path):
    db = tmp_path / "shared.db"
    run = run_workers(db, subprocess_env(tmp_path), writers=WRITERS, readers=READERS, count=OPERATIONS)

    failures = [f"{r['kind']} rc={r['rc']}: {r['stderr'][-1500:]}" for r in run["results"] if r["rc"] != 0]
    assert not failures, failures
    for r in run["results"]:
        assert "locked" not in r["stderr"].lower() and "busy" not in r["stderr"].lower(), r["stderr"]

    added = [int(line.split()[1]) for r in run["results"] if r["kind"] == "writer"
             for line in r["stdout"] if line.startswith("add ")]
    tagged = {int(line.split()[1]) for r in run["results"] if r["kind"] == "writer"
              for line in r["stdout"] if line.startswith("tag ")}
    assert len(added) == len(set(added)) == WRITERS * OPERATIONS
    seen = sum(int(line.split()[3]) for r in run["results"] if r["kind"] == "reader"
               for line in r["stdout"] if line.startswith("done "))
    assert seen > 0  # the readers did read memories while the writers wrote

    problems, counts = consistency(db)
    assert not problems, problems
    assert counts["memories"] == WRITERS * OPERATIONS
    conn = open_raw(db)
    try:
        stored = {r[0] for r in conn.execute("SELECT id FROM memories")}
        with_seen = {r[0] for r in conn.execute("SELECT memory_id FROM memory_tags WHERE tag = 'seen'")}
    finally:
        conn.close()
    assert stored == set(added)
    assert with_seen == tagged
    print(f"\n{WRITERS} writers + {READERS} readers, {OPERATIONS} operations each: {run['write_ops']} writes, "
          f"{run['read_ops']} reads in {run['wall']:.1f} s; readers saw {seen} memories; file {counts}")
