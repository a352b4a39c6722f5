"""search.vector_candidates on real files: the best `limit` visible memories by their best chunk,
whatever the number of chunks per memory, of hidden (expired, deleted) memories and the limit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.reliability import run_cli, subprocess_env
from helpers.vector_files import add_memory, vector_file
from magray import records, search, vectors
from magray.errors import StoreError
from magray.db import write_transaction
from magray.types import Filters

DIM = 16
GENERATION = 1
NOW = 1_800_000_000.0


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _add(conn, i: int, chunks: np.ndarray, *, expired: bool = False, project: str = "") -> int:
    return add_memory(conn, GENERATION, i, chunks, layer="interact", project=project, created_at=NOW - 100,
                      expires_at=NOW - 1 if expired else None)


def _file(tmp_path, name: str):
    return vector_file(tmp_path / name, GENERATION, DIM)


def _expected(stored: dict[int, np.ndarray], hidden: set[int], query: np.ndarray, limit: int) -> list[int]:
    best = {m: float(np.max(chunks @ query)) for m, chunks in stored.items() if m not in hidden}
    return sorted(best, key=lambda m: -best[m])[:limit]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(chunk_counts=st.lists(st.integers(1, 12), min_size=1, max_size=25),
       hidden_every=st.integers(1, 5), limit=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_the_best_visible_memories_whatever_their_chunks(tmp_path_factory, chunk_counts, hidden_every,
                                                        limit, seed):
    conn = _file(tmp_path_factory.mktemp("vc"), "p.db")
    rng = np.random.default_rng(seed)
    stored, hidden = {}, set()
    with write_transaction(conn):
        for i, n in enumerate(chunk_counts):
            chunks = _unit(rng, n)
            expired = i % hidden_every == 1
            memory_id = _add(conn, i, chunks, expired=expired)
            stored[memory_id] = chunks
            if expired:
                hidden.add(memory_id)
    query = _unit(rng, 1)[0]
    found = search.vector_candidates(conn, GENERATION, query, Filters(), NOW, limit)
    assert [m for m, _ in found] == _expected(stored, hidden, query, limit)
    sims = [s for _, s in found]
    assert sims == sorted(sims, reverse=True)
    conn.close()


def test_more_hidden_chunks_than_sqlite_vec_lists_at_once(tmp_path):
    """Past MAX_K chunks of expired memories nearer the query than any visible one, the visible
    memories are still found (by scoring them directly) instead of asking sqlite-vec for k > 4096."""
    conn = _file(tmp_path, "h.db")
    rng = np.random.default_rng(7)
    query = _unit(rng, 1)[0]
    near = query + 0.05 * _unit(rng, vectors.MAX_K + 200)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    far = _unit(rng, 30)
    stored = {}
    with write_transaction(conn):
        for i, vec in enumerate(near):
            _add(conn, i, vec[None, :], expired=True)
        for i, vec in enumerate(far):
            stored[_add(conn, 10_000 + i, vec[None, :])] = vec[None, :]
    found = search.vector_candidates(conn, GENERATION, query, Filters(), NOW, 10)
    assert [m for m, _ in found] == _expected(stored, set(), query, 10)
    conn.close()


def test_a_document_of_many_chunks_leaves_room_for_other_memories(tmp_path):
    conn = _file(tmp_path, "d.db")
    rng = np.random.default_rng(8)
    query = _unit(rng, 1)[0]
    document = query + 0.01 * _unit(rng, 600)
    document /= np.linalg.norm(document, axis=1, keepdims=True)
    with write_transaction(conn):
        doc_id = _add(conn, 0, document)
        others = {_add(conn, i, vec[None, :]): vec[None, :] for i, vec in enumerate(_unit(rng, 60), start=1)}
    found = search.vector_candidates(conn, GENERATION, query, Filters(), NOW, 50)
    assert [m for m, _ in found] == [doc_id] + _expected(others, set(), query, 49)
    conn.close()


def test_knn_refuses_a_k_sqlite_vec_would_refuse(tmp_path):
    conn = _file(tmp_path, "k.db")
    with pytest.raises(ValueError):
        vectors.knn(conn, GENERATION, _unit(np.random.default_rng(0), 1)[0], vectors.MAX_K + 1, Filters())
    conn.close()


# The reproductions of the defect, through the real CLI and the real model.

def test_one_long_document_does_not_break_search(tmp_path):
    db, env = tmp_path / "d.db", subprocess_env(tmp_path)
    document = " ".join(["Kubernetes nodes are drained before the kubelet restarts."] * 1100)
    assert run_cli(db, env, "add", "--layer", "assets", input=document).returncode == 0
    assert run_cli(db, env, "add", "the user likes green tea", "--layer", "insights").returncode == 0
    for mode in ("hybrid", "vector"):
        proc = run_cli(db, env, "--json", "search", "what does the user drink?", "--mode", mode)
        assert proc.returncode == 0, proc.stderr
        contents = [h["memory"]["content"] for h in json.loads(proc.stdout)["data"]]
        assert "the user likes green tea" in contents, mode


def test_a_day_of_expired_turns_does_not_break_search(tmp_path):
    db, env = tmp_path / "e.db", subprocess_env(tmp_path)
    assert run_cli(db, env, "add", "the user likes green tea", "--layer", "insights").returncode == 0
    # Expired on arrival; each write purges only a few of them, so most stay in the file.
    turns = "".join(json.dumps({"content": f"turn {i}: we talked about tea and coffee again",
                                "layer": "interact", "ttl": 0.001}) + "\n" for i in range(300))
    assert run_cli(db, env, "add", "--jsonl", "-", input=turns).returncode == 0
    for mode in ("hybrid", "vector"):
        proc = run_cli(db, env, "--json", "search", "what does the user drink?", "--mode", mode)
        assert proc.returncode == 0, proc.stderr
        assert [h["memory"]["content"] for h in json.loads(proc.stdout)["data"]] == ["the user likes green tea"]


def test_search_with_the_largest_k_on_a_small_file(tmp_path):
    db, env = tmp_path / "s.db", subprocess_env(tmp_path)
    for text in ("the user likes green tea", "deploys go out on Fridays", "Ana reviews infra changes"):
        assert run_cli(db, env, "add", text, "--layer", "insights").returncode == 0
    for k in ("3300", str(records.MAX_LIMIT)):
        proc = run_cli(db, env, "--json", "search", "what does the user drink?", "-k", k, "--all")
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)["data"]) == 3


def test_a_small_project_is_searched_exactly_and_a_large_one_through_the_index(tmp_path):
    conn = _file(tmp_path, "p.db")
    rng = np.random.default_rng(11)
    small, large = {}, {}
    with write_transaction(conn):
        for i in range(search.EXACT_SCOPE + 60):
            chunks = _unit(rng, 1 + i % 3)
            if i % 40 == 0:
                small[_add(conn, i, chunks, project="small")] = chunks
            else:
                large[_add(conn, i, chunks, project="large")] = chunks
    query = _unit(rng, 1)[0]
    assert search._few_ids(conn, Filters(project="small"), NOW) is not None
    assert search._few_ids(conn, Filters(project="large"), NOW) is None
    found = search.vector_candidates(conn, GENERATION, query, Filters(project="small"), NOW, 10)
    assert [m for m, _ in found] == _expected(small, set(), query, 10)
    # Through the index (16-bit coarse pass here): approximate, but k results of that project.
    found = search.vector_candidates(conn, GENERATION, query, Filters(project="large"), NOW, 10)
    assert len(found) == 10 and {m for m, _ in found} <= set(large)
    assert len({m for m, _ in found} & set(_expected(large, set(), query, 10))) >= 6
    conn.close()


def test_the_scope_of_a_session_alone_is_found_through_an_index(tmp_path):
    # Deciding between exact and indexed search counts the scope's memories: for a session of
    # any project that count once walked every memory of the file.
    conn = _file(tmp_path, "s.db")
    statements = []
    conn.exec_trace = lambda cursor, sql, bindings: statements.append((sql, bindings)) or True
    records.filtered_ids(conn, Filters(session="chat-1"), NOW, most=search.EXACT_SCOPE + 1)
    conn.exec_trace = None
    sql, bindings = next((s, b) for s, b in statements if "LIMIT :most" in s)
    plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, bindings))
    assert "USING INDEX memories_session" in plan, plan
    conn.close()


def test_a_query_of_another_dimension_is_refused_not_scored(tmp_path):
    # A float16 row of 2n dimensions is as long as a float32 row of n: read at the query's size
    # it would give cosines of noise.
    conn = _file(tmp_path, "d.db")
    rng = np.random.default_rng(5)
    with write_transaction(conn):
        memory_id = _add(conn, 0, _unit(rng, 1))
    with pytest.raises(StoreError, match="16-dimension vectors, the query has 8"):
        vectors.exact(conn, GENERATION, np.ones(8, np.float32) / np.sqrt(8), [memory_id], None)
    conn.close()
