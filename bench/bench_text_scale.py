"""The text side at scale, on the files `bench_scale.py --db DIR` keeps: search latency, and what
the posting budget (`Ranking.text_budget`) costs in quality.

- latency: `Memory.search(k=10, touch=False)` p50 over bench_scale's 30 questions (median of
  `--repeats` per question), text and hybrid, unfiltered and with a 1% project filter (p7);
- quality (`--budgets`): the text top 10 of `fulltext.text_candidates` against the top 10 of every
  memory that holds a query word, each scored by `TextScorer` (exact document frequencies):
  the share of the exact top 10's summed BM25 that the top 10 found reaches, how many of them
  score at least the exact 10th, whether the first scores as the exact first; unfiltered and in
  the 1% project; with the p50 of the text side alone (`TextScorer` and `text_candidates`).

    python bench/bench_text_scale.py --db DIR [--sizes 100000,1000000] [--repeats 3]
        [--budgets 0,2000,5000,10000] [--magray SRC]

A budget of 0 stands for no bound. `--magray SRC` times the magray of another source tree (an
older checkout, for a before/after on the same machine state; quality needs `text_budget`, so it is left
out for a tree without it). Each size reads DIR/scale-<n>-ann.db, else DIR/scale-<n>.db; the
timed searches write the query embeddings into its cache, the quality part only reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="the folder bench_scale.py --db kept")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budgets", default="0,2000,5000,10000", help="text budgets to rate ('' for none)")
    parser.add_argument("--magray", type=Path, default=HERE.parent, help="the source tree to import magray from")
    args = parser.parse_args()
    sys.path.insert(0, str(args.magray.resolve()))
    from magray import Memory, search  # first: bench_scale puts this tree's magray on the path
    from magray.types import Filters

    sys.path.insert(1, str(HERE))
    from bench_scale import K, NOW, QUESTIONS
    from common import load_note

    print(load_note())
    print(f"magray from {Path(search.__file__).parent}")
    budgets = [int(b) for b in args.budgets.split(",") if b] if hasattr(search.Ranking, "text_budget") else []
    for n in (int(s) for s in args.sizes.split(",")):
        path = next(p for p in (args.db / f"scale-{n}-ann.db", args.db / f"scale-{n}.db") if p.exists())
        with Memory.open(path, profile="fast", clock=lambda: NOW) as mem:
            for q in QUESTIONS:  # embeds each question once: the timed searches read the cache
                mem.search(q, k=K, touch=False)
            row = {}
            for label, mode, filters in (("text", "text", Filters()), ("hybrid", "hybrid", Filters()),
                                         ("text, 1% project", "text", Filters(project="p7")),
                                         ("hybrid, 1% project", "hybrid", Filters(project="p7"))):
                per_query = []
                for q in QUESTIONS:
                    times = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        mem.search(q, k=K, mode=mode, filters=filters, touch=False)
                        times.append(time.perf_counter() - start)
                    per_query.append(statistics.median(times))
                row[label] = statistics.median(per_query) * 1000
            print(f"{path.name}: p50 " + ", ".join(f"{k} {v:.1f} ms" for k, v in row.items()), flush=True)
            if budgets:
                quality(mem.connection, search, Filters, QUESTIONS, NOW, budgets)
    print(load_note(after=True))


def quality(conn, search, Filters, questions, now, budgets) -> None:
    from magray import fulltext  # a tree with a text budget has it

    exact_ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=10**12)
    project = {r[0] for r in conn.execute("SELECT id FROM memories WHERE project = 'p7'")}
    for scope, filters in (("all", Filters()), ("1% project", Filters(project="p7"))):
        rows: dict[int, list] = {b: [] for b in budgets}
        for q in questions:
            exact = fulltext.TextScorer(conn, fulltext.query_words(q), exact_ranking)
            ids = [r[0] for r in conn.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?",
                                              (fulltext.fts_query(q),)) if scope == "all" or r[0] in project]
            best = sorted((h.bm25 for i in range(0, len(ids), 5000) for h in exact.score(ids[i:i + 5000])),
                          reverse=True)[:10]
            for budget in budgets:
                ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=budget or 10**12)
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    scorer = fulltext.TextScorer(conn, fulltext.query_words(q), ranking)
                    hits = fulltext.text_candidates(conn, q, filters, now, 50, ranking, scorer)[:10]
                    times.append(time.perf_counter() - start)
                found = sorted((h.bm25 for h in exact.score([h.memory_id for h in hits])), reverse=True)
                rows[budget].append((sum(found) / sum(best), sum(s >= best[-1] - 1e-9 for s in found) / len(best),
                                     found[0] >= best[0] - 1e-9, min(times) * 1000))
        for budget, got in rows.items():
            share, at_least, first, ms = zip(*got)
            print(f"  {scope}, budget {budget or 'none'}: top-10 score share {statistics.mean(share):.4f} "
                  f"(worst {min(share):.3f}), >= exact 10th {statistics.mean(at_least):.3f}, "
                  f"first {statistics.mean(first):.3f}; text side p50 {statistics.median(ms):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
