"""Vector KNN at 100K memories, side by side in one run: numpy brute force (the exact answer),
plain vec0 float brute force, one unsharded bit-vector pass + re-rank, and magray's `vectors.knn`
(sharded bit pass + exact re-rank) for several candidate pools; recall@10 against exact search,
unfiltered and under a project filter that matches 1% of the memories; `vectors.exact` over 1%.

    python bench/bench_vector.py [--quick] [--n 100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import build_store, load_note, median, mixed_vectors, model_path, percentile, sentences  # noqa: E402

from magray import vectors  # noqa: E402
from magray.embed.embedder import Embedder  # noqa: E402
from magray.types import Filters  # noqa: E402

K = 10
POOLS = (64, 128, 256, 512, 1024)


def recall(found: list[int], truth: list[int]) -> float:
    return len(set(found[:K]) & set(truth)) / max(1, min(K, len(truth)))


def measure(name: str, queries: np.ndarray, truth: list[list[int]], search, repeats: int) -> dict:
    """Each query `repeats` times; p50/p95 over queries of their median time; mean recall@10;
    and whether every query got K results."""
    per_query, recalls, full = [], [], True
    for q, t in zip(queries, truth):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ids = search(q)
            times.append(time.perf_counter() - start)
        per_query.append(median(times))
        if t is not None:
            recalls.append(recall(ids, t))
            full &= len(ids) >= min(K, len(t))
    row = {"method": name, "p50_ms": round(median(per_query) * 1000, 2),
           "p95_ms": round(percentile(per_query, 95) * 1000, 2),
           "recall@10": round(float(np.mean(recalls)), 3) if recalls else None, "always_k": full}
    print(f"  {name:44s} p50 {row['p50_ms']:8.2f} ms  p95 {row['p95_ms']:8.2f} ms  "
          f"recall@10 {row['recall@10']}  always k: {full}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10K memories, 20 queries")
    parser.add_argument("--n", type=int, default=None, help="memories (default 100000)")
    parser.add_argument("--queries", type=int, default=None, help="queries (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each query")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    n_queries = args.queries or (20 if args.quick else 50)
    n_base = 500 if args.quick else 2000

    print(load_note())
    print(f"vectors: {n:,} memories, {n_queries} queries, {args.repeats} repeats, k={K}, "
          f"shards={vectors.SHARDS}", flush=True)
    embedder = Embedder(model_path(), device="cpu")
    texts = sentences(n_base + n_queries, seed=7)
    start = time.perf_counter()
    embedded = embedder.embed(texts)
    embedder.close()
    print(f"  embedded {len(texts)} texts for the base set and queries in {time.perf_counter() - start:.1f} s")
    base, queries = embedded[:n_base], embedded[n_base:]
    matrix = mixed_vectors(base, n)

    results: dict = {"n": n, "queries": n_queries, "shards": vectors.SHARDS, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        mem = build_store(Path(tmp) / "vec.db", matrix, [f"memory {i}" for i in range(n)])
        conn = mem.connection
        generation = mem.load_model().generation
        name = vectors.table(generation)
        print(f"  built the store in {time.perf_counter() - start:.1f} s", flush=True)
        # The reference: a plain vec0 float table in the same file.
        conn.execute("CREATE VIRTUAL TABLE ref_float USING vec0(embedding float[384] distance_metric=cosine)")
        with conn:
            conn.executemany("INSERT INTO ref_float (rowid, embedding) VALUES (?, ?)",
                             ((i + 1, matrix[i].tobytes()) for i in range(n)))
        size = Path(tmp, "vec.db").stat().st_size + Path(tmp, "vec.db-wal").stat().st_size
        results["file_mb"] = round(size / 1e6, 1)

        sims = queries @ matrix.T
        truth = [[int(i) + 1 for i in np.argsort(-s)[:K]] for s in sims]  # memory i+1 = row i
        rows = results["rows"]
        print("unfiltered")
        rows.append(measure("numpy brute force (matrix in RAM)", queries, truth,
                            lambda q: [int(i) + 1 for i in np.argsort(-(matrix @ q))[:K]], args.repeats))
        rows.append(measure("vec0 float brute force", queries, truth, lambda q: [r[0] for r in conn.execute(
            "SELECT rowid FROM ref_float WHERE embedding MATCH ? AND k = ?", (q.tobytes(), K))], args.repeats))

        def unsharded(pool: int):
            def search(q):
                got = conn.execute(f"SELECT memory_id, embedding FROM {name} WHERE embedding_bits "
                                   "MATCH vec_quantize_binary(?) AND k = ?", (q.tobytes(), pool)).fetchall()
                m = vectors.decode([r[1] for r in got], len(q))
                return [got[i][0] for i in np.argsort(-(m @ q))[:K]]
            return search

        for pool in (256,):
            rows.append(measure(f"vec0 bits, 1 pass k={pool} + re-rank", queries, truth, unsharded(pool),
                                args.repeats))
        for pool in POOLS:
            rows.append(measure(f"magray knn candidates={pool}", queries, truth, lambda q, p=pool: [
                h[1] for h in vectors.knn(conn, generation, q, K, Filters(), candidates=p)], args.repeats))

        print("filtered: project = 'p7' (1% of memories)")
        mask = np.array([i % 100 == 7 for i in range(n)])
        masked = np.where(mask[None, :], sims, -np.inf)
        ftruth = [[int(i) + 1 for i in np.argsort(-s)[:K]] for s in masked]
        only = Filters(project="p7")
        rows.append(measure("filtered: numpy brute force", queries, ftruth, lambda q: [
            int(i) + 1 for i in np.argsort(-np.where(mask, matrix @ q, -np.inf))[:K]], args.repeats))
        for pool in POOLS[:3]:
            rows.append(measure(f"filtered: magray knn candidates={pool}", queries, ftruth, lambda q, p=pool: [
                h[1] for h in vectors.knn(conn, generation, q, K, only, candidates=p)], args.repeats))
        ids = [i + 1 for i in range(n) if mask[i]]
        rows.append(measure(f"filtered: vectors.exact over {len(ids)} memories", queries, ftruth, lambda q: [
            h[1] for h in vectors.exact(conn, generation, q, ids, K)], args.repeats))
        # What exact() did before: `chunk_id IN (subquery)` on the vec0 table, a full scan.
        rows.append(measure("filtered: vec0 chunk_id IN (subquery) (old exact)", queries[:5], [None] * 5,
                            lambda q: [r[0] for r in conn.execute(
                                f"SELECT chunk_id FROM {name} WHERE chunk_id IN (SELECT id FROM chunks "
                                "WHERE memory_id IN (SELECT value FROM json_each(?)))", (json.dumps(ids),))], 1))
        mem.close()
    print(load_note(after=True))
    print(f"  file size (store + reference float table): {results['file_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
