"""Hybrid search latency on LoCoMo dev against an earlier magray, in the same run.

Each side (this checkout, and `--baseline`, a checkout of an earlier commit, e.g.
`git worktree add ../magray-base 2dec480`) runs in its own subprocess on its own memory file
(built once in --db-dir, query vectors cached), asks every question in hybrid mode (k=10, no
uses counted), and reports the median search time. Sides alternate, `--repeats` times; the
medians of the repeats and their ratio are printed, with the load average.

    python bench/bench_search_latency.py --baseline ../magray-base [--repeats 3] [--db-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SIDE = r"""
import json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(Path(sys.argv[1]) / "bench"))
import recall_quality as rq
from datetime import datetime, timezone
from magray import Memory
from magray.types import Filters
now = datetime.strptime(rq.ASKED_ON, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
items, questions = rq.load(Path(sys.argv[3]))
with Memory.open(sys.argv[2], profile="fast", model=sys.argv[4], clock=lambda: now) as memory:
    rq.build(memory, items)
    for q in questions:
        memory.search(q.text, k=10, mode="hybrid", filters=Filters(project=q.conversation), touch=False)
    ms = []
    for q in questions:
        start = time.perf_counter()
        memory.search(q.text, k=10, mode="hybrid", filters=Filters(project=q.conversation), touch=False)
        ms.append((time.perf_counter() - start) * 1000)
print(json.dumps({"median_ms": statistics.median(ms), "mean_ms": statistics.mean(ms)}))
"""


def side(repo: Path, db: Path, data: Path, model: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(repo), MAGRAY_THREADS=os.environ.get("MAGRAY_THREADS", "1"))
    proc = subprocess.run([sys.executable, "-c", SIDE, str(repo), str(db), str(data), model],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the earlier magray")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db-dir", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "eval" / "locomo-dev.json")
    parser.add_argument("--model", default=str(REPO.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.db_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        runs: dict[str, list[float]] = {"baseline": [], "current": []}
        for _ in range(args.repeats):
            for name, repo in (("baseline", args.baseline.resolve()), ("current", REPO)):
                runs[name].append(side(repo, folder / f"{name}.db", args.data, args.model)["median_ms"])
                print(f"{name}: {runs[name][-1]:.2f} ms (load {os.getloadavg()[0]:.2f})", flush=True)
    base, current = statistics.median(runs["baseline"]), statistics.median(runs["current"])
    print(f"\n| side | median of {args.repeats} medians (ms) |\n| --- | ---: |")
    print(f"| baseline | {base:.2f} |\n| current | {current:.2f} |")
    print(f"\ncurrent / baseline: {current / base:.2f}x; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
