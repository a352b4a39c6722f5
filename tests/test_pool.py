"""Several connections on one file sharing one loaded model (`Memory.another`), and the server's
pool that lends them to worker threads one call at a time."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio

from magray import Memory
from magray.server.pool import MemoryPool

FACTS = ["The user prefers dark mode in every editor", "Deploys happen on Thursday afternoons",
         "Lena plays the cello on Sundays", "The VPN password rotates every 90 days"]
QUERIES = {"which colour theme for the editor?": 0, "when do we deploy?": 1,
           "what instrument does Lena play?": 2, "how often does the VPN password change?": 3}


def test_sibling_connections_share_the_model_across_threads(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as first:
        ids = [first.add(f, layer="insights").id for f in FACTS]
        first.load_model()
        siblings = [first.another() for _ in range(3)]
        members = [first, *siblings]

        free: queue.Queue = queue.Queue()
        for member in members:
            free.put(member)

        def ask(i: int) -> tuple[str, int]:
            # A connection serves one call at a time (as the pool lends them); the model is shared.
            query = list(QUERIES)[i % len(QUERIES)]
            mem = free.get()
            try:
                return query, mem.search(query, k=1, touch=False)[0].memory.id
            finally:
                free.put(mem)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(32)))
        added = siblings[0].add("Written through a sibling connection", layer="insights")
        for mem in siblings:
            mem.close()
        # Closing the siblings leaves the model with its owner.
        after = first.search("when do we deploy?", k=1, touch=False)[0].memory.id
        seen_by_first = first.get(added.id, touch=False).content
    assert all(found == ids[QUERIES[query]] for query, found in answers)
    assert after == ids[1]
    assert seen_by_first == "Written through a sibling connection"


def test_the_pool_lends_each_connection_to_one_call_at_a_time(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as first:
        first.add(FACTS[0], layer="insights")
        first.load_model()
        pool = MemoryPool.around(first, 2)
        lock = threading.Lock()
        active: dict[int, int] = {}
        most = {"calls": 0, "per_member": 0}
        results = []

        def call(mem: Memory) -> int:
            with lock:
                active[id(mem)] = active.get(id(mem), 0) + 1
                most["calls"] = max(most["calls"], sum(active.values()))
                most["per_member"] = max(most["per_member"], active[id(mem)])
            try:
                return mem.search("editor theme", k=1, touch=False)[0].memory.id
            finally:
                with lock:
                    active[id(mem)] -= 1

        async def scenario():
            async def one():
                results.append(await pool.run(call))

            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(one)

        anyio.run(scenario)
        pool.close_extra()
        assert first.search("editor theme", k=1, touch=False)
    assert len(results) == 12 and len(set(results)) == 1
    assert most["per_member"] == 1 and most["calls"] <= 2
