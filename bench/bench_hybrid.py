"""Search latency through the public API, `Memory.search(..., touch=False)`, at 10K and 100K
memories: hybrid (BM25 + vector KNN, fused), vector only, text only, and hybrid under a project
filter. The query embedding is timed on its own: each query is searched once first (embedding
it and filling the cache), so the timed searches find their vector in the cache.

The files are filled in bulk (records.insert + vectors.insert_chunks) with random texts from a
small vocabulary and vectors shaped like real embeddings, instead of embedding every text.

    python bench/bench_hybrid.py [--quick] [--sizes 10000,100000] [--queries 30]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (build_store, load_note, median, mixed_vectors, model_path, percentile,  # noqa: E402
                    random_text, sentences)

from magray.embed.embedder import Embedder  # noqa: E402
from magray.types import Filters  # noqa: E402

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10K memories only, 10 queries")
    parser.add_argument("--sizes", default=None, help="comma-separated memory counts (default 10000,100000)")
    parser.add_argument("--queries", type=int, default=None, help="queries (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each query")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000" if args.quick else "10000,100000")).split(",")]
    n_queries = args.queries or (10 if args.quick else 30)

    print(load_note())
    embedder = Embedder(model_path(), device="cpu")
    base = embedder.embed(sentences(500, seed=3))
    embedder.close()
    rng = random.Random(5)
    # Half the queries are short keyword queries, half whole sentences (FTS and vectors both work).
    queries = [random_text(rng, rng.randint(2, 4)) for _ in range(n_queries // 2)]
    queries += sentences(n_queries - len(queries), seed=11)
    results: dict = {"queries": n_queries, "repeats": args.repeats, "sizes": {}}
    for n in sizes:
        contents = [random_text(rng, rng.randint(8, 30)) + f" #{i}" for i in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            mem = build_store(Path(tmp) / "hybrid.db", mixed_vectors(base, n, seed=n), contents)
            print(f"{n:,} memories (built in {time.perf_counter() - start:.1f} s), {n_queries} queries, "
                  f"{args.repeats} repeats, k={K}", flush=True)
            first = []
            for q in queries:
                start = time.perf_counter()
                mem.search(q, k=K, touch=False)
                first.append(time.perf_counter() - start)
            row: dict = {}
            variants = [("hybrid", "hybrid", Filters()), ("vector", "vector", Filters()),
                        ("text", "text", Filters()), ("hybrid, project filter (1%)", "hybrid",
                                                       Filters(project="p7"))]
            for name, mode, filters in variants:
                per_query = []
                for q in queries:
                    times = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        hits = mem.search(q, k=K, mode=mode, filters=filters, touch=False)
                        times.append(time.perf_counter() - start)
                    assert hits or mode == "text", f"no hits for {q!r}"  # text: maybe no shared word
                    per_query.append(median(times))
                row[name] = {"p50_ms": round(median(per_query) * 1000, 2),
                             "p95_ms": round(percentile(per_query, 95) * 1000, 2)}
                print(f"  {name:30s} p50 {row[name]['p50_ms']:8.2f} ms  p95 {row[name]['p95_ms']:8.2f} ms",
                      flush=True)
            hybrid = row["hybrid"]["p50_ms"] / 1000
            embed_ms = max(0.0, median(first) - hybrid) * 1000
            row["first search (embeds the query)"] = {"p50_ms": round(median(first) * 1000, 2)}
            row["query embedding (first - cached hybrid)"] = {"p50_ms": round(embed_ms, 2)}
            print(f"  first search of each query (embeds it): p50 {median(first) * 1000:.2f} ms, "
                  f"so the query embedding costs about {embed_ms:.2f} ms", flush=True)
            results["sizes"][n] = row
            mem.close()
    print(load_note(after=True))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
