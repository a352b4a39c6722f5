"""The ANN index (magray/ann.py, magray/rebalance.py) on real small files with real sqlite-vec:
probing every list is exact, vectors land in their list, filters still give k results, and the
lists re-balance while another process writes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.reliability import start_worker, subprocess_env
from helpers.nearest import exact_ids
from helpers.vector_files import add_memory, clustered, vector_file
from magray import Memory, ann, rebalance, records, vectors
from magray.db import write_transaction
from magray.types import Filters

DIM = 32
GENERATION = 1
ROWS = 3000


def _clustered(rng: np.random.Generator, n: int, dim: int = DIM, centres: int = 12) -> np.ndarray:
    return clustered(rng, n, dim, centres)


def _add(conn, i: int, vec: np.ndarray, project: str, layer: str = "assets") -> int:
    return add_memory(conn, GENERATION, i, vec[None, :], layer=layer, project=project, created_at=float(i))


def _project(i: int) -> str:
    return "rare" if i % 200 == 7 else f"p{i % 3}"


@pytest.fixture
def store(tmp_path):
    """ROWS vectors in 12 topics; memory id i + 1 holds vector i; project 'rare' on 15 of them."""
    conn = vector_file(tmp_path / "a.db", GENERATION, DIM)
    vecs = _clustered(np.random.default_rng(0), ROWS)
    with write_transaction(conn):
        for i, vec in enumerate(vecs):
            _add(conn, i, vec, _project(i))
    yield conn, vecs
    conn.close()


def _shards(conn) -> dict[int, int]:
    return dict(conn.execute(f"SELECT chunk_id, shard FROM {vectors.table(GENERATION)}").fetchall())


def _lists(conn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = conn.execute(f"SELECT id, epoch, centroid FROM {ann.lists_table(GENERATION)} ORDER BY id").fetchall()
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
            np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows]))


def _trained(conn, lists: int = 24) -> None:
    assert rebalance.train(conn, GENERATION, lists=lists)
    while rebalance.refile(conn, GENERATION, 500):
        pass


def test_an_untrained_file_uses_the_flat_shards(store):
    conn, _ = store
    assert ann.state(conn, GENERATION) is None
    assert set(_shards(conn).values()) == set(range(vectors.SHARDS))
    assert not rebalance.training_due(conn, GENERATION)  # 3,000 vectors: below TRAIN_MIN_ROWS
    assert rebalance.training_due(conn, GENERATION, min_rows=1000)


def test_probing_every_list_equals_exact_search(store):
    conn, vecs = store
    _trained(conn)
    keys, _, _ = _lists(conn)
    assert set(_shards(conn).values()) <= set(keys.tolist())  # every vector was re-filed
    rng = np.random.default_rng(1)
    for query in _clustered(rng, 5):
        hits = vectors.knn(conn, GENERATION, query, 10, Filters(), candidates=ROWS, probe_scale=100)
        assert [h[0] for h in hits] == exact_ids(vecs, query, 10)
        usual = vectors.knn(conn, GENERATION, query, 10, Filters())  # recall: bench/bench_scale.py
        assert len(usual) == 10 and [h[2] for h in usual] == sorted((h[2] for h in usual), reverse=True)


def test_adds_and_deletes_land_in_the_right_list(store):
    conn, vecs = store
    _trained(conn)
    keys, _, centroids = _lists(conn)
    shards = _shards(conn)
    for chunk_id, shard in list(shards.items())[:300]:
        assert shard == keys[int(np.argmax(centroids @ vecs[chunk_id - 1]))]
    new = _clustered(np.random.default_rng(5), 20)
    with write_transaction(conn):
        ids = [_add(conn, ROWS + i, v, "p0") for i, v in enumerate(new)]
    shards = _shards(conn)
    for memory_id, vec in zip(ids, new):
        chunk = conn.execute("SELECT id FROM chunks WHERE memory_id = ?", (memory_id,)).fetchone()[0]
        assert shards[chunk] == keys[int(np.argmax(centroids @ vec))]
        hits = vectors.knn(conn, GENERATION, vec, 1, Filters())
        assert hits[0][1] == memory_id
    with write_transaction(conn):
        vectors.delete_for_memory(conn, GENERATION, ids[0])
    gone = vectors.knn(conn, GENERATION, new[0], 5, Filters(), candidates=ROWS, probe_scale=100)
    assert ids[0] not in [h[1] for h in gone]
    # A move re-files the vector under its new layer, in the same list.
    with write_transaction(conn):
        vectors.move(conn, GENERATION, ids[1], "insights", "elsewhere", "s")
    hit = vectors.knn(conn, GENERATION, new[1], 1, Filters(layers=("insights",), project="elsewhere"))
    assert hit[0][1] == ids[1] and hit[0][2] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("trained", [False, True])
def test_k_results_under_a_selective_filter(store, trained):
    conn, vecs = store
    if trained:
        _trained(conn)
    rare = np.array([_project(i) == "rare" for i in range(ROWS)])
    assert rare.sum() == 15
    query = vecs[np.flatnonzero(~rare)[0]]  # far from most rare ones, near other lists
    hits = vectors.knn(conn, GENERATION, query, 10, Filters(project="rare"))
    assert len(hits) == 10
    assert all(_project(h[1] - 1) == "rare" for h in hits)
    assert len(vectors.knn(conn, GENERATION, query, 40, Filters(project="rare"))) == 15
    full = vectors.knn(conn, GENERATION, query, 15, Filters(project="rare"), candidates=ROWS)
    assert [h[0] for h in full] == exact_ids(vecs, query, 15, rare)
    layer = vectors.knn(conn, GENERATION, query, 10, Filters(layers=("assets",), project="p1"))
    assert len(layer) == 10 and all(_project(h[1] - 1) == "p1" for h in layer)


def test_search_is_exact_by_bits_halfway_through_a_refile(store):
    conn, vecs = store
    _trained(conn, lists=10)
    more = _clustered(np.random.default_rng(9), 3000)
    with write_transaction(conn):
        for i, v in enumerate(more):
            _add(conn, ROWS + i, v, "p0")
    everything = np.concatenate([vecs, more])
    assert rebalance.train(conn, GENERATION, lists=30)
    rebalance.refile(conn, GENERATION, 2500)  # part of the vectors moved, the rest in epoch 1
    current = ann.state(conn, GENERATION)
    assert len(current.epochs) == 2 and current.refile_upto is not None
    epochs = dict(zip(*_lists(conn)[:2]))
    assert {epochs[s] for s in _shards(conn).values()} == {1, 2}
    for query in _clustered(np.random.default_rng(3), 3):
        hits = vectors.knn(conn, GENERATION, query, 10, Filters(), candidates=len(everything), probe_scale=100)
        assert [h[0] for h in hits] == exact_ids(everything, query, 10)
    while rebalance.refile(conn, GENERATION):
        pass
    assert len(ann.state(conn, GENERATION).epochs) == 1
    assert {epochs.get(s, 2) for s in _shards(conn).values()} == {2}


def test_rebalancing_while_another_process_writes(tmp_path, model_path):
    """Re-filing in batches here while a writer process adds memories (whose upkeep re-files
    too): no vector is lost or filed twice, and every memory is found by its own vector."""
    db = tmp_path / "live.db"
    rng = np.random.default_rng(4)
    with Memory.open(db, model=str(model_path)) as m:
        generation = m.load_model().generation
        conn = m.connection
        base = _clustered(rng, 2500, dim=384, centres=20)
        with write_transaction(conn):
            for i, vec in enumerate(base):
                content = f"filler {i}"
                memory_id = records.insert(conn, {
                    "layer": "assets", "content": content, "content_hash": records.content_hash(content),
                    "title": None, "kind": None, "source": None, "project": "", "session": "",
                    "metadata": "{}", "created_at": float(i), "importance": 0.5, "expires_at": None}, [])
                vectors.insert_chunks(conn, generation, memory_id, "assets", "", "", float(i), [f"f{i}"],
                                      vec[None, :])
        assert rebalance.train(conn, generation, lists=16)
        writer = start_worker("writer", db, subprocess_env(tmp_path), "--count", "40", "--tag", "w",
                              stdin=-1)
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        while rebalance.refile(conn, generation, 100):
            pass
        out, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
        assert rebalance.train(conn, generation, lists=24)  # and once more, now quietly
        rebalance.run(conn, generation)
        table = vectors.table(generation)
        chunks = {r[0] for r in conn.execute("SELECT id FROM chunks WHERE generation = ?", (generation,))}
        filed = [r[0] for r in conn.execute(f"SELECT chunk_id FROM {table}")]
        assert len(filed) == len(set(filed)) and set(filed) == chunks
        newest = ann.state(conn, generation).epochs[-1]
        shards = {r[0] for r in conn.execute(f"SELECT DISTINCT shard FROM {table}")}
        assert shards <= set(newest.keys.tolist())
        for memory_id in [int(line.split()[1]) for line in out.splitlines() if line.startswith("add ")]:
            vec = vectors.vectors_of(conn, generation, memory_id)[0]
            assert vectors.knn(conn, generation, vec, 1, Filters(project="shared"))[0][1] == memory_id


def test_the_file_trains_and_rebalances_its_lists_by_itself(tmp_path, model_path, monkeypatch):
    """Through the public API only: the lists appear as the file grows past the threshold (here
    lowered to 100 vectors), adds keep re-filing, optimize finishes, and search finds each memory."""
    monkeypatch.setattr(ann, "TRAIN_MIN_ROWS", 100)
    texts = [f"note {i}: the {w} of project {i % 7} moved to week {i % 52}"
             for i, w in zip(range(320), ["release", "budget", "review", "launch", "audit"] * 64)]
    with Memory.open(tmp_path / "grow.db", model=str(model_path)) as m:
        m.rules["maintenance"]["optimize_every_adds"] = 100
        generation = m.load_model().generation
        m.add_many([{"content": t, "layer": "assets"} for t in texts[:150]])
        first = ann.state(m.connection, generation)
        assert first is not None and first.epochs  # trained when the adds crossed 100
        m.add_many([{"content": t, "layer": "assets"} for t in texts[150:]])
        assert m.optimize()["ann_refiled"] >= 0
        current = ann.state(m.connection, generation)
        assert current.refile_upto is None and len(current.epochs) == 1
        keys = set(current.epochs[-1].keys.tolist())
        shards = {r[0] for r in m.connection.execute(f"SELECT shard FROM {vectors.table(generation)}")}
        assert shards <= keys
        for i in (0, 149, 150, 319):
            hits = m.search(texts[i], mode="vector", k=1, touch=False)
            assert hits[0].memory.content == texts[i]
