"""Small vector files written the way magray writes them (records.insert, vectors.insert_chunks),
without a model: for tests of the vector index that need thousands of memories."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from magray import records, vectors
from magray.db import open_connection, write_transaction
from magray.schema import migrate


def clustered(rng: np.random.Generator, n: int, dim: int, centres: int = 12) -> np.ndarray:
    """Unit vectors around a few centres, like embeddings of a few topics."""
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vector_file(path: Path, generation: int, dim: int):
    """A migrated file with an empty vector table of `generation`; its open connection."""
    conn = open_connection(path)
    migrate(conn, path)
    with write_transaction(conn):
        vectors.create(conn, generation, dim)
    return conn


def add_memory(conn, generation: int, i: int, chunks: np.ndarray, *, layer: str = "assets",
               project: str = "", session: str = "", created_at: float = 0.0,
               expires_at: float | None = None) -> int:
    """Memory "memory {i}" with one vector per row of `chunks` (inside the caller's transaction)."""
    content = f"memory {i}"
    memory_id = records.insert(conn, {
        "layer": layer, "content": content, "content_hash": records.content_hash(content),
        "title": None, "kind": None, "source": None, "project": project, "session": session,
        "metadata": "{}", "created_at": created_at, "importance": 0.5, "expires_at": expires_at}, [])
    vectors.insert_chunks(conn, generation, memory_id, layer, project, session, created_at,
                          [f"h{i}-{j}" for j in range(len(chunks))], chunks)
    return memory_id
