"""The coarse pass read from sqlite-vec's shadow tables (magray/bitscan.py), on real small files
with real sqlite-vec: the best by bits, the same top k as sqlite-vec's own KNN, deleted rows never
back, filters inside the scan with k results, and a file of another layout searched as before."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.nearest import exact_ids
from helpers.vector_files import add_memory, clustered, vector_file
from magray import bitscan, rebalance, vectors
from magray.db import open_connection, write_transaction
from magray.types import Filters

DIM = 128
GENERATION = 1
ROWS = 3000
LAYERS = ("interact", "insights", "assets")
# Longer than the 12 bytes a TEXT metadata slot holds, same length, same first 12 bytes.
PROJECTS = ("customer-project-1", "customer-project-2", "customer-project-3")


def _clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    return clustered(rng, n, DIM)


def _layer(i: int) -> str:
    return LAYERS[i % 3]


def _project(i: int) -> str:
    return "rare" if i % 200 == 7 else PROJECTS[(i // 3) % 3]


def _session(i: int) -> str:
    return f"s{i % 5}" if i % 2 else f"a-long-session-name-{i % 4}"


def _add(conn, i: int, vec: np.ndarray) -> int:
    return add_memory(conn, GENERATION, i, vec[None, :], layer=_layer(i), project=_project(i),
                      session=_session(i), created_at=float(i))


@pytest.fixture(params=[False, True], ids=["flat", "lists"])
def store(request, tmp_path):
    """ROWS memories of one chunk (memory id i + 1 holds vector i), flat or in 60 trained lists
    (16 of them probed)."""
    conn = vector_file(tmp_path / "b.db", GENERATION, DIM)
    vecs = _clustered(np.random.default_rng(0), ROWS)
    with write_transaction(conn):
        for i, vec in enumerate(vecs):
            _add(conn, i, vec)
    if request.param:
        assert rebalance.train(conn, GENERATION, lists=60)
        while rebalance.refile(conn, GENERATION, 1000):
            pass
    yield conn, vecs
    conn.close()


def _queries(n: int = 4) -> np.ndarray:
    """Near stored vectors, as a question is near the memories that answer it."""
    rng = np.random.default_rng(1)
    vecs = _clustered(np.random.default_rng(0), ROWS)[rng.integers(0, ROWS, n)]
    x = vecs + 0.05 * rng.normal(size=vecs.shape).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _hamming(vecs: np.ndarray, query: np.ndarray) -> np.ndarray:
    bits = np.packbits(vecs > 0, axis=1, bitorder="little")
    return np.unpackbits(bits ^ np.packbits(query > 0, bitorder="little"), axis=1).sum(axis=1)


def _admits(i: int, f: Filters) -> bool:
    return ((not f.layers or _layer(i) in f.layers) and f.project in (None, _project(i))
            and f.session in (None, _session(i)) and (f.since is None or i >= f.since)
            and (f.until is None or i < f.until))


def test_the_layout_is_recognised(store):
    conn, _ = store
    assert bitscan.shape(conn, vectors.table(GENERATION)) == bitscan.Shape(vectors.table(GENERATION), DIM)


def test_the_pool_is_the_best_by_bits(store):
    """The best OVERSAMPLE x pool by Hamming distance, of which the best `pool` by the query's
    floats summed where a row's bit is set."""
    conn, vecs = store
    pool = 200
    for query in _queries():
        ids = bitscan.coarse(conn, vectors.table(GENERATION), GENERATION, query, 10, Filters(), pool, probe_scale=100)
        assert len(ids) == len(set(ids)) == pool
        distance = _hamming(vecs, query)
        chosen = np.zeros(ROWS, bool)
        chosen[np.array(ids) - 1] = True
        threshold = np.sort(distance)[bitscan.OVERSAMPLE * pool - 1]
        assert distance[chosen].max() <= threshold
        weighed = (vecs > 0).astype(np.float64) @ query
        surely_wide = ~chosen & (distance < threshold)  # kept by the Hamming pass, then dropped
        assert surely_wide.any()
        assert weighed[chosen].min() >= weighed[surely_wide].max() - 1e-5


def test_the_weighed_pool_after_more_lists_were_probed(store):
    """A filter that leaves too few in the nearest lists makes the scan read more of them: the
    pool is still the best of the admitted slots by the query's floats on their bits."""
    conn, vecs = store
    admitted = np.array([_admits(i, Filters(project="rare")) for i in range(ROWS)])
    for query in _queries(3):
        ids = bitscan.coarse(conn, vectors.table(GENERATION), GENERATION, query, 10, Filters(project="rare"), 10)
        weighed = (vecs > 0).astype(np.float64) @ query
        # 15 admitted, 4 x 10 kept by Hamming distance: all of them, weighed down to the best 10.
        best = np.flatnonzero(admitted)[np.argsort(-weighed[admitted])[:10]] + 1
        assert sorted(ids) == sorted(best.tolist())


def test_weighing_the_bits_by_the_query_finds_more_true_neighbours(store):
    conn, vecs = store
    found = {False: 0, True: 0}
    for query in _queries(8):
        true = set(exact_ids(vecs, query, 10))
        distance = _hamming(vecs, query)
        by_hamming = set((np.argsort(distance, kind="stable")[:40] + 1).tolist())
        ids = bitscan.coarse(conn, vectors.table(GENERATION), GENERATION, query, 10, Filters(), 40, probe_scale=100)
        found[False] += len(true & by_hamming)
        found[True] += len(true & set(ids))
    assert found[True] > found[False]


