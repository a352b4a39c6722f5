"""Recall quality on LoCoMo dev: does search find the dialogue turn that answers a question?

Each dialogue turn becomes one memory ("Speaker: text"; project = the conversation, session = the
session, created_at = the session's date), stored through the public `magray.Memory` API in one
temporary file that every mode then searches. Each question of categories 1-4 is asked within its
own conversation; it counts as found at k when any of its evidence turns is among the top k.
Reported: R@1, R@5, R@10 overall and per category, for each mode, and on the two halves of the
conversations (tune on one, check on the other), plus the mean and median search latency.

The data (CC BY-NC 4.0) is never copied into the repo: pass its path, or keep it at
`../shared/eval/locomo-dev.json` next to the repo root.

    python bench/recall_quality.py [PATH] [--modes hybrid,vector,text] [--set text_weight=0.4]
        [--baseline] [--db FILE] [--now YYYY-MM-DD]

`--baseline` also runs, on the same file in the same run, the ranking search had before tuning
(equal-weight reciprocal rank fusion, k=60, no conversation context, FTS5's bm25()) for comparison.
Questions are asked as if on a fixed day (`--now`), so that the recency lift is the same on every
run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from magray import Memory, lifecycle  # noqa: E402
from magray.search import DEFAULT_RANKING, MODES, Ranking  # noqa: E402
from magray.types import Filters  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "eval" / "locomo-dev.json"
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
KS = (1, 5, 10)
# Turns never expire in this layer, and the dates of the data set are years in the past.
LAYER = "assets"
# Search runs as if on this day, so that the recency lift (a year's half-life in this layer, on
# turns from 2022-2023) is the same on every run, whatever the day: results stay comparable.
ASKED_ON = "2026-11-25"
BASELINE = Ranking(fusion="rrf", rrf_k=60.0, text_weight=1.0, vector_weight=1.0, next_weight=0.0,
                   previous_weight=0.0, bm25_k1=1.2, bm25_b=0.75)


@dataclasses.dataclass
class Question:
    conversation: str
    text: str
    category: int
    evidence: frozenset[str]


def session_time(text: str) -> float:
    """'1:56 pm on 8 May, 2023' as unix seconds (the data set gives no zone: read as UTC)."""
    moment = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return moment.replace(tzinfo=timezone.utc).timestamp()


def load(path: Path) -> tuple[list[dict], list[Question]]:
    """The turns as `add_many` items, and the questions of categories 1-4 that have evidence."""
    items: list[dict] = []
    questions: list[Question] = []
    for conv in json.loads(path.read_text()):
        sample, dialogue = conv["sample_id"], conv["conversation"]
        for key, turns in dialogue.items():
            if not key.startswith("session_") or key.endswith("_date_time"):
                continue
            created = session_time(dialogue[f"{key}_date_time"])
            for turn in turns:
                items.append({"content": f"{turn['speaker']}: {turn['text']}", "layer": LAYER,
                              "project": sample, "session": key, "created_at": created,
                              "metadata": {"dia_id": turn["dia_id"]}})
        for qa in conv["qa"]:
            evidence = frozenset(e.strip() for entry in qa.get("evidence", [])
                                 for e in str(entry).split(";") if e.strip())
            if qa["category"] in CATEGORIES and evidence:
                questions.append(Question(sample, qa["question"], qa["category"], evidence))
    return items, questions


def build(memory: Memory, items: list[dict]) -> dict[int, set[str]]:
    """Store the turns; memory id -> the turn ids it holds (a turn repeated word for word in the
    same conversation, like "Bye!", is stored once and answers for every copy; a near-duplicate
    kept as an alias also answers through the memory it was merged into, which search reports
    in its place)."""
    turns: dict[int, set[str]] = defaultdict(set)
    for item, result in zip(items, memory.add_many(items)):
        turns[result.id].add(item["metadata"]["dia_id"])
    for alias, survivor in lifecycle.survivors(memory.connection, list(turns)).items():
        turns[survivor] |= turns[alias]
    return turns


@dataclasses.dataclass
class Outcome:
    question: Question
    rank: int | None  # 1-based rank of the first evidence turn in the top 10, None if absent
    seconds: float


def ask(memory: Memory, questions: list[Question], turns: dict[int, set[str]], mode: str,
        ranking: Ranking, min_score: float | None = None) -> list[Outcome]:
    outcomes = []
    for q in questions:
        start = time.perf_counter()
        hits = memory.search(q.text, k=max(KS), mode=mode, filters=Filters(project=q.conversation),
                             touch=False, ranking=ranking, min_score=min_score)
        elapsed = time.perf_counter() - start
        found = next((i for i, h in enumerate(hits, start=1) if turns[h.memory.id] & q.evidence), None)
        outcomes.append(Outcome(q, found, elapsed))
    return outcomes


def recall(outcomes: list[Outcome]) -> list[float]:
    n = len(outcomes) or 1
    return [sum(o.rank is not None and o.rank <= k for o in outcomes) / n for k in KS]


def halves(questions: list[Question]) -> dict[str, set[str]]:
    """Conversations in file order, alternately into half A (tuning) and half B (held out)."""
    order = list(dict.fromkeys(q.conversation for q in questions))
    return {"A": set(order[0::2]), "B": set(order[1::2])}


def report(mode: str, outcomes: list[Outcome], split: dict[str, set[str]]) -> list[str]:
    rows = []

    def row(label: str, subset: list[Outcome]) -> None:
        r1, r5, r10 = recall(subset)
        rows.append(f"| {mode} | {label} | {len(subset)} | {r1:.3f} | {r5:.3f} | {r10:.3f} |")

    row("all", outcomes)
    for cat, name in CATEGORIES.items():
        row(f"cat {cat} {name}", [o for o in outcomes if o.question.category == cat])
    for half, convs in split.items():
        row(f"half {half} ({', '.join(sorted(convs))})",
            [o for o in outcomes if o.question.conversation in convs])
    return rows


def parse_overrides(pairs: list[str]) -> Ranking:
    """`name=value` pairs over the default Ranking (tuples as comma lists)."""
    changes = {}
    types = {f.name: f.type for f in dataclasses.fields(Ranking)}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types:
            raise SystemExit(f"unknown Ranking field {name!r}: {', '.join(types)}")
        current = getattr(DEFAULT_RANKING, name)
        if isinstance(current, tuple):
            changes[name] = tuple(float(v) for v in value.split(","))
        elif isinstance(current, str):
            changes[name] = value
        else:
            changes[name] = float(value)
    return dataclasses.replace(DEFAULT_RANKING, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--modes", default="text,vector,hybrid")
    parser.add_argument("--model", default=os.environ.get("MAGRAY_MODEL") or str(DEFAULT_MODEL))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a Ranking field for this run (repeatable)")
    parser.add_argument("--baseline", action="store_true",
                        help="also run the untuned ranking (RRF k=60, no context) for comparison")
    parser.add_argument("--now", default=ASKED_ON, metavar="YYYY-MM-DD",
                        help=f"the day the questions are asked on, UTC (default {ASKED_ON})")
    parser.add_argument("--db", type=Path, help="keep the memory file here and reuse it on the next "
                        "run (default: a temporary file)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}")
    rankings = {"default" if not args.set else "custom": parse_overrides(args.set)}
    if args.baseline:
        rankings["baseline"] = BASELINE

    now = datetime.strptime(args.now, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
    items, questions = load(args.data)
    split = halves(questions)
    with tempfile.TemporaryDirectory() as tmp, \
            Memory.open(args.db or Path(tmp) / "locomo.db", profile="fast", model=args.model,
                        clock=lambda: now) as memory:
        start = time.perf_counter()
        # On a reused file every turn is already there: this only maps ids (vectors from the cache).
        turns = build(memory, items)
        built = time.perf_counter() - start
        print(f"stored {len(items)} turns as {len(turns)} memories in {built:.1f} s; "
              f"{len(questions)} questions; model {Path(args.model).name}")
        # Embed every question once, untimed by the modes, so that each mode is timed on the same
        # footing (the query vector from the embedding cache) and the model cost is shown apart.
        start = time.perf_counter()
        for q in questions:
            memory.search(q.text, k=1, mode="vector", touch=False, filters=Filters(project=q.conversation))
        embed_ms = (time.perf_counter() - start) * 1000 / len(questions)
        for name, ranking in rankings.items():
            print(f"{name} ranking: {ranking}")
        lines = ["| mode | questions | n | R@1 | R@5 | R@10 |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        latency = []
        for mode in modes:
            for name, ranking in rankings.items():
                label = mode if len(rankings) == 1 else f"{mode} ({name})"
                if mode == "vector" and name == "baseline":
                    continue  # fusion and context do not touch a vector-only ranking
                outcomes = ask(memory, questions, turns, mode, ranking)
                lines += report(label, outcomes, split)
                ms = [o.seconds * 1000 for o in outcomes]
                latency.append(f"| {label} | {statistics.mean(ms):.1f} | {statistics.median(ms):.1f} |")
        print("\n".join(lines))
        print("\n| mode | mean search ms | median search ms |\n| --- | ---: | ---: |")
        print("\n".join(latency))
        print(f"\nfirst vector search of each question, embedding the query: {embed_ms:.1f} ms mean")


if __name__ == "__main__":
    main()
