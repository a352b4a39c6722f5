"""The embedding cache: vectors keyed by (model sha256, text hash), shared by every process."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import apsw

from .prompts import cache_key

if TYPE_CHECKING:
    import numpy as np

    from .embedder import Embedder


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Embedded:
    """Vectors for a list of texts, and what the cache still has to learn (written by the caller
    inside its own short write transaction)."""

    vectors: np.ndarray
    hashes: list[str]
    new_entries: dict[str, bytes] = field(default_factory=dict)
    hits: int = 0
    hit_hashes: list[str] = field(default_factory=list)
    # The cache's model key they belong under (the model's sha256, with the prompt if any).
    model_key: str | None = None


def embed_cached(conn: apsw.Connection, embedder: Embedder, model_sha256: str,
                 texts: list[str], prompt: str = "") -> Embedded:
    """Vectors for `texts` (each embedded after `prompt`): from the cache where the model saw
    the text before, else computed. Runs outside any write transaction: embedding never holds
    the write lock."""
    import numpy as np

    key = cache_key(model_sha256, prompt)
    hashes = [text_hash(t) for t in texts]
    found: dict[str, bytes] = {}
    unique = sorted(set(hashes))
    for start in range(0, len(unique), 500):
        batch = unique[start:start + 500]
        found.update(conn.execute(
            "SELECT text_hash, vector FROM embedding_cache WHERE model_sha256 = ? "
            "AND text_hash IN (SELECT value FROM json_each(?))",
            (key, json.dumps(batch))).fetchall())
    vectors = np.empty((len(texts), embedder.dim), dtype=np.float32)
    missing: dict[str, int] = {}
    hits = 0
    hit_hashes = []
    for i, h in enumerate(hashes):
        blob = found.get(h)
        if blob is not None and len(blob) == 4 * embedder.dim:
            vectors[i] = np.frombuffer(blob, dtype=np.float32)
            hits += 1
            hit_hashes.append(h)
        else:
            missing.setdefault(h, i)
    new_entries: dict[str, bytes] = {}
    if missing:
        order = list(missing.items())
        computed = embedder.embed([prompt + texts[i] for _, i in order])
        for (h, _), vec in zip(order, computed):
            new_entries[h] = vec.astype("<f4").tobytes()
        for i, h in enumerate(hashes):
            if h in new_entries:
                vectors[i] = np.frombuffer(new_entries[h], dtype=np.float32)
    return Embedded(vectors=vectors, hashes=hashes, new_entries=new_entries, hits=hits,
                    hit_hashes=hit_hashes, model_key=key)


def cached(conn: apsw.Connection, model_sha256: str, text: str, dim: int,
           prompt: str = "") -> Embedded | None:
    """The cached vector of one text (a search query), or None: no model needs loading for it."""
    import numpy as np

    key = cache_key(model_sha256, prompt)
    h = text_hash(text)
    row = conn.execute("SELECT vector FROM embedding_cache WHERE model_sha256 = ? AND text_hash = ?",
                       (key, h)).fetchone()
    if row is None or len(row[0]) != 4 * dim:
        return None
    vector = np.frombuffer(row[0], dtype=np.float32).reshape(1, dim)
    return Embedded(vectors=vector, hashes=[h], hits=1, hit_hashes=[h], model_key=key)


def store(conn: apsw.Connection, model_sha256: str, embedded: Embedded, now: float,
          max_entries: int | None = None) -> int:
    """Inside the caller's write transaction: add what was computed, mark what was hit as used,
    and evict least-recently-used entries past `max_entries`. Returns how many were evicted."""
    key = embedded.model_key or model_sha256
    conn.executemany(
        "INSERT INTO embedding_cache (model_sha256, text_hash, vector, created_at, used_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET used_at = excluded.used_at",
        [(key, h, blob, now, now) for h, blob in embedded.new_entries.items()],
    )
    conn.executemany("UPDATE embedding_cache SET used_at = ? WHERE model_sha256 = ? AND text_hash = ?",
                     [(now, key, h) for h in set(embedded.hit_hashes)])
    if max_entries is None or not embedded.new_entries:
        return 0
    excess = conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0] - max_entries
    if excess <= 0:
        return 0
    conn.execute(
        "DELETE FROM embedding_cache WHERE (model_sha256, text_hash) IN ("
        "  SELECT c.model_sha256, c.text_hash FROM embedding_cache AS c"
        "  WHERE NOT EXISTS (SELECT 1 FROM chunks AS k WHERE k.text_hash = c.text_hash)"
        "  ORDER BY c.used_at LIMIT ?)", (excess,))
    return conn.changes()


def stats(conn: apsw.Connection) -> dict[str, int]:
    entries, size = conn.execute(
        "SELECT count(*), coalesce(sum(length(vector)), 0) FROM embedding_cache").fetchone()
    return {"entries": entries, "bytes": size}
