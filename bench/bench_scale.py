"""Search at scale: 100K and 1M memories, before and after the ANN index is trained, in one run.

Corpus: Debian's package descriptions (`apt-cache dumpavail`: ~60K distinct one-line
descriptions, a large natural vocabulary), each memory one to four of them joined ("pkg: desc;
desc ..."), 5-40 words. Vectors: real embeddings of 3,000 descriptions, mixed
(`common.mixed_vectors`) so that the set keeps the model's anisotropy and neighbourhoods without
embedding a million texts. Queries: 30 question-style texts ("library for parsing PDF files"),
embedded by the model once and then read from the cache; `Memory.search(k=10, touch=False)`,
median of `--repeats` per query, p50 over the queries.

For each size: the file as `build_store` leaves it (flat shards, the search magray had before the
index), then after `Memory.optimize()` trains the ANN lists and re-files every vector:
- hybrid, vector, text p50, and hybrid with a 1% project filter;
- vector recall@10 against exact search by similarity alone (numpy over every vector): the top 10
  of the vector side's candidate list as `search` asks for it;
- docs/s of `add_many` (200 descriptions, embedded) into the file against into an empty file;
- file size per memory.

    python bench/bench_scale.py [--sizes 100000,1000000] [--queries 30] [--db DIR] [--json FILE]
    python bench/bench_scale.py --sizes 1000000 --db DIR --convert

`--db DIR` keeps each built file (DIR/scale-<n>.db, before training; the trained copy is
DIR/scale-<n>-ann.db) and reuses them on the next run. `--convert` measures, instead, what
`Memory.optimize()` does to a trained file of an earlier run whose vectors are float32 (written
before float16 storage): recall@10, size and the parts of the file (`stats(space=True)`) before,
after the conversion, and after VACUUM, on a copy in a temporary folder (DIR is not changed).
`--search-only` times the searches on the files already in DIR (`--files ann`: the trained ones
only) without building, training or adding anything (the files still take the queries' cached
vectors and a checkpoint: use copies). `--together` times the trained files of every size
interleaved, query by query, so that the ratios between sizes, and between a filtered and an
unfiltered search, are not set by which of them a burst of other work on the machine happened
to hit (the ratios the goals name).

    python bench/bench_scale.py --sizes 100000,1000000 --db DIR --together [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import build_store, load_note, median, mixed_vectors, model_path  # noqa: E402

from magray import Memory, search  # noqa: E402
from magray.embed.embedder import Embedder  # noqa: E402
from magray.types import Filters  # noqa: E402

K = 10
NOW = 1_750_000_000.0
QUESTIONS = """library for parsing PDF files
how do I resize images from the command line?
tool to synchronise files between two machines
which package plays MIDI music?
a font with good unicode coverage for programming
python module to read excel spreadsheets
where can I find a DNS server for a small network?
command to convert video formats
documentation for the C standard library
a game where you build a city
how to monitor the temperature of the CPU
package for writing music scores
a spell checker dictionary for German
library to compress data with zstd
what can I use to edit photos like photoshop?
a terminal emulator with tabs
tool that backs up my home directory
perl module for sending email
which program draws graphs from data files?
a mail client for the terminal
library for machine learning with neural networks
software to manage a bibliography in LaTeX
how to access a windows share from linux
an astronomy program showing the night sky
a text editor for programmers
development files for the SSL library
a password manager
tool to check a website for broken links
bluetooth support for audio headsets
a chess engine to play against""".strip().splitlines()


def descriptions() -> list[str]:
    """(package, description) lines from apt's package lists, distinct descriptions only."""
    out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    seen: dict[str, str] = {}
    package = ""
    for line in out.splitlines():
        if line.startswith("Package: "):
            package = line[9:].strip()
        elif line.startswith("Description: "):
            seen.setdefault(line[13:].strip(), package)
    return [f"{p}: {d}" for d, p in seen.items()]


