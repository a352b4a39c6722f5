"""Recall latency through a real MCP client over stdio (`magray serve` in a subprocess), at 10K
memories, against the same recall called in-process (the baseline, measured in the same run).

    python bench/bench_mcp.py                    # 10K memories, 3 repeats of 100 recalls per mode
    python bench/bench_mcp.py --n 2000 --queries 30 --repeats 2

The file is filled quickly: rows go in through the library's own row and vector functions, with
random unit vectors instead of embeddings (recall latency depends on the vector count, not on
what the vectors mean). Queries are embedded for real, each one new, so that every recall pays
for one embedding, as an agent's recall does. The model: --model, else $MAGRAY_TEST_MODEL, else
<repo>/../shared/models/all-MiniLM-L6-v2-q8_0.gguf.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from magray import Memory  # noqa: E402
from magray import records, vectors  # noqa: E402
from magray.db import write_transaction  # noqa: E402
from magray.embed.cache import text_hash  # noqa: E402

WORDS = ("deploy release server user theme dark light editor meeting budget travel flight hotel "
         "garden tomato recipe pasta invoice customer ticket bug crash database backup schedule "
         "thursday friday morning project alpha beta gamma team design review python rust music "
         "cello piano daughter birthday gift book novel coffee tea office remote laptop battery").split()


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def fill(path: Path, model: str, n: int, seed: int = 7) -> None:
    """n memories with short generated texts and random unit vectors, in batches of 1000 rows."""
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    with Memory.open(path, model=model) as mem:
        binding = mem.load_model()
        now = mem.now()
        for start in range(0, n, 1000):
            count = min(1000, n - start)
            vecs = gen.standard_normal((count, binding.dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            with write_transaction(mem.connection) as conn:
                for i in range(count):
                    item = {"content": f"note {start + i}: {sentence(rng)}", "layer": ("interact", "insights", "assets")[i % 3],
                            "tags": [rng.choice(WORDS)], "project": rng.choice(("home", "work", ""))}
                    prepared = mem._prepare(item, now)  # the library's own validation
                    f = prepared.fields
                    memory_id = records.insert(conn, f, prepared.tags)
                    vectors.insert_chunks(conn, binding.generation, memory_id, f["layer"], f["project"], f["session"],
                                          f["created_at"], [text_hash(f["content"])], vecs[i:i + 1])


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "mean": statistics.fmean(ordered)}


def in_process(path: Path, model: str, queries: list[str], mode: str) -> list[float]:
    with Memory.open(path, model=model) as mem:
        mem.load_model()
        mem.search("warm up the model and the page cache", k=5, mode=mode)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            mem.search(q, k=5, mode=mode)
            times.append((time.perf_counter() - t0) * 1000)
    return times


async def over_mcp(path: Path, model: str, queries: list[str], mode: str, remembers: int) -> tuple[list[float], list[float]]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    env = dict(os.environ, MAGRAY_MODEL=model)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    params = StdioServerParameters(command=sys.executable, args=["-m", "magray", "serve", "--db", str(path)], env=env)
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("recall", {"query": "warm up the server", "k": 5, "mode": mode})
            times = []
            for q in queries:
                t0 = time.perf_counter()
                result = await session.call_tool("recall", {"query": q, "k": 5, "mode": mode})
                times.append((time.perf_counter() - t0) * 1000)
                assert not result.is_error, result.content[0].text
            writes = []
            for i in range(remembers):
                t0 = time.perf_counter()
                result = await session.call_tool("remember", {"content": f"benchmark remember {i} {time.time()}"})
                writes.append((time.perf_counter() - t0) * 1000)
                assert not result.is_error, result.content[0].text
    return times, writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="memories in the file (default 10000)")
    parser.add_argument("--queries", type=int, default=100, help="recalls per repeat and mode (default 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="hybrid,text", help="comma-separated recall modes (default hybrid,text)")
    parser.add_argument("--remembers", type=int, default=30, help="remember calls timed once at the end")
    parser.add_argument("--model", default=os.environ.get("MAGRAY_TEST_MODEL")
                        or str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        fill(path, args.model, args.n)
        print(f"filled {args.n} memories in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 2**20:.1f} MiB)")
        rng = random.Random(11)
        for mode in args.modes.split(","):
            base_p50, mcp_p50, base_all, mcp_all = [], [], [], []
            for _ in range(args.repeats):
                # Fresh queries for each side, so that neither finds its query in the embedding cache.
                base = in_process(path, args.model, [sentence(rng, 6) for _ in range(args.queries)], mode)
                mcp, _ = anyio.run(over_mcp, path, args.model, [sentence(rng, 6) for _ in range(args.queries)], mode, 0)
                base_p50.append(statistics.median(base))
                mcp_p50.append(statistics.median(mcp))
                base_all += base
                mcp_all += mcp
            b, m = percentiles(base_all), percentiles(mcp_all)
            print(f"recall mode={mode} k=5, {args.n} memories, {args.repeats} x {args.queries} queries")
            print(f"  in-process (baseline): p50 {b['p50']:.1f} ms  p95 {b['p95']:.1f} ms  "
                  f"(p50 per repeat {', '.join(f'{x:.1f}' for x in base_p50)})")
            print(f"  over MCP stdio:        p50 {m['p50']:.1f} ms  p95 {m['p95']:.1f} ms  "
                  f"(p50 per repeat {', '.join(f'{x:.1f}' for x in mcp_p50)})")
            print(f"  MCP / in-process p50: {m['p50'] / b['p50']:.2f}x  (+{m['p50'] - b['p50']:.1f} ms)")
        if args.remembers:
            _, writes = anyio.run(over_mcp, path, args.model, [], "hybrid", args.remembers)
            w = percentiles(writes)
            print(f"remember over MCP ({args.remembers} calls, profile safe): p50 {w['p50']:.1f} ms  p95 {w['p95']:.1f} ms")


if __name__ == "__main__":
    main()
