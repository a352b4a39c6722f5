"""Smaller files: the re-rank vectors stored as float16 (within a cosine of 1e-5 of the model's
float32 vectors), files written before with float32 vectors searched as they are and converted by
`optimize` with the same results, and what each part of the file costs (`stats --space`)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.reliability import open_raw

from magray import Memory, lifecycle, vectors
from magray.embed.cache import text_hash
from magray.schema import latest_version

FACTS = [
    "My sister Lena lives in Porto",
    "The user drinks green tea every morning",
    "Deploys go out on Fridays after the review",
    "The wifi password is on the fridge",
    "The dog is called Pixel and loves the beach",
    "The quarterly budget review moved to March",
    "The user prefers dark mode in every editor",
    "Our database backups run at three in the morning",
    "The kids have swimming lessons on Tuesdays",
    "Invoices go to accounting before the 5th",
    "long " + " ".join(f"paragraph {i} on the migration of cranes across the wetlands" for i in range(60)),
]
QUESTIONS = ["where does my sibling live?", "what does the user drink?", "when do we ship releases?",
             "what is the pet's name?", "how are the backups scheduled?", "birds flying south"]


def _model_vectors(conn, generation: int) -> dict[int, np.ndarray]:
    """chunk id -> the float32 vector the model gave for its text (the embedding cache keeps it as
    it came, before the vector table stored it)."""
    rows = conn.execute("SELECT c.id, e.vector FROM chunks AS c JOIN embedding_cache AS e ON e.text_hash = c.text_hash "
                        "WHERE c.generation = ?", (generation,)).fetchall()
    assert len({r[0] for r in rows}) == len(rows)
    return {chunk_id: np.frombuffer(blob, dtype="<f4") for chunk_id, blob in rows}


def _stored(conn, generation: int) -> dict[int, bytes]:
    return dict(conn.execute(f"SELECT chunk_id, embedding FROM {vectors.table(generation)}").fetchall())


def test_vectors_are_stored_as_float16_within_a_cosine_of_1e_5(mem):
    for text in FACTS:
        mem.add(text, layer="assets")
    bound = mem.load_model()
    conn = mem.connection
    model = _model_vectors(conn, bound.generation)
    stored = _stored(conn, bound.generation)
    assert stored.keys() == model.keys() and len(stored) > len(FACTS)  # the long fact has several chunks
    assert {len(blob) for blob in stored.values()} == {2 * bound.dim}  # float16: 768 bytes for 384 dims
    ids = list(stored)
    decoded = vectors.decode([stored[i] for i in ids], bound.dim)
    assert decoded.dtype == np.float32 and decoded.shape == (len(ids), bound.dim)
    for chunk_id, vec in zip(ids, decoded):
        want = model[chunk_id]
        assert float(vec @ want / (np.linalg.norm(vec) * np.linalg.norm(want))) >= 0.99999
        assert abs(float(np.linalg.norm(vec)) - 1) < 1e-6  # scaled back to unit length: a dot is a cosine
    # Encoding what was decoded gives the same bytes (an export and import round trip is stable).
    assert vectors.encode(decoded) == [stored[i] for i in ids]
    # float32 blobs decode to the same values, mixed with float16 ones.
    old = [model[i].astype("<f4").tobytes() for i in ids[:3]]
    mixed = vectors.decode(old + [stored[i] for i in ids[3:]], bound.dim)
    assert np.array_equal(mixed[:3], np.stack([model[i] for i in ids[:3]]))
    assert np.array_equal(mixed[3:], decoded[3:])


def _searches(mem: Memory) -> list[list[tuple[int, float]]]:
    return [[(h.memory.id, h.parts["similarity"]) for h in mem.search(q, mode="vector", k=5, touch=False, min_score=0)]
            for q in QUESTIONS]


def _as_before_float16(db) -> int:
    """Turn a file into what magray wrote before float16 storage: schema 5, and each vector the
    model's float32 bytes as the old insert stored them. Returns the vector count."""
    conn = open_raw(db)
    try:
        generation = conn.execute("SELECT generation FROM model_binding").fetchone()[0]
        model = _model_vectors(conn, generation)
        with conn:
            conn.executemany(f"UPDATE {vectors.table(generation)} SET embedding = ? WHERE chunk_id = ?",
                             [(vec.astype("<f4").tobytes(), chunk_id) for chunk_id, vec in model.items()])
            conn.execute("DELETE FROM settings WHERE key LIKE 'float16:%'")
            conn.execute("DROP INDEX memories_session")  # migration 7's
            conn.execute("PRAGMA user_version = 5")
        assert {len(b) for b in _stored(conn, generation).values()} == {4 * 384}
        return len(model)
    finally:
        conn.close()


