"""vectors.py against real sqlite-vec: the sharded coarse pass + exact re-rank, filters, exact, move."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.nearest import exact_ids
from magray import records, vectors
from magray.db import open_connection, write_transaction
from magray.schema import migrate
from magray.types import Filters

DIM = 32
GENERATION = 1


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _memory(conn, i: int, layer: str, project: str) -> int:
    content = f"memory {i}"
    return records.insert(conn, {
        "layer": layer, "content": content, "content_hash": records.content_hash(content),
        "title": None, "kind": None, "source": None, "project": project, "session": "",
        "metadata": "{}", "created_at": float(i), "importance": 0.5, "expires_at": None}, [])


@pytest.fixture
def store(tmp_path):
    """200 memories of one chunk each, layers round-robin; project 'rare' only on chunks whose id
    falls in shard 0, so that a filter on it finds all its rows in one shard."""
    conn = open_connection(tmp_path / "v.db")
    migrate(conn, tmp_path / "v.db")
    vecs = _unit(np.random.default_rng(0), 200)
    with write_transaction(conn):
        vectors.create(conn, GENERATION, DIM)
        for i, vec in enumerate(vecs):
            chunk_id = i + 1  # chunks are inserted in order into an empty table
            project = "rare" if chunk_id % vectors.SHARDS == 0 else "common"
            memory_id = _memory(conn, i, ("interact", "insights", "assets")[i % 3], project)
            vectors.insert_chunks(conn, GENERATION, memory_id, ("interact", "insights", "assets")[i % 3],
                                  project, "", float(i), [f"h{i}"], vec[None, :])
    yield conn, vecs
    conn.close()


def test_knn_with_a_full_pool_is_exact(store):
    conn, vecs = store
    query = _unit(np.random.default_rng(1), 1)[0]
    hits = vectors.knn(conn, GENERATION, query, 10, Filters(), candidates=1000)
    assert [h[0] for h in hits] == exact_ids(vecs, query, 10)
    assert [h[1] for h in hits] == [h[0] for h in hits]  # memory i+1 owns chunk i+1
    assert hits[0][2] == pytest.approx(float(vecs[hits[0][0] - 1] @ query), abs=1e-5)
    sims = [h[2] for h in hits]
    assert sims == sorted(sims, reverse=True)


def test_knn_returns_k_when_a_filter_leaves_them_in_one_shard(store):
    conn, vecs = store
    query = _unit(np.random.default_rng(2), 1)[0]
    rare = np.array([(i + 1) % vectors.SHARDS == 0 for i in range(len(vecs))])
    assert rare.sum() == 25
    # share = ceil(10 / SHARDS) = 2 per shard: the first pass finds 2, the retry 10.
    hits = vectors.knn(conn, GENERATION, query, 10, Filters(project="rare"), candidates=1)
    assert len(hits) == 10
    assert all((h[0] % vectors.SHARDS) == 0 for h in hits)
    hits = vectors.knn(conn, GENERATION, query, 10, Filters(project="rare"), candidates=1000)
    assert [h[0] for h in hits] == exact_ids(vecs, query, 10, rare)
    # Fewer matches than k: all of them.
    hits = vectors.knn(conn, GENERATION, query, 50, Filters(project="rare"), candidates=1)
    assert len(hits) == 25


def test_knn_filters_layers_inside_the_scan(store):
    conn, vecs = store
    query = _unit(np.random.default_rng(3), 1)[0]
    layer_of = np.array([i % 3 for i in range(len(vecs))])
    one = vectors.knn(conn, GENERATION, query, 5, Filters(layers=("insights",)), candidates=1000)
    assert [h[0] for h in one] == exact_ids(vecs, query, 5, layer_of == 1)
    two = vectors.knn(conn, GENERATION, query, 5, Filters(layers=("interact", "assets")), candidates=1000)
    assert [h[0] for h in two] == exact_ids(vecs, query, 5, layer_of != 1)


def test_exact_scores_only_the_given_memories(store):
    conn, vecs = store
    query = _unit(np.random.default_rng(4), 1)[0]
    ids = list(range(1, 200, 7))
    hits = vectors.exact(conn, GENERATION, query, ids, 5)
    mask = np.zeros(len(vecs), dtype=bool)
    mask[[i - 1 for i in ids]] = True
    assert [h[0] for h in hits] == exact_ids(vecs, query, 5, mask)
    assert vectors.exact(conn, GENERATION, query, [], 5) == []


def test_move_keeps_the_vector_under_the_new_layer(store):
    conn, vecs = store
    with write_transaction(conn):
        vectors.move(conn, GENERATION, 2, "assets", "elsewhere", "s1")
    hits = vectors.knn(conn, GENERATION, vecs[1], 1, Filters(layers=("assets",), project="elsewhere"))
    assert hits[0][:2] == (2, 2)
    assert hits[0][2] == pytest.approx(1.0, abs=1e-5)
    assert vectors.knn(conn, GENERATION, vecs[1], 1, Filters(project="common", layers=("insights",)))[0][0] != 2


def test_delete_removes_the_vectors(store):
    conn, vecs = store
    with write_transaction(conn):
        vectors.delete_for_memory(conn, GENERATION, 3)
    hits = vectors.knn(conn, GENERATION, vecs[2], 3, Filters(), candidates=1000)
    assert 3 not in [h[0] for h in hits]