def corpus(lines: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        parts = rng.sample(lines, rng.choice((1, 1, 2, 2, 3, 4)))
        text = "; ".join(parts)
        if 5 <= len(text.split()) <= 40 and text not in texts:
            texts.add(text)
            out.append(text)
    return out


def timed_search(mem: Memory, queries: list[str], mode: str, filters: Filters, repeats: int) -> float:
    per_query = []
    for q in queries:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            mem.search(q, k=K, mode=mode, filters=filters, touch=False)
            times.append(time.perf_counter() - start)
        per_query.append(median(times))
    return median(per_query) * 1000


def recall(mem: Memory, vecs, query_vecs) -> float:
    """Mean share of the exact top 10 (similarity alone) in the top 10 of the vector side."""
    import numpy as np

    generation = mem.load_model().generation
    pool = max(K * 5, 50)  # what Memory.search asks of the vector side
    shares = []
    for q in query_vecs:
        sims = vecs @ q
        exact = set((np.argpartition(-sims, K)[:K] + 1).tolist())  # memory id i + 1 holds row i
        found = search.vector_candidates(mem.connection, generation, q, Filters(), NOW, pool)[:K]
        shares.append(len(exact & {m for m, _ in found}) / K)
    return float(np.mean(shares))


def add_rate(path: Path, texts: list[str]) -> float:
    with Memory.open(path, profile="fast", model=str(model_path()), clock=lambda: NOW) as mem:
        mem.load_model()
        start = time.perf_counter()
        mem.add_many([{"content": t, "layer": "assets", "project": "added"} for t in texts], dedup=False)
        return len(texts) / (time.perf_counter() - start)


def sweep(mem: Memory, spec: str, query_vecs, vecs) -> list[dict]:
    """Recall and vector-side p50 for each probe share, candidate pool and oversampling in `spec`."""
    import numpy as np

    from magray import ann, bitscan, vectors

    parts = spec.split(":")
    shares, pools = ([float(x) for x in part.split(",")] for part in parts[:2])
    oversamples = [int(x) for x in parts[2].split(",")] if len(parts) > 2 else [bitscan.OVERSAMPLE]
    if min(oversamples) < 1:
        raise SystemExit("--sweep: an oversampling is 1 or more")
    generation = mem.load_model().generation
    saved = ann.PROBE_SHARE, vectors.default_candidates, bitscan.OVERSAMPLE
    rows = []
    try:
        for share, pool, oversample in ((s, p, o) for s in shares for p in pools for o in oversamples):
            ann.PROBE_SHARE, vectors.default_candidates = share, (lambda conn, pool=int(pool): pool)
            bitscan.OVERSAMPLE = oversample
            times = []
            for q in query_vecs:
                start = time.perf_counter()
                search.vector_candidates(mem.connection, generation, q, Filters(), NOW, max(K * 5, 50))
                times.append(time.perf_counter() - start)
            rows.append({"probe_share": share, "pool": int(pool), "oversample": oversample,
                         "recall_at_10": recall(mem, vecs, query_vecs),
                         "vector_side_p50_ms": float(np.median(times)) * 1000})
            print(f"    probe share {share}, pool {int(pool)}, oversample {oversample}: recall "
                  f"{rows[-1]['recall_at_10']:.3f}, vector side p50 {rows[-1]['vector_side_p50_ms']:.1f} ms", flush=True)
    finally:
        ann.PROBE_SHARE, vectors.default_candidates, bitscan.OVERSAMPLE = saved
    return rows


def measure(mem: Memory, path: Path, queries, query_vecs, vecs, repeats: int, n: int) -> dict:
    row = {
        "hybrid_p50_ms": timed_search(mem, queries, "hybrid", Filters(), repeats),
        "vector_p50_ms": timed_search(mem, queries, "vector", Filters(), repeats),
        "text_p50_ms": timed_search(mem, queries, "text", Filters(), repeats),
        "hybrid_1pct_project_p50_ms": timed_search(mem, queries, "hybrid", Filters(project="p7"), repeats),
        "vector_1pct_project_p50_ms": timed_search(mem, queries, "vector", Filters(project="p7"), repeats),
        "vector_recall_at_10": recall(mem, vecs, query_vecs),
    }
    mem.checkpoint("TRUNCATE")
    row["kb_per_memory"] = path.stat().st_size / n / 1024
    return row


CASES = {"hybrid": ("hybrid", Filters()), "vector": ("vector", Filters()), "text": ("text", Filters()),
         "hybrid_1pct_project": ("hybrid", Filters(project="p7")),
         "vector_1pct_project": ("vector", Filters(project="p7"))}


def together(folder: Path, sizes: list[int], queries: list[str], query_vecs, base, repeats: int) -> dict:
    """The searches of every size and case interleaved, query by query (each of `repeats` rounds
    runs every size and case once, in turn, starting one further each round), so that a burst of
    other work on the machine slows all of them alike and the ratios compare like with like; then
    each size's recall."""
    import contextlib

    with contextlib.ExitStack() as stack:
        mems = {}
        for n in sizes:
            file = folder / f"scale-{n}-ann.db"
            if not file.exists():
                raise SystemExit(f"{file} not found")
            mems[n] = stack.enter_context(Memory.open(file, profile="fast", clock=lambda: NOW))
            for q in queries:  # embeds each query once: the timed searches read the cache
                mems[n].search(q, k=K, touch=False)
        times: dict[tuple[int, str], list[float]] = {}
        for q in queries:
            runs: dict[tuple[int, str], list[float]] = {(n, c): [] for n in sizes for c in CASES}
            order = list(runs)
            for round_ in range(repeats):
                shift = round_ % len(order)  # no case always right after the same other one
                for n, case in order[shift:] + order[:shift]:
                    mode, filters = CASES[case]
                    got = runs[n, case]
                    start = time.perf_counter()
                    mems[n].search(q, k=K, mode=mode, filters=filters, touch=False)
                    got.append(time.perf_counter() - start)
            for key, got in runs.items():
                times.setdefault(key, []).append(median(got))
        out: dict = {}
        for n in sizes:
            out[n] = {f"{case}_p50_ms": median(times[n, case]) * 1000 for case in CASES}
            out[n]["vector_recall_at_10"] = recall(mems[n], mixed_vectors(base, n, seed=n), query_vecs)
    return out


def space_table(space: dict) -> str:
    return "\n".join(f"    {p['name']:<31} {p['bytes'] / 1e6:>9.1f} MB {p['bytes_per_memory']:>8,.0f} B/memory "
                     f"({p['unused_bytes'] / 1e6:.1f} MB unused in its pages)" for p in space["parts"])


def convert(trained: Path, n: int, query_vecs, vecs) -> dict:
    """recall@10, KB/memory and the parts of a copy of `trained` (float32 vectors), then after
    `Memory.optimize()` converted them to float16, then after `optimize(vacuum=True)`."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / trained.name
        shutil.copyfile(trained, copy)
        with Memory.open(copy, profile="fast", clock=lambda: NOW) as mem:
            for label, step in (("float32 (as written before)", None), ("converted", mem.optimize),
                                ("converted + VACUUM", lambda: mem.optimize(vacuum=True))):
                row: dict = {}
                if step is not None:
                    start = time.perf_counter()
                    done = step()
                    row["optimize_s"] = time.perf_counter() - start
                    row["vectors_to_float16"] = done["vectors_to_float16"]
                row["vector_recall_at_10"] = recall(mem, vecs, query_vecs)
                mem.checkpoint("TRUNCATE")
                row["kb_per_memory"] = copy.stat().st_size / n / 1024
                start = time.perf_counter()
                row["space"] = mem.stats(space=True)["space"]
                row["stats_space_s"] = time.perf_counter() - start
                out[label] = row
                print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "space"), flush=True)
                print(space_table(row["space"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="memory counts (default 100000,1000000)")
    parser.add_argument("--queries", type=int, default=30, help="queries (at most 30)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each query")
    parser.add_argument("--adds", type=int, default=200, help="memories added (embedded) per add test")
    parser.add_argument("--db", type=Path, help="keep the built files in this folder and reuse them")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--search-only", action="store_true",
                        help="only time searches on the files kept in --db (no build, training or add test)")
    parser.add_argument("--together", action="store_true",
                        help="with --db: time the trained files of every size interleaved, query by query "
                             "(no build, training or add test), and print the ratios between them")
    parser.add_argument("--files", default="flat,ann", help="which files: flat, ann or both (default)")
    parser.add_argument("--sweep", metavar="SHARES:POOLS[:OVERSAMPLES]",
                        help="also, on each file, the vector side's recall and p50 for these probe shares, "
                             "candidate pools and bit-pass oversamplings (bitscan.OVERSAMPLE), e.g. "
                             "0.1,0.2:512,1024:1,4 (the settings, tried)")
    parser.add_argument("--convert", action="store_true",
                        help="with --db: convert a copy of each trained file of an earlier run (float32 "
                             "vectors) to float16 and measure recall, size and parts before and after")
    args = parser.parse_args()
    if args.convert and args.db is None:
        parser.error("--convert needs --db DIR (the files of an earlier run)")
    if (args.search_only or args.together) and args.db is None:
        parser.error("--search-only and --together need --db DIR")
    if args.together and (args.sweep or args.convert or args.search_only):
        parser.error("--together times the kept files on its own: no --sweep, --convert or --search-only")
    sizes = [int(s) for s in args.sizes.split(",")]
    queries = QUESTIONS[:args.queries]
    print(load_note())
    lines = descriptions()
    import numpy as np

    folder = args.db or Path(tempfile.mkdtemp(prefix="magray-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(model_path(), device="cpu")
    start = time.perf_counter()
    kept = folder / "base.npy"  # the base the kept files were built from (recall needs the same)
    base = np.load(kept) if kept.exists() else embedder.embed(random.Random(1).sample(lines, 3000))
    if not kept.exists():
        np.save(kept, base)
    query_vecs = embedder.embed(queries)
    embedder.close()
    print(f"{len(lines):,} distinct package descriptions; 3,000 embedded for the base vectors in "
          f"{time.perf_counter() - start:.1f} s; {len(queries)} queries, {args.repeats} repeats, k={K}", flush=True)
    extra = corpus(lines, 2 * args.adds, seed=99)
    results: dict = {"queries": len(queries), "repeats": args.repeats, "sizes": {}}
    if args.together:
        results["sizes"] = found = together(folder, sizes, queries, query_vecs, base, args.repeats)
        for n, row in found.items():
            print(f"  {n:,}: " + ", ".join(f"{k} {v:.3f}" if "recall" in k else f"{k} {v:.2f}"
                                          for k, v in row.items()), flush=True)
        first, last = found[sizes[0]], found[sizes[-1]]
        print(f"  hybrid p50 {sizes[-1]:,} / {sizes[0]:,}: x{last['hybrid_p50_ms'] / first['hybrid_p50_ms']:.2f}; "
              f"1% project / unfiltered at {sizes[-1]:,}: hybrid "
              f"x{last['hybrid_1pct_project_p50_ms'] / last['hybrid_p50_ms']:.2f}, vector "
              f"x{last['vector_1pct_project_p50_ms'] / last['vector_p50_ms']:.2f}", flush=True)
        print(load_note(after=True))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    try:
        for n in sizes:
            vecs = mixed_vectors(base, n, seed=n)
            path, trained = folder / f"scale-{n}.db", folder / f"scale-{n}-ann.db"
            if args.convert:
                if not trained.exists():
                    raise SystemExit(f"{trained} does not exist: run without --convert first")
                results["sizes"][n] = convert(trained, n, query_vecs, vecs)
                continue
            if not path.exists() and not args.search_only:
                start = time.perf_counter()
                build_store(path, vecs, corpus(lines, n, seed=n), now=NOW).close()
                print(f"{n:,} memories built in {time.perf_counter() - start:.1f} s", flush=True)
            out: dict = {}
            for label, file in (("flat (before the index)", path), ("ANN index", trained)):
                if ("flat" if file is path else "ann") not in args.files:
                    continue
                if args.search_only and not file.exists():
                    raise SystemExit(f"{file} not found")
                if label == "ANN index" and not file.exists():
                    shutil.copyfile(path, file)
                    with Memory.open(file, profile="fast", clock=lambda: NOW) as mem:
                        start = time.perf_counter()
                        done = mem.optimize()
                        print(f"  index trained and every vector re-filed in {time.perf_counter() - start:.1f} s "
                              f"({done.get('ann_lists')} lists)", flush=True)
                with Memory.open(file, profile="fast", clock=lambda: NOW) as mem:
                    for q in queries:  # embeds each query once: the timed searches read the cache
                        mem.search(q, k=K, touch=False)
                    row = measure(mem, file, queries, query_vecs, vecs, args.repeats, n)
                    if args.sweep:
                        row["sweep"] = sweep(mem, args.sweep, query_vecs, vecs)
                out[label] = row
                print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" if "recall" in k else f"{k} {v:.2f}"
                                                  for k, v in row.items() if k != "sweep"), flush=True)
            if args.search_only:
                results["sizes"][n] = out
                continue
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / "big.db"
                shutil.copyfile(trained, copy)
                into_big = add_rate(copy, extra[:args.adds])
                into_empty = add_rate(Path(tmp) / "empty.db", extra[args.adds:])
            out["add_docs_per_s"] = {"into this file": into_big, "into an empty file": into_empty,
                                     "ratio": into_big / into_empty}
            print(f"  add_many: {into_big:.1f} docs/s into this file, {into_empty:.1f} into an empty one "
                  f"(x{into_big / into_empty:.2f})", flush=True)
            results["sizes"][n] = out
    finally:
        if args.db is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(load_note(after=True))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
