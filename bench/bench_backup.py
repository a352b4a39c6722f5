"""Backup and restore throughput on a big memory file, and how much a concurrent writer slows down
while a backup runs.

    python bench/bench_backup.py --memories 100000 --repeats 3 [--file big.db] [--keep]

The file is built by bulk-inserting rows through the library's records/vectors functions with
random unit vectors (no model is run). Prints medians over the repeats and ratios against
baselines measured in the same run: a plain copy of the closed file, and the writer alone.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from magray import Memory  # noqa: E402
from magray import backup as backup_mod  # noqa: E402
from magray import binding, records, vectors  # noqa: E402
from magray.db import write_transaction  # noqa: E402

DIM = 384
WORDS = ("garden deploy friday coffee user prefers dark mode meeting notes budget travel invoice "
         "python sqlite backup project session insight asset remember weekly report server cat "
         "windowsill tea passport folder blue green quarterly taxes april release review").split()


def build(path: Path, count: int, seed: int = 7) -> None:
    """A memory file with `count` memories (one chunk each) and random 384-dim vectors."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    with Memory.open(path, profile="fast") as mem:
        conn = mem.connection
        with write_transaction(conn):
            bound = binding.bind(conn, "random-384", "0" * 64, DIM, "mean", 1, mem.now())
        now = mem.now()
        for start in range(0, count, 5000):
            n = min(5000, count - start)
            vecs = nprng.standard_normal((n, DIM)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            with write_transaction(conn):
                for i in range(n):
                    text = f"memory {start + i}: " + " ".join(rng.choices(WORDS, k=rng.randint(10, 40)))
                    layer = rng.choice(("interact", "insights", "assets"))
                    fields = {"layer": layer, "content": text, "content_hash": records.content_hash(text),
                              "title": None, "kind": None, "source": None, "project": rng.choice(("", "a", "b")),
                              "session": "", "metadata": "{}", "created_at": now - rng.random() * 86400 * 90,
                              "importance": 0.5, "expires_at": None}
                    memory_id = records.insert(conn, fields, [])
                    vectors.insert_chunks(conn, bound.generation, memory_id, layer, fields["project"], "",
                                          fields["created_at"], [records.content_hash(text)], vecs[i:i + 1])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


WRITER = r"""
import sys, time, numpy as np
from pathlib import Path
from magray import Memory, binding, records, vectors
from magray.db import write_transaction
rng = np.random.default_rng(int(sys.argv[2]))
with Memory.open(sys.argv[1], profile="safe") as mem:
    conn = mem.connection
    gen = binding.current(conn).generation
    i = 0
    while True:
        i += 1
        text = f"writer {sys.argv[2]} note {i}"
        vec = rng.standard_normal((1, 384)).astype(np.float32)
        t0 = time.monotonic()
        with write_transaction(conn):
            f = {"layer": "interact", "content": text, "content_hash": records.content_hash(text), "title": None,
                 "kind": None, "source": None, "project": "", "session": "", "metadata": "{}",
                 "created_at": time.time(), "importance": 0.5, "expires_at": None}
            mid = records.insert(conn, f, [])
            vectors.insert_chunks(conn, gen, mid, "interact", "", "", f["created_at"], [f["content_hash"]], vec)
        t1 = time.monotonic()
        print(f"{t1:.6f} {t1 - t0:.6f}", flush=True)
"""


class Writer:
    """The writer process, its output drained by a thread (a full pipe would stall its commits)."""

    def __init__(self, path: Path, seed: int):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(seed)],
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self.started.set()

    def commits(self) -> list[tuple[float, float]]:
        """Stop the writer; (monotonic time, latency) of each of its commits."""
        self.proc.terminate()
        self.proc.wait()
        self.thread.join()
        return [tuple(map(float, line.split())) for line in self.lines if line.strip()]


