"""Embedding throughput on the same texts, in one run: raw llama-cpp-python (one `embed` call per
text, and one call with the whole list) against magray's `Embedder.embed` for several packing sizes
and thread counts, and the full cache path `embed_cached` (cold: everything embedded; warm: every
text a cache hit).

    python bench/bench_embed.py [--quick] [--texts 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_note, median, model_path, sentences, timed  # noqa: E402

from magray.db import open_connection, write_transaction  # noqa: E402
from magray.embed import cache  # noqa: E402
from magray.embed.embedder import Embedder, default_threads  # noqa: E402
from magray.schema import migrate  # noqa: E402

PACKS = (1, 32, 128, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 texts, 2 repeats, fewer variants")
    parser.add_argument("--texts", type=int, default=None, help="texts (default 1000)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each variant (default 3)")
    parser.add_argument("--raw-only", action="store_true",
                        help="only raw llama-cpp-python, with the OpenMP settings of the environment "
                             "(magray sets OMP_WAIT_POLICY=PASSIVE unless it is set)")
    parser.add_argument("--cache-only", action="store_true",
                        help="only the raw per-text baseline and the cache path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    n = args.texts or (200 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 3)
    texts = sentences(n, seed=0)
    path = model_path()
    if not args.raw_only:
        Embedder(path, device="cpu").close()  # sets magray's OpenMP policy before llama.cpp loads
    import llama_cpp

    default_llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=512, verbose=False)
    tokens = [len(default_llm.tokenize(t.encode())) for t in texts]
    print(load_note())
    print(f"embeddings: {n} texts, {sum(tokens) / n:.1f} tokens on average ({min(tokens)}-{max(tokens)}), "
          f"{repeats} repeats, default threads {default_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, model {path.name}", flush=True)
    rows: list[dict] = []

    def report(name: str, times: list[float], baseline: float | None = None) -> float:
        rate = n / median(times)
        row = {"variant": name, "median_s": round(median(times), 3), "texts_per_s": round(rate, 1)}
        if baseline:
            row["vs_raw_best"] = round(rate / baseline, 2)
        rows.append(row)
        extra = f"  x{row['vs_raw_best']:.2f} of raw best" if baseline else ""
        print(f"  {name:52s} {median(times):7.3f} s  {rate:7.1f} texts/s{extra}", flush=True)
        return rate

    raw_rates = []
    for threads in (1, 2):
        llm = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=512, n_threads=threads,
                              n_threads_batch=threads, verbose=False)
        raw_rates.append(report(f"raw llama-cpp, embed(text) per text, {threads} thr",
                                timed(lambda: [llm.embed(t, normalize=True) for t in texts], repeats)))
        if not args.cache_only and (threads == 2 or not args.quick):
            report(f"raw llama-cpp, embed(list), n_batch 512, {threads} thr",
                   timed(lambda: llm.embed(texts, normalize=True), repeats))
        llm.close()
    if not args.cache_only:
        report("raw llama-cpp, embed(text) per text, library defaults",
               timed(lambda: [default_llm.embed(t, normalize=True) for t in texts], repeats))
    default_llm.close()
    best = max(raw_rates)
    if args.raw_only:
        return

    for threads in () if args.cache_only else (1, 2):
        embedder = Embedder(path, device="cpu", n_threads=threads)
        for pack in PACKS if not args.quick else (1, 128):
            embedder.pack_tokens = pack
            report(f"magray Embedder.embed, pack_tokens {pack}, {threads} thr",
                   timed(lambda: embedder.embed(texts), repeats), best)
        embedder.close()

    embedder = Embedder(path, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_connection(Path(tmp) / "cache.db")
        migrate(conn, Path(tmp) / "cache.db")
        sha = "0" * 64
        cold = timed(lambda: cache.embed_cached(conn, embedder, sha, texts), repeats)
        cold_rate = report(f"magray embed_cached, cold (defaults: pack {embedder.pack_tokens}, "
                           f"{default_threads()} thr)", cold, best)
        embedded = cache.embed_cached(conn, embedder, sha, texts)
        with write_transaction(conn):
            cache.store(conn, sha, embedded.new_entries, time.time())
        warm = timed(lambda: cache.embed_cached(conn, embedder, sha, texts), max(repeats, 5))
        assert cache.embed_cached(conn, embedder, sha, texts).hits == n
        warm_rate = report("magray embed_cached, warm (all cache hits)", warm, best)
        one = timed(lambda: cache.embed_cached(conn, embedder, sha, texts[:1]), 50)
        print(f"  one query text from the cache: {median(one) * 1000:.3f} ms")
        print(f"  cache hit speed-up over embedding: x{warm_rate / cold_rate:.0f}")
        conn.close()
    embedder.close()
    print(load_note(after=True))
    if args.json:
        args.json.write_text(json.dumps({"texts": n, "repeats": repeats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
