"""Throughput of several processes on one memory file: writers (add + tag) and readers (hybrid/text
search + filtered list + a whole-file consistency check each), real processes, real model.

Each configuration runs `--repeats` times on a fresh file; every process loads the model first and
all start together on "go", so the time measured is the work, not the start-up. Prints medians and
the ratio of each configuration's write rate to one writer alone, measured in the same run.

    PYTHONPATH=. python bench/bench_concurrency.py [--ops 40] [--repeats 3] [--profile safe]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.reliability import consistency, run_workers, subprocess_env  # noqa: E402

CONFIGS = [(1, 0), (4, 0), (1, 4), (4, 4)]  # (writers, readers); the first is the baseline


def measure(writers: int, readers: int, ops: int, repeats: int, profile: str) -> dict:
    walls, write_rates, read_rates = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            run = run_workers(tmp_path / "bench.db", subprocess_env(tmp_path), writers=writers,
                              readers=readers, count=ops, profile=profile)
            failed = [r["stderr"][-500:] for r in run["results"] if r["rc"] != 0]
            if failed:
                raise SystemExit(f"a worker failed: {failed[0]}")
            problems, _ = consistency(tmp_path / "bench.db")
            if problems:
                raise SystemExit(f"inconsistent file after the run: {problems}")
        walls.append(run["wall"])
        write_rates.append(run["write_ops"] / run["wall"])
        read_rates.append(run["read_ops"] / run["wall"])
    return {"wall": statistics.median(walls), "writes": statistics.median(write_rates),
            "reads": statistics.median(read_rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=40, help="operations per process (default 40)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", default="safe", choices=("safe", "balanced", "fast"))
    args = parser.parse_args()
    print(f"profile {args.profile}, {args.ops} operations per process, median of {args.repeats} runs")
    print("| writers | readers | wall (s) | writes/s | reads/s | writes/s vs 1 writer |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    baseline = None
    for writers, readers in CONFIGS:
        m = measure(writers, readers, args.ops, args.repeats, args.profile)
        baseline = baseline or m["writes"]
        print(f"| {writers} | {readers} | {m['wall']:.2f} | {m['writes']:.1f} | {m['reads']:.1f} | "
              f"{m['writes'] / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
