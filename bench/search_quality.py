"""Search quality on every dev set in one run: paraphrase recall, LoCoMo recall, time-aware recall,
the relevance floor's trade-off, and hybrid search latency.

- paraphrase-dev: 80 memories stored together, each asked for in other words (R@1, R@5 per mode).
- LoCoMo dev (bench/recall_quality.py's protocol): R@1, R@5 per mode, hybrid latency.
- temporal-dev: 40 dated memories, 25 questions with a time phrase asked at their `now` (R@1,
  R@3), and 15 unrelated questions that should be answered with nothing.
- the floor: every search runs with min_score=0 and keeps the relevance of its hits, so the
  recall with any floor, and the unrelated questions it silences, follow from one run.

The data sets live in `../shared/eval/` beside the repo (LoCoMo is never copied into the repo).

    python bench/search_quality.py [--set NAME=VALUE ...] [--db-dir DIR] [--skip-locomo]
        [--grid NAME=V1,V2 ...] [--floors 0.10,0.12,...]

`--set` overrides a Ranking field (as in recall_quality.py); `--grid` measures every combination
of the values given (hybrid only); `--db-dir` keeps the three memory files there, so that a second
run re-embeds nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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
DEFAULT_FLOORS = (0.10, 0.11, 0.12, 0.125, 0.13, 0.134, 0.14, 0.15, 0.16)
GOALS = {  # issue 13's goals, printed beside the measures
    "paraphrase hybrid R@1": ">= 0.92 and >= vector R@1",
    "paraphrase hybrid R@5": ">= 0.98",
    "LoCoMo hybrid R@5": ">= 0.72 and >= text, vector",
    "temporal hybrid R@1": ">= 0.85",
    "temporal hybrid R@3": ">= 0.95",
    "unrelated answered with nothing": ">= 12 / 15",
    "paraphrase R@5 lost to the floor": "<= 0.01",
    "LoCoMo R@5 lost to the floor": "<= 0.01",
    "LoCoMo hybrid search ms (median)": "no slower than before (8 ms)",
}

# One search's outcome: for each of the top 10 hits (with no floor), whether it is a right answer
# and its relevance (the fused score the floor compares).
Hits = list[tuple[bool, float]]


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def outcome(hits, right) -> Hits:
    return [(right(h.memory.id), float(h.parts["fused"])) for h in hits]


def recall_at(searches: list[Hits], k: int, floor: float) -> float:
    """Share of searches with a right answer in the first k hits that pass the floor."""
    found = 0
    for hits in searches:
        kept = [is_right for is_right, relevance in hits if relevance >= floor]
        found += any(kept[:k])
    return found / max(len(searches), 1)


def silenced(searches: list[Hits], floor: float) -> int:
    return sum(all(relevance < floor for _, relevance in hits) for hits in searches)


class Sets:
    """The three memory files, built once, and the questions of each."""

    def __init__(self, folder: Path, model: str, locomo: bool) -> None:
        self.clock = {"now": stamp("2026-11-29T12:00:00Z")}
        pairs = [json.loads(x) for x in (EVAL / "paraphrase-dev.jsonl").read_text().splitlines() if x.strip()]
        self.para = Memory.open(folder / "paraphrase.db", profile="fast", model=model, clock=lambda: self.clock["now"])
        ids = [r.id for r in self.para.add_many({"content": p["memory"], "layer": "insights"} for p in pairs)]
        self.para_questions = [(p["query"], i) for p, i in zip(pairs, ids)]

        lines = [json.loads(x) for x in (EVAL / "temporal-dev.jsonl").read_text().splitlines() if x.strip()]
        self.temporal = Memory.open(folder / "temporal.db", profile="fast", model=model,
                                    clock=lambda: self.clock["now"], timezone="UTC")
        known = {m.content: m.id for m in self.temporal.list(limit=1000)}
        by_name = {}
        for line in lines:
            if line["type"] == "memory":
                if line["content"] not in known:
                    self.clock["now"] = stamp(line["created_at"])
                    known[line["content"]] = self.temporal.add(line["content"], layer="assets",
                                                               created_at=stamp(line["created_at"])).id
                by_name[line["id"]] = known[line["content"]]
        self.temporal_questions = [(x["query"], stamp(x["now"]), {by_name[e] for e in x["expected"]})
                                   for x in lines if x["type"] == "query"]
        self.unrelated = [x["query"] for x in lines if x["type"] == "unrelated"]

        self.locomo = None
        if locomo:
            now = stamp(recall_quality.ASKED_ON + "T00:00:00Z")
            items, self.locomo_questions = recall_quality.load(recall_quality.DEFAULT_DATA)
            self.locomo = Memory.open(folder / "locomo.db", profile="fast", model=model, clock=lambda: now)
            self.turns = recall_quality.build(self.locomo, items)
            for q in self.locomo_questions:  # every query vector into the cache: latency is search alone
                self.locomo.search(q.text, k=1, mode="vector", touch=False, filters=Filters(project=q.conversation))

    def close(self) -> None:
        for mem in (self.para, self.temporal, self.locomo):
            if mem is not None:
                mem.close()

    def measure(self, ranking, modes=("hybrid", "vector", "text")) -> dict[str, object]:
        out: dict[str, object] = {}
        self.clock["now"] = stamp("2026-11-29T12:00:00Z")
        for mode in modes:
            out[f"paraphrase {mode}"] = [outcome(self.para.search(q, k=10, mode=mode, touch=False, ranking=ranking,
                                                                  min_score=0), lambda i, r=right: i == r)
                                         for q, right in self.para_questions]
        temporal = []
        for query, now, expected in self.temporal_questions:
            self.clock["now"] = now
            temporal.append(outcome(self.temporal.search(query, k=10, touch=False, ranking=ranking, min_score=0),
                                    lambda i, e=expected: i in e))
        out["temporal hybrid"] = temporal
        self.clock["now"] = stamp("2026-11-29T12:00:00Z")
        # Asked the way a user asks: the floor decides, so the time windows behave as they would.
        out["unrelated"] = [outcome(self.temporal.search(q, k=10, touch=False, ranking=ranking, min_score=0),
                                    lambda i: False) for q in self.unrelated]
        if self.locomo is not None:
            for mode in modes:
                searches, ms = [], []
                for q in self.locomo_questions:
                    start = time.perf_counter()
                    hits = self.locomo.search(q.text, k=10, mode=mode, filters=Filters(project=q.conversation),
                                              touch=False, ranking=ranking, min_score=0)
                    ms.append((time.perf_counter() - start) * 1000)
                    searches.append(outcome(hits, lambda i, q=q: bool(self.turns[i] & q.evidence)))
                out[f"LoCoMo {mode}"] = searches
                out[f"LoCoMo {mode} ms"] = statistics.median(ms)
        return out


def table(measured: dict[str, object], floor: float) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for mode in ("hybrid", "vector", "text"):
        if f"paraphrase {mode}" in measured:
            rows += [(f"paraphrase {mode} R@1", recall_at(measured[f"paraphrase {mode}"], 1, floor if mode != "text" else 0)),
                     (f"paraphrase {mode} R@5", recall_at(measured[f"paraphrase {mode}"], 5, floor if mode != "text" else 0))]
    rows += [("paraphrase R@5 lost to the floor",
              recall_at(measured["paraphrase hybrid"], 5, 0) - recall_at(measured["paraphrase hybrid"], 5, floor))]
    rows += [("temporal hybrid R@1", recall_at(measured["temporal hybrid"], 1, floor)),
             ("temporal hybrid R@3", recall_at(measured["temporal hybrid"], 3, floor)),
             ("unrelated answered with nothing", f"{silenced(measured['unrelated'], floor)} / {len(measured['unrelated'])}")]
    if "LoCoMo hybrid" in measured:
        for mode in ("hybrid", "vector", "text"):
            if f"LoCoMo {mode}" in measured:
                rows += [(f"LoCoMo {mode} R@1", recall_at(measured[f"LoCoMo {mode}"], 1, floor if mode != "text" else 0)),
                         (f"LoCoMo {mode} R@5", recall_at(measured[f"LoCoMo {mode}"], 5, floor if mode != "text" else 0))]
        rows += [("LoCoMo R@5 lost to the floor",
                  recall_at(measured["LoCoMo hybrid"], 5, 0) - recall_at(measured["LoCoMo hybrid"], 5, floor)),
                 ("LoCoMo hybrid search ms (median)", measured["LoCoMo hybrid ms"])]
    return rows


def shown(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("MAGRAY_MODEL") or str(recall_quality.DEFAULT_MODEL))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="measure every combination of these Ranking values (hybrid only)")
    parser.add_argument("--floors", default=",".join(map(str, DEFAULT_FLOORS)),
                        help="floors of the trade-off table")
    parser.add_argument("--db-dir", type=Path, help="keep the memory files here and reuse them")
    parser.add_argument("--skip-locomo", action="store_true")
    args = parser.parse_args()
    ranking = recall_quality.parse_overrides(args.set)
    print(f"ranking: {ranking}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.db_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        sets = Sets(folder, args.model, not args.skip_locomo)
        try:
            if args.grid:
                grid(sets, ranking, args.grid)
            else:
                measured = sets.measure(ranking)
                print("\n| measure | value | goal |\n| --- | ---: | --- |")
                for name, value in table(measured, ranking.min_score):
                    print(f"| {name} | {shown(value)} | {GOALS.get(name, '')} |")
                floors = [float(f) for f in args.floors.split(",")]
                print("\nThe floor's trade-off (hybrid):\n\n| min_score | unrelated silenced | paraphrase R@5 lost "
                      "| LoCoMo R@5 lost | temporal R@1 |\n| ---: | ---: | ---: | ---: | ---: |")
                for floor in floors:
                    lost_locomo = (recall_at(measured["LoCoMo hybrid"], 5, 0) - recall_at(measured["LoCoMo hybrid"], 5, floor)
                                   if "LoCoMo hybrid" in measured else float("nan"))
                    print(f"| {floor:g} | {silenced(measured['unrelated'], floor)} / {len(measured['unrelated'])} | "
                          f"{recall_at(measured['paraphrase hybrid'], 5, 0) - recall_at(measured['paraphrase hybrid'], 5, floor):.3f} | "
                          f"{lost_locomo:.3f} | {recall_at(measured['temporal hybrid'], 1, floor):.3f} |")
        finally:
            sets.close()
    print(f"\n{time.perf_counter() - start:.0f} s")


def grid(sets: Sets, base, axes: list[str]) -> None:
    names, values = [], []
    for axis in axes:
        name, _, listed = axis.partition("=")
        names.append(name)
        values.append([float(v) for v in listed.split(",")])
    print("\n| " + " | ".join(names) + " | paraphrase R@1 | paraphrase R@5 | LoCoMo R@1 | LoCoMo R@5 | "
          "temporal R@1 | unrelated silenced |\n|" + " ---: |" * (len(names) + 6))
    for combination in itertools.product(*values):
        ranking = dataclasses.replace(base, **dict(zip(names, combination)))
        m = sets.measure(ranking, modes=("hybrid",))
        locomo = (f"{recall_at(m['LoCoMo hybrid'], 1, 0):.3f} | {recall_at(m['LoCoMo hybrid'], 5, 0):.3f}"
                  if "LoCoMo hybrid" in m else "- | -")
        print("| " + " | ".join(f"{v:g}" for v in combination)
              + f" | {recall_at(m['paraphrase hybrid'], 1, 0):.3f} | {recall_at(m['paraphrase hybrid'], 5, 0):.3f} | "
              f"{locomo} | {recall_at(m['temporal hybrid'], 1, 0):.3f} | "
              f"{silenced(m['unrelated'], ranking.min_score)} / {len(m['unrelated'])} |", flush=True)


if __name__ == "__main__":
    main()