def window(samples: list[tuple[float, float]], start: float, end: float) -> tuple[float, float]:
    """(commits per second, median commit latency in ms) of the commits that ended in [start, end)."""
    inside = [lat for t, lat in samples if start <= t < end]
    rate = len(inside) / (end - start)
    return rate, (statistics.median(inside) * 1000 if inside else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memories", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--file", type=Path, help="build the file here (reused if it exists)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="magray-bench-backup-"))
    source = args.file or work / "big.db"
    if not source.exists():
        t0 = time.perf_counter()
        build(source, args.memories)
        print(f"built {args.memories:,} memories in {time.perf_counter() - t0:.1f}s")
    size_mb = source.stat().st_size / 1e6
    print(f"file: {size_mb:.1f} MB, {args.memories:,} memories; repeats: {args.repeats}")

    live = work / "live.db"
    shutil.copyfile(source, live)
    cp, bk_copy, bk_total, rs_copy, rs_total = [], [], [], [], []
    base_rate, base_lat, during_rate, during_lat, copy_rate = [], [], [], [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        shutil.copyfile(live, work / "plain-copy.db")
        cp.append(time.perf_counter() - t0)
        (work / "plain-copy.db").unlink()

        # Backup with a writer running: measure the writer alone first, then during the backup.
        writer = Writer(live, r)
        with Memory.open(live) as mem:
            assert writer.started.wait(120), "the writer did not start"
            w0 = time.monotonic()
            time.sleep(3.0)  # the baseline window (a measurement, not a synchronisation)
            copied: list[float] = []
            copied_at: list[float] = []

            def progress(done: int, total: int) -> None:
                if done == total:
                    copied.append(time.perf_counter())
                    copied_at.append(time.monotonic())

            b0, t0 = time.monotonic(), time.perf_counter()
            report = backup_mod.create(mem, work / "backups", progress=progress)
            b1, t1 = time.monotonic(), time.perf_counter()
        samples = writer.commits()
        bk_copy.append(copied[0] - t0)
        bk_total.append(t1 - t0)
        rate, lat = window(samples, w0, b0)
        base_rate.append(rate)
        base_lat.append(lat)
        rate, lat = window(samples, b0, b1)
        during_rate.append(rate)
        during_lat.append(lat)
        copy_rate.append(window(samples, b0, copied_at[0])[0])

        # Restore that backup into the live file (verify + safety copy + copy in one transaction).
        with Memory.open(live) as mem:
            steps: list[float] = []
            t0 = time.perf_counter()
            mem.restore(report.path, progress=lambda done, total: steps.append(time.perf_counter()))
            t1 = time.perf_counter()
        rs_total.append(t1 - t0)
        # The copy into the live file is the last phase: from its first step to its last.
        rs_copy.append(steps[-1] - steps[0])
        for p in (work / "backups").glob("*"):
            p.unlink()

    med = statistics.median
    backup_mb = Path(report.path).stat().st_size / 1e6 if Path(report.path).exists() else size_mb
    print(f"\n{'measure':<44} {'median':>10}  notes")
    print(f"{'plain copy of the closed file (baseline)':<44} {med(cp):>9.2f}s  {size_mb / med(cp):.0f} MB/s")
    print(f"{'backup: copy phase (backup API)':<44} {med(bk_copy):>9.2f}s  {size_mb / med(bk_copy):.0f} MB/s, "
          f"{med(bk_copy) / med(cp):.1f}x the plain copy")
    print(f"{'backup: total (copy + verify + sha256)':<44} {med(bk_total):>9.2f}s  {size_mb / med(bk_total):.0f} MB/s")
    print(f"{'restore: total (verify, safety copy, copy)':<44} {med(rs_total):>9.2f}s  "
          f"{size_mb / med(rs_total):.0f} MB/s")
    print(f"{'restore: copy phase (first to last step)':<44} {med(rs_copy):>9.2f}s  {size_mb / med(rs_copy):.0f} MB/s")
    print(f"{'writer alone: commits/s':<44} {med(base_rate):>10.1f}  median latency {med(base_lat):.2f} ms")
    print(f"{'writer during backup: commits/s':<44} {med(during_rate):>10.1f}  median latency {med(during_lat):.2f} ms, "
          f"rate ratio {med(during_rate) / med(base_rate):.2f}")
    print(f"{'writer during the copy phase only: commits/s':<44} {med(copy_rate):>10.1f}  "
          f"rate ratio {med(copy_rate) / med(base_rate):.2f}")
    print(f"(backup file {backup_mb:.1f} MB)")
    print("per repeat: backup total " + ", ".join(f"{t:.2f}s" for t in bk_total)
          + "; restore total " + ", ".join(f"{t:.2f}s" for t in rs_total)
          + "; writer ratio " + ", ".join(f"{d / b:.2f}" for d, b in zip(during_rate, base_rate)))
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"work folder kept: {work}")


if __name__ == "__main__":
    main()