def test_the_same_top_k_as_sqlite_vec_and_exact_with_a_full_pool(store, monkeypatch):
    conn, vecs = store
    queries = _queries()
    full = [vectors.knn(conn, GENERATION, q, 10, Filters(), candidates=ROWS, probe_scale=100) for q in queries]
    every_list = [vectors.knn(conn, GENERATION, q, 10, Filters(), candidates=300, probe_scale=100) for q in queries]
    usual = [vectors.knn(conn, GENERATION, q, 10, Filters()) for q in queries]
    monkeypatch.setattr(bitscan, "shape", lambda conn, generation: None)
    for q, a, b, c in zip(queries, full, every_list, usual):
        assert [h[0] for h in a] == exact_ids(vecs, q, 10)
        # The weighed bit pass and sqlite-vec's Hamming distances pick their 300 differently; with
        # every list probed, both find the exact top 10.
        assert [h[0] for h in b] == exact_ids(vecs, q, 10)
        assert [h[0] for h in vectors.knn(conn, GENERATION, q, 10, Filters(), candidates=300, probe_scale=100)] \
            == exact_ids(vecs, q, 10)
        assert len(c) == 10 and [h[2] for h in c] == sorted((h[2] for h in c), reverse=True)


def test_deleted_rows_never_come_back(store):
    conn, vecs = store
    query = _queries(1)[0]
    gone = exact_ids(vecs, query, 40)[::2]  # every other one of the nearest 40
    with write_transaction(conn):
        for memory_id in gone:
            vectors.delete_for_memory(conn, GENERATION, memory_id)
        # Inside the write transaction that deleted them, and after new rows took free slots.
        inside = vectors.knn(conn, GENERATION, query, 10, Filters(), candidates=ROWS, probe_scale=100)
        new = _clustered(np.random.default_rng(7), 30)
        added = [_add(conn, ROWS + i, v) for i, v in enumerate(new)]
    kept = np.ones(ROWS, bool)
    kept[np.array(gone) - 1] = False
    assert [h[0] for h in inside] == exact_ids(vecs, query, 10, kept)
    ids = bitscan.coarse(conn, vectors.table(GENERATION), GENERATION, query, 10, Filters(), ROWS + 30, probe_scale=100)
    assert len(ids) == ROWS + 30 - len(gone) and not set(ids) & set(gone) and set(added) <= set(ids)
    everything = np.concatenate([vecs, new])
    mask = np.concatenate([kept, np.ones(len(new), bool)])
    hits = vectors.knn(conn, GENERATION, query, 10, Filters(), candidates=ROWS + 30, probe_scale=100)
    assert [h[0] for h in hits] == exact_ids(everything, query, 10, mask)


FILTERS = [
    Filters(layers=("insights",)),
    Filters(layers=("assets", "interact")),
    Filters(project="customer-project-2"),  # longer than a slot: checked whole
    Filters(project="rare"),  # 15 memories: more lists are probed
    Filters(project="customer-project-9"),  # same length and first bytes as others, none of them
    Filters(session="s3"),
    Filters(session="a-long-session-name-2", project="customer-project-1"),
    Filters(since=1000.0, until=1400.0),
    Filters(layers=("assets",), project="customer-project-3", until=2500.0),
]


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_filters_apply_inside_the_scan(store, filters):
    conn, vecs = store
    admitted = np.array([_admits(i, filters) for i in range(ROWS)])
    for query in _queries(3):
        assert bitscan.coarse(conn, vectors.table(GENERATION), GENERATION, query, 10, filters, 300) is not None  # no fallback
        hits = vectors.knn(conn, GENERATION, query, 10, filters)
        assert len(hits) == min(10, admitted.sum())
        assert all(admitted[h[0] - 1] for h in hits)
        exact = vectors.knn(conn, GENERATION, query, 10, filters, candidates=ROWS, probe_scale=100)
        assert [h[0] for h in exact] == exact_ids(vecs, query, 10, admitted)


def test_a_file_of_another_layout_is_searched_through_sqlite_vec(store, monkeypatch):
    conn, vecs = store
    with write_transaction(conn):  # the metadata columns in another order
        conn.execute(f"CREATE VIRTUAL TABLE vec_chunks_7 USING vec0(chunk_id INTEGER PRIMARY KEY, "
                     f"layer TEXT PARTITION KEY, shard INTEGER PARTITION KEY, embedding_bits bit[{DIM}], "
                     "session TEXT, project TEXT, created_at FLOAT, +memory_id INTEGER, +embedding BLOB)")
    assert bitscan.shape(conn, vectors.table(7)) is None
    assert bitscan.shape(conn, vectors.table(GENERATION)) is not None
    monkeypatch.setattr(bitscan, "_check", lambda conn, generation: None)
    fresh = open_connection(conn.filename)
    try:
        def fail(*args):
            raise AssertionError("the shadow tables were read")

        monkeypatch.setattr(bitscan, "_Scan", fail)
        for query in _queries(2):
            hits = vectors.knn(fresh, GENERATION, query, 10, Filters(project="customer-project-2"),
                               candidates=ROWS, probe_scale=100)
            admitted = np.array([_project(i) == "customer-project-2" for i in range(ROWS)])
            assert [h[0] for h in hits] == exact_ids(vecs, query, 10, admitted)
    finally:
        fresh.close()
