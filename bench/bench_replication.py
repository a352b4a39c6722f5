"""Replication with Litestream: how far the replica trails a steady writer, what replication costs
a writer, how long a restore of a big file takes from a folder replica and from S3, and how far a
follower trails the primary.

    python bench/bench_replication.py [--memories 100000] [--seconds 20] [--rate 20] [--quick]

Writes go through the library's row functions (`records.insert` + `vectors.insert_chunks`, one
write transaction each, profile safe: one fsync per commit) with random unit vectors, so the model
does not dominate the figures. `magray replicate` runs as a real subprocess with the default sync
interval (1 s); the S3 server is moto on 127.0.0.1 (in memory). Ratios are against baselines
measured in the same run: writes without Litestream running, and a plain copy of the closed file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from common import LAYER_CYCLE, build_store, load_note, median, model_path, percentile, sentences  # noqa: E402
from magray import Memory, records, replication  # noqa: E402
from magray import vectors as vec_mod  # noqa: E402
from magray.db import write_transaction  # noqa: E402
from magray.embed.cache import text_hash  # noqa: E402

DIM = 384


def unit_vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAGRAY_MODEL=str(model_path()), MAGRAY_THREADS="1",
               XDG_CONFIG_HOME=str(tmp / "config"), XDG_CACHE_HOME=str(tmp / "cache"))
    env.pop("MAGRAY_DB", None)
    return env | extra


def cli(db: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "magray", "--db", str(db), *args], env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"magray {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


@contextlib.contextmanager
def replicating(db: Path, env: dict[str, str]):
    proc = subprocess.Popen([sys.executable, "-m", "magray", "--db", str(db), "replicate"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def wait_for(condition, what: str, deadline_s: float = 600.0, every: float = 0.05):
    end = time.monotonic() + deadline_s
    while not (value := condition()):
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)
    return value


def caught_up(db: Path, env: dict[str, str]) -> bool:
    status = json.loads(cli(db, env, "replica", "status", "--json"))["data"]
    return status["snapshots"] > 0 and status["local_txid"] > 0 and status["behind_txids"] == 0


class Writer:
    """One memory and its vector per write transaction, the write path of `add` minus the model."""

    def __init__(self, db: Path, seed: int) -> None:
        self.mem = Memory.open(db, profile="safe")
        self.bound = self.mem.load_model()
        self.texts = sentences(20000, seed=seed)
        self.vectors = unit_vectors(len(self.texts), seed)
        self.i = 0

    def write(self) -> float:
        i, conn = self.i, self.mem.connection
        self.i += 1
        text, layer, now = f"{self.texts[i]} #{i}", LAYER_CYCLE[i % 3], time.time()
        with write_transaction(conn):
            memory_id = records.insert(conn, {
                "layer": layer, "content": text, "content_hash": records.content_hash(text), "title": None,
                "kind": None, "source": None, "project": "bench", "session": "", "metadata": "{}",
                "created_at": now, "importance": 0.5, "expires_at": None}, [])
            vec_mod.insert_chunks(conn, self.bound.generation, memory_id, layer, "bench", "", now,
                                  [text_hash(text)], self.vectors[i:i + 1])
        return time.time()


def throughput(writer: Writer, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        writer.write()
    return n / (time.perf_counter() - started)


class ReplicaWatcher(threading.Thread):
    """Notes when each LTX file first shows up in a folder replica (polled every 5 ms)."""

    def __init__(self, replica: Path) -> None:
        super().__init__(daemon=True)
        self.folder = replica / "ltx" / "0"
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.folder):
                    self.seen.setdefault(entry.name, time.time())
            time.sleep(0.005)

    def stamped(self) -> list[tuple[float, float]]:
        """(Litestream's timestamp of the transaction, when it reached the replica), oldest first.
        The file replica sets each file's mtime to the timestamp in its header."""
        out = []
        for name, arrived in self.seen.items():
            with contextlib.suppress(OSError):
                out.append(((self.folder / name).stat().st_mtime, arrived))
        return sorted(out)


def lag_samples(commits: list[float], stamped: list[tuple[float, float]]) -> list[float]:
    """For each commit, the arrival of the first replicated transaction stamped after it (Litestream
    stamps a transaction after reading it from the WAL, so that one holds the commit)."""
    lags = []
    for committed in commits:
        after = [arrived for stamp, arrived in stamped if stamp >= committed]
        if after:
            lags.append(after[0] - committed)
    return lags


def steady_writes(writer: Writer, seconds: float, rate: float) -> list[float]:
    commits, period = [], 1.0 / rate
    start = time.monotonic()
    for k in range(int(seconds * rate)):
        delay = start + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronising
        commits.append(writer.write())
    return commits


def follower_delays(writer: Writer, follower: Path, samples: int) -> list[float]:
    delays = []
    for _ in range(samples):
        committed = writer.write()
        text = f"{writer.texts[writer.i - 1]} #{writer.i - 1}"

        def visible() -> bool:
            with contextlib.closing(sqlite3.connect(f"file:{follower}?mode=ro", uri=True, timeout=5)) as c:
                return c.execute("SELECT 1 FROM memories WHERE content = ?", (text,)).fetchone() is not None

        wait_for(visible, "the follower", 120, every=0.01)
        delays.append(time.time() - committed)
    return delays


def timed_restore(db: Path, env: dict[str, str], url: str, out_dir: Path, repeats: int) -> tuple[list, list]:
    raw, full = [], []
    for r in range(repeats):
        out = out_dir / f"raw-{r}.db"
        started = time.perf_counter()
        subprocess.run([replication.litestream_binary(), "restore", "-o", str(out), url], check=True,
                       env={k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}, capture_output=True)
        raw.append(time.perf_counter() - started)
        out.unlink()
        out = out_dir / f"magray-{r}.db"
        started = time.perf_counter()
        cli(db, env, "restore", "--from-replica", url, "--to", str(out))
        full.append(time.perf_counter() - started)
        out.unlink()
    return raw, full


@contextlib.contextmanager
def s3_server(tmp: Path):
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
    log = tmp / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                                env=dict(os.environ, **creds), stdout=out, stderr=subprocess.STDOUT)
    try:
        endpoint = wait_for(lambda: (m := re.search(r"Running on (http://127\.0\.0\.1:\d+)", log.read_text()))
                            and m.group(1), "moto", 30)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="bench")
        yield creds, f"s3://bench/memory?endpoint={endpoint}&forcePathStyle=true"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=100_000, help="size of the file restored (default 100000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady-write phase for the lag (default 20)")
    parser.add_argument("--rate", type=float, default=20.0, help="writes per second in that phase (default 20)")
    parser.add_argument("--writes", type=int, default=300, help="writes per throughput round (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, each off then on (default 3)")
    parser.add_argument("--follower-samples", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2, help="restores of the big file per replica (default 2)")
    parser.add_argument("--quick", action="store_true", help="small and short: 10K memories, 8 s, 1 round")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.memories, args.seconds, args.writes, args.rounds, args.follower_samples, args.repeats = 10_000, 8, 100, 1, 5, 1
    print(load_note())
    results: dict = {"load_before": os.getloadavg()[0], "args": vars(args)}
    print(f"Litestream {subprocess.run([replication.litestream_binary(), 'version'], capture_output=True, text=True).stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="magray-bench-repl-") as tmp_name:
        tmp = Path(tmp_name)
        env = env_for(tmp)

        # -- a steady writer: throughput with and without Litestream, lag, follower delay ----------
        db, replica = tmp / "writes.db", tmp / "replica"
        build_store(db, unit_vectors(1000, 1), sentences(1000, seed=1)).close()
        cli(db, env, "replica", "set", str(replica))
        writer = Writer(db, seed=2)
        off, on = [], []
        for r in range(args.rounds):
            off.append(throughput(writer, args.writes))
            with replicating(db, env):
                wait_for(lambda: caught_up(db, env), "the first snapshot")
                on.append(throughput(writer, args.writes))
        print(f"\nwrite throughput, {args.writes} writes x {args.rounds} rounds (profile safe, 1 fsync each):")
        print(f"  Litestream off: median {median(off):.0f} writes/s   {[round(x) for x in off]}")
        print(f"  Litestream on:  median {median(on):.0f} writes/s   {[round(x) for x in on]}")
        print(f"  on / off: {median(on) / median(off):.2f}x")
        results["throughput"] = {"off": off, "on": on, "ratio": median(on) / median(off)}

        follower = tmp / "machine-b" / "memory.db"
        with replicating(db, env):
            wait_for(lambda: caught_up(db, env), "the replica to catch up")
            watcher = ReplicaWatcher(replica)
            watcher.start()
            commits = steady_writes(writer, args.seconds, args.rate)
            wait_for(lambda: caught_up(db, env), "the replica to catch up", 120)
            watcher.stop.set()
            watcher.join()
            lags = lag_samples(commits, watcher.stamped())
            print(f"\nreplication lag, {len(commits)} writes at {args.rate:g}/s for {args.seconds:g} s, sync interval 1 s,"
                  f" folder replica ({len(lags)} matched):")
            print(f"  p50 {median(lags) * 1000:.0f} ms, p95 {percentile(lags, 95) * 1000:.0f} ms, "
                  f"max {max(lags) * 1000:.0f} ms")
            results["lag_s"] = {"p50": median(lags), "p95": percentile(lags, 95), "max": max(lags), "n": len(lags)}
            follow = subprocess.Popen([sys.executable, "-m", "magray", "follow", str(replica), "--to", str(follower)],
                                      env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_for(lambda: Path(str(follower) + "-txid").exists(), "the follower", 120)
                delays = follower_delays(writer, follower, args.follower_samples)
            finally:
                follow.send_signal(signal.SIGTERM)
                follow.wait(timeout=60)
            print(f"\nfollower delay (commit on the primary -> visible in the follower, follow interval 1 s,"
                  f" {len(delays)} samples): p50 {median(delays) * 1000:.0f} ms, p95 {percentile(delays, 95) * 1000:.0f} ms")
            results["follower_delay_s"] = {"p50": median(delays), "p95": percentile(delays, 95)}
        writer.mem.close()

        # -- restoring a big file ---------------------------------------------------------------------
        big = tmp / "big.db"
        started = time.perf_counter()
        build_store(big, unit_vectors(args.memories, 3), sentences(args.memories, seed=3)).close()
        size = big.stat().st_size + (Path(str(big) + "-wal").stat().st_size if Path(str(big) + "-wal").exists() else 0)
        print(f"\nbig file: {args.memories:,} memories, {size / 1e6:.0f} MB, built in {time.perf_counter() - started:.1f} s")
        cli(big, env, "optimize")  # fold the WAL in, so that the copy baseline is the whole file
        copies = []
        for r in range(args.repeats):
            started = time.perf_counter()
            shutil.copyfile(big, tmp / f"copy-{r}.db")
            copies.append(time.perf_counter() - started)
            (tmp / f"copy-{r}.db").unlink()
        print(f"  plain copy of the closed file (baseline): {median(copies):.2f} s")
        results["big_file"] = {"memories": args.memories, "bytes": size, "copy_s": median(copies)}
        targets = [("folder", {}, (tmp / "big-replica").as_uri())]
        with s3_server(tmp) as (creds, s3):
            targets.append(("S3 (moto, 127.0.0.1)", creds, s3))
            for name, extra, url in targets:
                renv = env | extra
                cli(big, renv, "replica", "set", url)
                started = time.perf_counter()
                with replicating(big, renv):
                    wait_for(lambda: caught_up(big, renv), f"the {name} replica's snapshot", 1800, every=0.5)
                shipped = time.perf_counter() - started
                raw, full = timed_restore(big, renv, url, tmp, args.repeats)
                print(f"  {name}: first snapshot shipped in {shipped:.1f} s; restore with litestream {median(raw):.2f} s"
                      f" ({median(raw) / median(copies):.1f}x the copy); `magray restore --from-replica --to`"
                      f" (restore + integrity_check + verify + doctor) {median(full):.2f} s")
                results["big_file"][name] = {"ship_s": shipped, "litestream_restore_s": median(raw),
                                             "magray_restore_s": median(full)}
    print(load_note(after=True))
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
