"""Recall latency through the official MCP client over streamable HTTP (`magray serve --http` in a
subprocess) with 1 and with 8 concurrent clients, at 10K memories, against the same recall called
in-process on the same file (the baseline, measured in the same run).

    python bench/bench_http.py                       # 10K memories, 3 repeats of 80 recalls
    python bench/bench_http.py --quick               # 2K memories, 1 repeat of 24 recalls

The file is filled as in bench_mcp.py (library row functions, random unit vectors). Every query is
new, so each recall pays one real query embedding; with 8 clients the 80 queries of a repeat are
split between them (10 each), all sessions open before the clock starts. The server runs with
its default pool of connections; the model embeds one query at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_mcp import fill, in_process, percentiles, sentence  # noqa: E402

from magray import Memory  # noqa: E402

from helpers import http_server  # noqa: E402
from helpers.reliability import subprocess_env  # noqa: E402


def in_process_threads(path: Path, model: str, batches: list[list[str]]) -> tuple[list[float], float]:
    """The library alone under the same concurrency: one thread per batch, each on its own
    connection (Memory.another), all sharing one loaded model, as the server's pool does."""
    from concurrent.futures import ThreadPoolExecutor

    with Memory.open(path, model=model) as first:
        first.load_model()
        first.search("warm up the model and the page cache", k=5)
        members = [first] + [first.another() for _ in batches[1:]]
        times: list[float] = []

        def run(mem: Memory, queries: list[str]) -> None:
            for q in queries:
                t0 = time.perf_counter()
                mem.search(q, k=5)
                times.append((time.perf_counter() - t0) * 1000)

        start = time.perf_counter()
        with ThreadPoolExecutor(len(batches)) as pool:
            for f in [pool.submit(run, mem, batch) for mem, batch in zip(members, batches)]:
                f.result()
        wall = time.perf_counter() - start
        for mem in members[1:]:
            mem.close()
    return times, wall


async def over_http(url: str, batches: list[list[str]]) -> tuple[list[float], float]:
    """One MCP session per batch, all open at once; each runs its queries in turn. Returns the
    latencies and the wall seconds from the moment every session was open to the last answer."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    times: list[float] = []
    ready = anyio.Event()
    opened = 0
    started: list[float] = []

    async def client(queries: list[str]) -> None:
        nonlocal opened
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(300)) as http, \
                streamable_http_client(url + "mcp", http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("recall", {"query": "warm up this session", "k": 5})
            opened += 1
            if opened == len(batches):
                started.append(time.perf_counter())
                ready.set()
            await ready.wait()
            for q in queries:
                t0 = time.perf_counter()
                result = await session.call_tool("recall", {"query": q, "k": 5})
                times.append((time.perf_counter() - t0) * 1000)
                assert not result.is_error, result.content[0].text

    async with anyio.create_task_group() as tg:
        for batch in batches:
            tg.start_soon(client, batch)
    return times, time.perf_counter() - started[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="memories in the file (default 10000)")
    parser.add_argument("--queries", type=int, default=80, help="recalls per repeat and setting (default 80)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the second setting")
    parser.add_argument("--quick", action="store_true", help="2K memories, 1 repeat of 24 recalls")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--model", default=os.environ.get("MAGRAY_TEST_MODEL")
                        or str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"))
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries, args.repeats = 2000, 24, 1
    os.environ.setdefault("MAGRAY_TEST_MODEL", args.model)

    load_start = os.getloadavg()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_start)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        fill(path, args.model, args.n)
        print(f"filled {args.n} memories in {time.perf_counter() - t0:.1f} s")
        env = subprocess_env(Path(tmp))
        env.pop("MAGRAY_THREADS")  # the server's own default, as a user runs it
        rng = random.Random(13)
        results: dict[str, tuple[list[float], list[float], float]] = {}
        server = http_server.start(path, env)
        try:
            for _ in range(args.repeats):
                n = args.clients
                for name, clients, http in (("in-process", 1, False), ("HTTP, 1 client", 1, True),
                                            (f"in-process, {n} threads", n, False), (f"HTTP, {n} clients", n, True)):
                    queries = [sentence(rng, 6) for _ in range(args.queries)]
                    batches = [queries[i::clients] for i in range(clients)]
                    if http:
                        times, wall = anyio.run(over_http, server.url, batches)
                    elif clients == 1:
                        times = in_process(path, args.model, queries, "hybrid")
                        wall = sum(times) / 1000
                    else:
                        times, wall = in_process_threads(path, args.model, batches)
                    all_times, p50s, walls = results.setdefault(name, ([], [], 0.0))
                    all_times += times
                    p50s.append(statistics.median(times))
                    results[name] = (all_times, p50s, walls + wall)
        finally:
            code, log = server.stop()
        summary = {}
        print(f"recall mode=hybrid k=5, {args.n} memories, {args.repeats} x {args.queries} queries per setting")
        base = percentiles(results["in-process"][0])["p50"]
        for name, (times, p50s, wall) in results.items():
            p = percentiles(times)
            summary[name] = {"p50_ms": p["p50"], "p95_ms": p["p95"], "recalls_per_s": len(times) / wall,
                             "p50_per_repeat_ms": p50s, "p50_vs_in_process": p["p50"] / base}
            print(f"  {name:<22} p50 {p['p50']:6.1f} ms  p95 {p['p95']:6.1f} ms  {len(times) / wall:6.1f} recalls/s  "
                  f"p50/in-process {p['p50'] / base:5.2f}x  (p50 per repeat {', '.join(f'{x:.1f}' for x in p50s)})")
    load_end = os.getloadavg()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in load_end)}")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "queries": args.queries, "repeats": args.repeats,
                                         "load_start": load_start, "load_end": load_end, "results": summary}, indent=2))
    if code != 0:
        raise SystemExit(f"server exited with {code}: {log}")


if __name__ == "__main__":
    main()
