"""Search quality on every dev set in one run: paraphrase recall, LoCoMo recall, time-aware recall,
the relevance floor's trade-off, and hybrid search latency.

- paraphrase-dev: 80 memories stored together, each asked for in other words (R@1, R@5 per mode).
- LoCoMo dev (bench/recall_quality.py's protocol): R@5 per mode, hybrid latency.
- temporal-dev: 40 dated memories, 25 questions with a time phrase asked at their `now` (R@1,
  R@3), and 15 unrelated questions that should be answered with nothing.
- the floor: right answers lost by it (R@5 with the default floor against min_score=0).

The data sets live in `../shared/eval/` beside the repo (LoCoMo is never copied into the repo).

    python bench/search_quality.py [--set NAME=VALUE ...] [--db-dir DIR] [--skip-locomo]

`--set` overrides a Ranking field for this run (as in recall_quality.py); `--db-dir` keeps the
three memory files there, so that a second run re-embeds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import recall_quality  # noqa: E402

from magray import Memory  # noqa: E402
from magray.types import Filters  # noqa: E402

EVAL = REPO.parent / "shared" / "eval"
GOALS = {  # issue 13's goals, printed beside the measures
    "paraphrase hybrid R@1": ">= 0.92 and >= vector R@1",
    "paraphrase hybrid R@5": ">= 0.98",
    "LoCoMo hybrid R@5": ">= 0.72 and >= text, vector",
    "temporal R@1": ">= 0.85",
    "temporal R@3": ">= 0.95",
    "unrelated answered with nothing": ">= 12 / 15",
    "paraphrase R@5 lost to the floor": "<= 0.01",
    "LoCoMo R@5 lost to the floor": "<= 0.01",
}


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def recall_at(ranks: list[int | None], k: int) -> float:
    return sum(r is not None and r <= k for r in ranks) / max(len(ranks), 1)


def first_rank(hits, wanted: set[int]) -> int | None:
    return next((i for i, h in enumerate(hits, start=1) if h.memory.id in wanted), None)


def paraphrase(path: Path, model: str, ranking, rows: dict) -> None:
    pairs = [json.loads(line) for line in (EVAL / "paraphrase-dev.jsonl").read_text().splitlines() if line.strip()]
    now = stamp("2026-11-29T12:00:00Z")
    with Memory.open(path, profile="fast", model=model, clock=lambda: now) as memory:
        ids = [r.id for r in memory.add_many({"content": p["memory"], "layer": "insights"} for p in pairs)]
        for mode in ("hybrid", "vector", "text"):
            for floor in (None, 0.0):
                ranks = [first_rank(memory.search(p["query"], k=10, mode=mode, touch=False, ranking=ranking,
                                                  min_score=floor), {i}) for p, i in zip(pairs, ids)]
                label = "" if floor is None else " (no floor)"
                rows[f"paraphrase {mode} R@1{label}"] = recall_at(ranks, 1)
                rows[f"paraphrase {mode} R@5{label}"] = recall_at(ranks, 5)
    rows["paraphrase R@5 lost to the floor"] = (rows["paraphrase hybrid R@5 (no floor)"]
                                                - rows["paraphrase hybrid R@5"])


def temporal(path: Path, model: str, ranking, rows: dict) -> None:
    lines = [json.loads(line) for line in (EVAL / "temporal-dev.jsonl").read_text().splitlines() if line.strip()]
    clock = {"now": 0.0}
    with Memory.open(path, profile="fast", model=model, clock=lambda: clock["now"], timezone="UTC") as memory:
        ids = {}
        for line in lines:
            if line["type"] == "memory":
                created = stamp(line["created_at"])
                clock["now"] = created
                ids[line["id"]] = memory.add(line["content"], layer="assets", created_at=created).id
        ranks, silenced, unrelated = [], 0, 0
        for line in lines:
            if line["type"] == "query":
                clock["now"] = stamp(line["now"])
                hits = memory.search(line["query"], k=10, touch=False, ranking=ranking)
                ranks.append(first_rank(hits, {ids[e] for e in line["expected"]}))
            elif line["type"] == "unrelated":
                clock["now"] = stamp("2026-11-29T12:00:00Z")
                unrelated += 1
                silenced += not memory.search(line["query"], k=10, touch=False, ranking=ranking)
        rows["temporal R@1"] = recall_at(ranks, 1)
        rows["temporal R@3"] = recall_at(ranks, 3)
        rows["unrelated answered with nothing"] = f"{silenced} / {unrelated}"


def locomo(path: Path, model: str, ranking, rows: dict) -> None:
    now = stamp(recall_quality.ASKED_ON + "T00:00:00Z")
    items, questions = recall_quality.load(recall_quality.DEFAULT_DATA)
    with Memory.open(path, profile="fast", model=model, clock=lambda: now) as memory:
        turns = recall_quality.build(memory, items)
        for q in questions:  # every query vector into the cache, so that latency is search alone
            memory.search(q.text, k=1, mode="vector", touch=False, filters=Filters(project=q.conversation))
        for mode in ("hybrid", "vector", "text"):
            outcomes = recall_quality.ask(memory, questions, turns, mode, ranking)
            rows[f"LoCoMo {mode} R@5"] = recall_quality.recall(outcomes)[1]
            if mode == "hybrid":
                rows["LoCoMo hybrid R@1"] = recall_quality.recall(outcomes)[0]
                ms = [o.seconds * 1000 for o in outcomes]
                rows["LoCoMo hybrid search ms (median)"] = statistics.median(ms)
        unfloored = recall_quality.ask(memory, questions, turns, "hybrid", ranking, min_score=0.0)
        rows["LoCoMo hybrid R@5 (no floor)"] = recall_quality.recall(unfloored)[1]
        rows["LoCoMo R@5 lost to the floor"] = rows["LoCoMo hybrid R@5 (no floor)"] - rows["LoCoMo hybrid R@5"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("MAGRAY_MODEL") or str(recall_quality.DEFAULT_MODEL))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--db-dir", type=Path, help="keep the memory files here and reuse them")
    parser.add_argument("--skip-locomo", action="store_true")
    args = parser.parse_args()
    ranking = recall_quality.parse_overrides(args.set)
    print(f"ranking: {ranking}")
    rows: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.db_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        paraphrase(folder / "paraphrase.db", args.model, ranking, rows)
        temporal(folder / "temporal.db", args.model, ranking, rows)
        if not args.skip_locomo:
            locomo(folder / "locomo.db", args.model, ranking, rows)
    print("| measure | value | goal |\n| --- | ---: | --- |")
    for name, value in rows.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"| {name} | {shown} | {GOALS.get(name, '')} |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
