"""A magray process for the crash, concurrency and benchmark runs (started as a subprocess).

  crash-writer  add memories forever; print one JSON line {id, content, token} after each add returns
  writer        wait for "go" on stdin, add --count memories (tagging every 4th afterwards), print each
                id, then "done <seconds> <operations>"
  reader        wait for "go", run --count searches and lists; check every memory it can see (API
                results and a whole-file snapshot) for half-written state; print "done ..." at the end

Everything goes through the public library; any exception ends the process with a traceback on
stderr and a non-zero exit, which the tests treat as a failure (a `database is locked` included).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from magray import Memory
from magray.db import read_snapshot
from magray.types import Filters

WORDS = ("apple river cloud engine garden pencil rocket silver window forest violet harbor "
         "candle marble thunder copper meadow lantern summit canyon").split()


def content_for(tag: str, i: int, tags: list[str]) -> str:
    """A short text, unique by its token, that states the tags it was stored with."""
    rng = random.Random(f"{tag}-{i}")
    words = " ".join(rng.choice(WORDS) for _ in range(4))
    return f"{token_for(tag, i)} {words} tags={','.join(sorted(tags))}"


def token_for(tag: str, i: int) -> str:
    return f"{tag}k{i}"


def stated_tags(content: str) -> set[str]:
    stated = content.rsplit("tags=", 1)[1]
    return set(stated.split(",")) if stated else set()


def crash_writer(mem: Memory, args: argparse.Namespace) -> None:
    i = 0
    while True:
        tags = [f"t{i % 3}", args.tag]
        content = content_for(args.tag, i, tags)
        result = mem.add(content, tags=tags, layer=("interact", "insights", "assets")[i % 3],
                         project=args.tag[:2])
        print(json.dumps({"id": result.id, "content": content, "token": token_for(args.tag, i)}), flush=True)
        i += 1


def wait_for_go(mem: Memory) -> float:
    mem.load_model()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected go")
    return time.perf_counter()


def writer(mem: Memory, args: argparse.Namespace) -> None:
    start = wait_for_go(mem)
    ops = 0
    for i in range(args.count):
        tags = [args.tag, f"n{i % 5}"]
        result = mem.add(content_for(args.tag, i, tags), tags=tags, project="shared")
        print(f"add {result.id}", flush=True)
        ops += 1
        if i % 4 == 3:
            mem.tag(result.id, add=["seen"])
            print(f"tag {result.id}", flush=True)
            ops += 1
    print(f"done {time.perf_counter() - start:.4f} {ops}", flush=True)


def reader(mem: Memory, args: argparse.Namespace) -> None:
    start = wait_for_go(mem)
    rng = random.Random(args.tag)
    seen: set[int] = set()
    for i in range(args.count):
        if i % 2 == 0:
            query = " ".join(rng.sample(WORDS, 2))
            records = [h.memory for h in mem.search(query, k=10, mode="hybrid" if i % 4 == 0 else "text")]
        else:
            records = mem.list(Filters(tags=(f"n{rng.randrange(5)}",)), limit=20)
        for record in records:
            # The tags a writer stored with a memory arrive in the same transaction as the memory.
            if not stated_tags(record.content) <= set(record.tags):
                raise SystemExit(f"half-written memory {record.id}: tags {record.tags} for {record.content!r}")
            seen.add(record.id)
        check_snapshot(mem)
    print(f"done {time.perf_counter() - start:.4f} {args.count} {len(seen)}", flush=True)


def check_snapshot(mem: Memory) -> None:
    """Every memory visible in one read snapshot has its tag rows, tags_text, FTS row, chunks and
    vectors: a reader never sees a memory without the rest of its transaction."""
    conn = mem.connection
    with read_snapshot(conn):
        generation = conn.execute("SELECT generation FROM model_binding").fetchone()[0]
        rows = conn.execute("SELECT id, content, tags_text FROM memories WHERE deleted_at IS NULL").fetchall()
        tags: dict[int, set[str]] = {}
        for memory_id, tag in conn.execute("SELECT memory_id, tag FROM memory_tags"):
            tags.setdefault(memory_id, set()).add(tag)
        fts = {r[0] for r in conn.execute("SELECT id FROM memories_fts_docsize")}
        chunks: dict[int, list[int]] = {}
        for chunk_id, memory_id in conn.execute("SELECT id, memory_id FROM chunks WHERE generation = ?", (generation,)):
            chunks.setdefault(memory_id, []).append(chunk_id)
        vec = {r[0] for r in conn.execute(f"SELECT chunk_id FROM vec_chunks_{generation}")}
    for memory_id, content, tags_text in rows:
        have = tags.get(memory_id, set())
        problems = []
        if not stated_tags(content) <= have or tags_text != " ".join(sorted(have)):
            problems.append(f"tags {sorted(have)} / {tags_text!r}")
        if memory_id not in fts:
            problems.append("no FTS row")
        if not chunks.get(memory_id) or not set(chunks[memory_id]) <= vec:
            problems.append("no vectors")
        if problems:
            raise SystemExit(f"half-written memory {memory_id}: {'; '.join(problems)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("crash-writer", "writer", "reader"))
    parser.add_argument("--db", required=True)
    parser.add_argument("--tag", default="w")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--profile", default="safe")
    args = parser.parse_args()
    with Memory.open(args.db, profile=args.profile) as mem:
        {"crash-writer": crash_writer, "writer": writer, "reader": reader}[args.mode](mem, args)


if __name__ == "__main__":
    main()
