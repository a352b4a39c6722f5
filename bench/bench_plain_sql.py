"""What plain-SQL writes cost magray: the check every command makes when nothing is queued, and the
sync of a bulk insert made with the sqlite3 shell, against `add_many` of the same texts (the
baseline, same run), with the longest write transaction the sync held. Also the one-off migration
of a schema-4 file to schema 5 (memories and chunks rebuilt), timed on a generated file.

    python bench/bench_plain_sql.py                # 1,000 rows, 5 repeats, migration of 100,000
    python bench/bench_plain_sql.py --n 300 --repeats 3 --migrate-rows 0

Needs the sqlite3 shell (Debian: apt-get install sqlite3) and the test model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from magray import Memory  # noqa: E402
from magray import reconcile  # noqa: E402

WORDS = ("apple river cloud engine garden pencil rocket silver window forest violet harbor candle "
         "marble thunder copper meadow lantern summit canyon").split()


def texts(n: int, salt: str) -> list[str]:
    return [f"{salt} note {i}: " + " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7, 11, 13))
            for i in range(n)]


def transactions(mem: Memory) -> list[float]:
    """Durations of the write transactions run on `mem` from now on (BEGIN IMMEDIATE to COMMIT)."""
    spans: list[float] = []
    began: list[float] = []

    def trace(cursor, sql, bindings):
        if sql.startswith("BEGIN IMMEDIATE"):
            began.append(time.perf_counter())
        elif sql.startswith(("COMMIT", "ROLLBACK")) and began:
            spans.append(time.perf_counter() - began.pop())
        return True

    mem.connection.exec_trace = trace
    return spans


def one_run(folder: Path, model: str, n: int, repeat: int) -> dict[str, float]:
    baseline_db, shell_db = folder / f"add-{repeat}.db", folder / f"shell-{repeat}.db"
    with Memory.open(baseline_db, model=model) as mem:
        mem.add("seed", layer="assets")
        started = time.perf_counter()
        mem.add_many([{"content": t, "layer": "assets"} for t in texts(n, f"r{repeat}")])
        add_many = time.perf_counter() - started
    with Memory.open(shell_db, model=model) as mem:
        mem.add("seed", layer="assets")
        mem.load_model()
        values = ",".join("('assets', '" + t.replace("'", "''") + "')" for t in texts(n, f"r{repeat}"))
        subprocess.run(["sqlite3", str(shell_db), f"INSERT INTO memories (layer, content) VALUES {values}"],
                       check=True)
        spans = transactions(mem)
        started = time.perf_counter()
        mem.list(limit=1)  # the next command: syncs the queue first
        sync = time.perf_counter() - started
        assert reconcile.pending(mem.connection) == {"memories": 0, "vector_deletes": 0}
        # Nothing queued: the check alone, and a whole `list` call that includes it.
        checks, lists = [], []
        for _ in range(2000):
            t0 = time.perf_counter()
            reconcile.has_work(mem.connection)
            checks.append(time.perf_counter() - t0)
        for _ in range(200):
            t0 = time.perf_counter()
            mem.list(limit=20)
            lists.append(time.perf_counter() - t0)
    return {"add_many": add_many, "sync": sync, "longest_tx": max(spans), "transactions": len(spans),
            "check_us": statistics.median(checks) * 1e6, "list_ms": statistics.median(lists) * 1e3}


def migration_time(folder: Path, rows: int) -> float:
    """Seconds to migrate a schema-4 file of `rows` memories (one tag and one chunk each)."""
    import hashlib

    from magray.db import open_connection, write_transaction
    from magray.schema import migrate, migrations

    conn = open_connection(folder / "v4.db")
    for number, _name, sql in migrations()[:4]:
        conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {number}")
    with write_transaction(conn):
        for i, text in enumerate(texts(rows, "m")):
            memory_id = conn.execute(
                "INSERT INTO memories (layer, content, content_hash, created_at, updated_at) "
                "VALUES ('insights', ?, ?, ?, ?) RETURNING id",
                (text, hashlib.sha256(text.encode()).hexdigest(), 1e9 + i, 1e9 + i)).fetchone()[0]
            conn.execute("INSERT INTO memory_tags VALUES (?, ?)", (memory_id, f"t{i % 10}"))
            conn.execute("INSERT INTO chunks (memory_id, generation, seq, text_hash) VALUES (?, 1, 0, ?)",
                         (memory_id, "x" * 64))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    started = time.perf_counter()
    migrate(conn, folder / "v4.db")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--migrate-rows", type=int, default=100_000)
    parser.add_argument("--model", default=os.environ.get("MAGRAY_TEST_MODEL")
                        or str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"))
    args = parser.parse_args()
    if shutil.which("sqlite3") is None:
        sys.exit("the sqlite3 shell is not installed (apt-get install sqlite3)")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(Path(tmp), args.model, args.n, r) for r in range(args.repeats)]
        migrated = migration_time(Path(tmp), args.migrate_rows) if args.migrate_rows else None
    print(f"load average after:  {os.getloadavg()[0]:.2f}")
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"\n{args.n} rows, median of {args.repeats} runs")
    print(f"add_many (baseline):                 {med['add_many']:.2f} s")
    print(f"sync of the same rows inserted by sqlite3: {med['sync']:.2f} s "
          f"({med['sync'] / med['add_many']:.2f}x add_many)")
    print(f"write transactions during the sync:  {med['transactions']:.0f}, longest {med['longest_tx'] * 1e3:.1f} ms")
    print(f"nothing queued: the check {med['check_us']:.1f} us, a list of 20 {med['list_ms']:.2f} ms "
          f"({med['check_us'] / 1e3 / med['list_ms']:.1%} of it)")
    if migrated is not None:
        print(f"migration 4 -> 5 of {args.migrate_rows:,} memories: {migrated:.2f} s")


if __name__ == "__main__":
    main()
