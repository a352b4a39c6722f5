"""Vectors in sqlite-vec: one vec0 table per model binding, a float column for exact distances and
a bit column for a fast coarse pass; layer as partition key, filter fields as metadata columns."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import apsw

if TYPE_CHECKING:
    import numpy as np

    from .types import Filters


def table(generation: int) -> str:
    return f"vec_chunks_{int(generation)}"


def create(conn: apsw.Connection, generation: int, dim: int) -> None:
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {table(generation)} USING vec0("
        "chunk_id INTEGER PRIMARY KEY, "
        "layer TEXT PARTITION KEY, "
        f"embedding float[{int(dim)}] distance_metric=cosine, "
        f"embedding_bits bit[{int(dim)}], "
        "project TEXT, session TEXT, created_at FLOAT, "
        "+memory_id INTEGER)"
    )


def drop(conn: apsw.Connection, generation: int) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table(generation)}")


def insert_chunks(conn: apsw.Connection, generation: int, memory_id: int, layer: str,
                  project: str, session: str, created_at: float, hashes: list[str],
                  vectors: np.ndarray) -> None:
    """Chunk rows and their vectors for one memory (inside the caller's transaction)."""
    for seq, (h, vec) in enumerate(zip(hashes, vectors)):
        chunk_id = conn.execute(
            "INSERT INTO chunks (memory_id, generation, seq, text_hash) VALUES (?, ?, ?, ?) RETURNING id",
            (memory_id, generation, seq, h)).fetchone()[0]
        blob = vec.astype("<f4").tobytes()
        conn.execute(
            f"INSERT INTO {table(generation)} (chunk_id, layer, embedding, embedding_bits, project, "
            "session, created_at, memory_id) VALUES (?, ?, ?, vec_quantize_binary(?), ?, ?, ?, ?)",
            (chunk_id, layer, blob, blob, project, session, created_at, memory_id))


def delete_for_memory(conn: apsw.Connection, generation: int, memory_id: int) -> None:
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM chunks WHERE memory_id = ? AND generation = ?", (memory_id, generation))]
    conn.executemany(f"DELETE FROM {table(generation)} WHERE chunk_id = ?", [(i,) for i in ids])
    conn.execute("DELETE FROM chunks WHERE memory_id = ? AND generation = ?", (memory_id, generation))


def move(conn: apsw.Connection, generation: int, memory_id: int, layer: str, project: str,
         session: str) -> None:
    """Re-file a memory's vectors under a new layer/project/session (the partition key cannot be
    updated in place, so each row is re-inserted with the same vector)."""
    name = table(generation)
    rows = conn.execute(
        f"SELECT v.chunk_id, v.embedding, v.created_at FROM {name} AS v "
        f"WHERE v.chunk_id IN (SELECT id FROM chunks WHERE memory_id = ? AND generation = ?)",
        (memory_id, generation)).fetchall()
    for chunk_id, blob, created_at in rows:
        conn.execute(f"DELETE FROM {name} WHERE chunk_id = ?", (chunk_id,))
        conn.execute(
            f"INSERT INTO {name} (chunk_id, layer, embedding, embedding_bits, project, session, "
            "created_at, memory_id) VALUES (?, ?, ?, vec_quantize_binary(?), ?, ?, ?, ?)",
            (chunk_id, layer, blob, blob, project, session, created_at, memory_id))


def _metadata_clause(filters: Filters) -> tuple[str, dict]:
    """Constraints that sqlite-vec applies inside the KNN scan (so k results come back even
    under a selective filter). Tags and expiry are checked afterwards against `memories`."""
    clauses, params = [], {}
    if filters.layers:
        if len(filters.layers) == 1:
            clauses.append("layer = :layer")
            params["layer"] = filters.layers[0]
    if filters.project is not None:
        clauses.append("project = :project")
        params["project"] = filters.project
    if filters.session is not None:
        clauses.append("session = :session")
        params["session"] = filters.session
    if filters.since is not None:
        clauses.append("created_at >= :since")
        params["since"] = filters.since
    if filters.until is not None:
        clauses.append("created_at < :until")
        params["until"] = filters.until
    return "".join(f" AND {c}" for c in clauses), params


def knn(conn: apsw.Connection, generation: int, query: np.ndarray, k: int, filters: Filters,
        *, candidates: int = 400) -> list[tuple[int, int, float]]:
    """(chunk_id, memory_id, cosine similarity), best first: a coarse Hamming-distance pass over
    the bit vectors inside sqlite-vec picks `candidates` chunks, then an exact cosine re-rank of
    their float vectors keeps the best k."""
    import numpy as np

    name = table(generation)
    where, params = _metadata_clause(filters)
    layers = list(filters.layers) if len(filters.layers) > 1 else [None]
    blob = query.astype("<f4").tobytes()
    rows: list[tuple[int, int, bytes]] = []
    for layer in layers:
        extra = dict(params)
        layer_clause = ""
        if layer is not None:
            layer_clause = " AND layer = :layer"
            extra["layer"] = layer
        rows.extend(conn.execute(
            f"SELECT chunk_id, memory_id, embedding FROM {name} "
            f"WHERE embedding_bits MATCH vec_quantize_binary(:q) AND k = :k{where}{layer_clause}",
            extra | {"q": blob, "k": max(k, candidates)}).fetchall())
    if not rows:
        return []
    matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    sims = matrix @ query.astype(np.float32)
    order = np.argsort(-sims)[:k]
    return [(rows[i][0], rows[i][1], float(sims[i])) for i in order]


def exact(conn: apsw.Connection, generation: int, query: np.ndarray, memory_ids: list[int],
          k: int) -> list[tuple[int, int, float]]:
    """Exact cosine over the chunks of the given memories (for filters selective enough that
    scanning their vectors beats searching the index)."""
    import numpy as np

    name = table(generation)
    rows = conn.execute(
        f"SELECT chunk_id, memory_id, embedding FROM {name} WHERE chunk_id IN "
        "(SELECT id FROM chunks WHERE generation = ? AND memory_id IN (SELECT value FROM json_each(?)))",
        (generation, json.dumps(memory_ids))).fetchall()
    if not rows:
        return []
    matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1)
    sims = matrix @ query.astype(np.float32)
    order = np.argsort(-sims)[:k]
    return [(rows[i][0], rows[i][1], float(sims[i])) for i in order]