def test_a_float32_file_is_searched_as_it_is_and_optimize_converts_it(db_path, model_path, monkeypatch):
    with Memory.open(db_path, model=str(model_path)) as mem:
        for text in FACTS:
            mem.add(text, layer="assets")
        for q in QUESTIONS:  # the queries' vectors go into the cache, so no model runs below
            mem.search(q, mode="vector", touch=False)
    count = _as_before_float16(db_path)

    with Memory.open(db_path, model=str(model_path)) as mem:
        conn = mem.connection
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
        generation = mem.load_model().generation
        # Searched as it is: each similarity is the float32 cosine of the memory's best chunk.
        before = _searches(mem)
        model = _model_vectors(conn, generation)
        memory_of = dict(conn.execute("SELECT id, memory_id FROM chunks"))
        for q, hits in zip(QUESTIONS, before):
            query = np.frombuffer(conn.execute("SELECT vector FROM embedding_cache WHERE text_hash = ?",
                                               (text_hash(q),)).fetchone()[0], dtype="<f4")
            best: dict[int, float] = {}
            for chunk_id, vec in model.items():
                best[memory_of[chunk_id]] = max(best.get(memory_of[chunk_id], -1.0), float(vec @ query))
            assert len(hits) == 5
            assert all(abs(sim - best[m]) <= 1e-6 for m, sim in hits)

        # Half-way: some vectors converted, the rest still float32; search does not change.
        monkeypatch.setattr(vectors, "CONVERT_BATCH", 4)
        assert vectors.to_float16(conn, generation) == 4
        lengths = sorted(len(b) for b in _stored(conn, generation).values())
        assert lengths.count(2 * 384) == 4 and lengths.count(4 * 384) == count - 4
        _same(_searches(mem), before)
        # A memory added now is stored as float16 and found.
        new = mem.add("The boiler was serviced in March", layer="assets").id
        assert mem.search("when was the heating checked?", mode="vector", k=1, touch=False)[0].memory.id == new
        mem.delete(new)  # (so that the searches below compare with the ones before)

        done = mem.optimize()
        assert done["vectors_to_float16"] == count - 4
        assert {len(b) for b in _stored(conn, generation).values()} == {2 * 384}
        assert conn.execute("SELECT value FROM settings WHERE key = ?", (f"float16:{generation}",)).fetchone() == ("true",)
        _same(_searches(mem), before)
        assert mem.optimize()["vectors_to_float16"] == 0
        assert mem.doctor().healthy


def _same(now: list[list[tuple[int, float]]], before: list[list[tuple[int, float]]]) -> None:
    """The same memories in the same order, each similarity within 1e-4: float16 rounding moves a
    unit vector by ~3e-4 (a cosine >= 0.99999 with where it was), a similarity by the share of that
    along the query (~2e-5 here)."""
    for got, want in zip(now, before):
        assert [m for m, _ in got[:len(want)]] == [m for m, _ in want]
        assert all(abs(a - b) <= 1e-4 for (_, a), (_, b) in zip(got, want))


def test_the_parts_of_the_file_add_up_to_its_used_pages(mem):
    for text in FACTS:
        mem.add(text, layer="assets", tags=["fact"])
    gone = mem.add("a memory that is purged, leaving free pages behind " + "x" * 20000, layer="interact").id
    mem.delete(gone)
    mem.clean()
    conn = mem.connection
    space = mem.stats(space=True)["space"]
    page_size, pages, free = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "freelist_count"))
    assert space["page_size"] == page_size
    assert space["used_bytes"] == (pages - free) * page_size and space["free_bytes"] == free * page_size
    assert free > 0
    parts = {p["name"]: p for p in space["parts"]}
    assert list(parts) == [p["name"] for p in sorted(space["parts"], key=lambda p: -p["bytes"])]
    assert set(parts) == {name for name, _ in lifecycle.FILE_PARTS} | {"other"}
    assert sum(p["bytes"] for p in parts.values()) == space["used_bytes"]
    assert all(p["bytes"] % page_size == 0 and 0 <= p["unused_bytes"] < p["bytes"] for p in parts.values())
    for name in ("re-rank vectors", "vector signatures", "memories and metadata", "full-text index", "chunks",
                 "embedding cache", "other"):
        assert parts[name]["bytes"] > 0, name
    assert space["memories"] == len(FACTS)
    assert parts["re-rank vectors"]["bytes_per_memory"] == round(parts["re-rank vectors"]["bytes"] / len(FACTS), 1)
    assert "space" not in mem.stats()  # it reads every page: only when asked


@pytest.mark.parametrize("as_json", [False, True])
def test_stats_space_on_the_command_line(cli, as_json):
    assert cli("add", "The user drinks green tea every morning").returncode == 0
    if as_json:
        space = cli.json("stats", "--space")["data"]["space"]
        assert {p["name"] for p in space["parts"]} >= {"re-rank vectors", "full-text index", "other"}
        assert sum(p["bytes"] for p in space["parts"]) == space["used_bytes"]
    else:
        out = cli("stats", "--space").stdout
        assert "space per part of the file" in out and "re-rank vectors" in out and "per memory" in out
        assert "space per part" not in cli("stats").stdout
