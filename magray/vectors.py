"""Vectors in sqlite-vec: one vec0 table per model binding. A bit column (the sign of each
dimension) drives a fast coarse KNN pass inside sqlite-vec; the float vector rides along as an
auxiliary column for the exact cosine re-rank. Layer and shard are partition keys, the other filter
fields metadata columns, so that filters apply inside the scan. The shard of a vector is its list
in the ANN index (magray/ann.py): a query scans only the lists nearest to it. The float vector is
stored as float16 (`encode`), half the bytes of float32 for a cosine within 1e-5 of it; files
written before hold float32 rows, which `decode` reads as well and `Memory.optimize()` converts
(`to_float16`). Numbers: bench/RESULTS.md."""

from __future__ import annotations

import json
import math
import re
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import apsw

from . import ann, bitscan
from .db import get_setting, set_setting, write_transaction
from .errors import StoreError

if TYPE_CHECKING:
    import numpy as np

    from .types import Filters

# sqlite-vec's top-k selection costs about (rows scanned) x k, so one KNN over every row with a
# big k is slow (~50 ms at 100K rows and k=200 on 2 cores). In a file whose ANN lists are not
# trained yet, each chunk goes to one of SHARDS partitions (chunk_id % SHARDS) and each shard is
# asked for its share of the candidates: the same pool for about 1/SHARDS of the cost.
SHARDS = ann.SHARDS
# Bit-vector candidates re-ranked exactly per query: CANDIDATES up to CANDIDATES_FLAT_ROWS
# vectors, then more as the file grows (see default_candidates), at most MAX_CANDIDATES.
CANDIDATES = 256
CANDIDATES_FLAT_ROWS = 100_000
MAX_CANDIDATES = 2048
# The largest k sqlite-vec accepts in one KNN query (SQLITE_VEC_VEC0_K_MAX).
MAX_K = 4096
# How the float vector is stored: little-endian float16 (768 bytes for 384 dimensions, ~5 rows in a
# 4 KB page; float32 fit 2). Unit vectors lose < 1e-5 of cosine (tests/test_file_size.py).
STORED = "<f2"
# float32 rows converted to float16 per write transaction by `to_float16` (~0.1 s on 2 cores).
CONVERT_BATCH = 2_000
_DIM = re.compile(r"\bembedding_bits\s+bit\[(\d+)\]", re.IGNORECASE)  # see create


def table(generation: int) -> str:
    return f"vec_chunks_{int(generation)}"


def encode(matrix: np.ndarray) -> list[bytes]:
    """The stored form of float vectors (one per row): little-endian float16."""
    import numpy as np

    return [row.tobytes() for row in np.asarray(matrix, dtype=STORED)]


def decode(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored vectors as float32 rows, shape (len(blobs), dim): float16 blobs (2 bytes a dimension)
    and the float32 ones (4 bytes) of files written before, told apart by their length. float16
    rows are scaled back to unit length: rounding moves a length by up to ~1e-4 but a direction by
    far less, and the re-rank takes a dot product for the cosine."""
    import numpy as np

    if all(len(b) == 2 * dim for b in blobs):
        return _unit(np.frombuffer(b"".join(blobs), dtype=STORED).reshape(len(blobs), dim).astype(np.float32))
    out = np.empty((len(blobs), dim), dtype=np.float32)
    for i, blob in enumerate(blobs):
        if len(blob) not in (2 * dim, 4 * dim):
            raise StoreError(f"a stored vector has {len(blob)} bytes, not {dim} float16 or float32 values: "
                             "run `magray doctor --repair`")
        out[i] = np.frombuffer(blob, dtype=STORED if len(blob) == 2 * dim else "<f4")
        if len(blob) == 2 * dim:
            out[i] = _unit(out[i])
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def dimension(conn: apsw.Connection, generation: int) -> int | None:
    """The dimension of the vector table of `generation`, from its definition (None: no table)."""
    row = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?",
                       (table(generation),)).fetchone()
    found = _DIM.search(row[0]) if row else None
    return int(found.group(1)) if found else None


def _converted_key(generation: int) -> str:
    return f"float16:{int(generation)}"


def create(conn: apsw.Connection, generation: int, dim: int) -> None:
    # The float vector is an auxiliary (+) column: a plain row lookup, whereas reading a vec0
    # vector column costs ~0.3 ms a row (it seeks inside a chunk blob of 1024 vectors).
    if dimension(conn, generation) is None:  # a new table holds float16 rows only
        set_setting(conn, _converted_key(generation), True)
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {table(generation)} USING vec0("
        "chunk_id INTEGER PRIMARY KEY, "
        "layer TEXT PARTITION KEY, "
        "shard INTEGER PARTITION KEY, "
        f"embedding_bits bit[{int(dim)}], "
        "project TEXT, session TEXT, created_at FLOAT, "
        "+memory_id INTEGER, +embedding BLOB)"
    )
    ann.create(conn, generation)


def drop(conn: apsw.Connection, generation: int) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table(generation)}")
    set_setting(conn, _converted_key(generation), None)
    ann.drop(conn, generation)


def _insert_sql(name: str) -> str:
    # The bits come from the float32 vector (:floats), as they always did.
    return (f"INSERT INTO {name} (chunk_id, layer, shard, embedding_bits, project, session, "
            "created_at, memory_id, embedding) "
            "VALUES (:chunk_id, :layer, :shard, vec_quantize_binary(:floats), "
            ":project, :session, :created_at, :memory_id, :embedding)")


def insert_chunks(conn: apsw.Connection, generation: int, memory_id: int, layer: str,
                  project: str, session: str, created_at: float, hashes: list[str],
                  vectors: np.ndarray) -> None:
    """Chunk rows and their vectors for one memory (inside the caller's transaction), each
    vector filed in its ANN list at once."""
    chunk_ids = [conn.execute(
        "INSERT INTO chunks (memory_id, generation, seq, text_hash) VALUES (?, ?, ?, ?) RETURNING id",
        (memory_id, generation, seq, h)).fetchone()[0] for seq, h in enumerate(hashes)]
    file_rows(conn, generation, [
        {"chunk_id": chunk_id, "layer": layer, "project": project, "session": session,
         "created_at": created_at, "memory_id": memory_id} for chunk_id in chunk_ids], vectors)


def file_rows(conn: apsw.Connection, generation: int, rows: list[dict], matrix: np.ndarray) -> None:
    """Insert vector rows (chunk_id, layer, project, session, created_at, memory_id), row i with
    the float vector matrix[i], each into the list of the ANN index nearest to it."""
    import numpy as np

    if not rows:
        return
    matrix = np.asarray(matrix, dtype=np.float32).reshape(len(rows), -1)
    shards = ann.assign(conn, generation, [r["chunk_id"] for r in rows], matrix)
    conn.executemany(_insert_sql(table(generation)), [
        r | {"shard": s, "floats": vec.astype("<f4").tobytes(), "embedding": blob}
        for r, s, vec, blob in zip(rows, shards, matrix, encode(matrix))])


def _rows_for_memories(conn: apsw.Connection, generation: int, memory_ids: list[int],
                       columns: str) -> list[tuple]:
    # Driven by `chunks`, so that sqlite-vec gets one point lookup per chunk: a
    # `chunk_id IN (subquery)` constraint on a vec0 table is a full scan (~75 ms at 100K rows).
    return conn.execute(
        f"SELECT {columns} FROM chunks AS c JOIN {table(generation)} AS v ON v.chunk_id = c.id "
        "WHERE c.generation = ? AND c.memory_id IN (SELECT value FROM json_each(?))",
        (generation, json.dumps(memory_ids))).fetchall()


def vectors_of(conn: apsw.Connection, generation: int, memory_id: int) -> np.ndarray:
    """The stored vectors of a memory's chunks, in chunk order (float32 rows)."""
    import numpy as np

    rows = conn.execute(
        f"SELECT v.embedding FROM chunks AS c JOIN {table(generation)} AS v ON v.chunk_id = c.id "
        "WHERE c.generation = ? AND c.memory_id = ? ORDER BY c.seq", (generation, memory_id)).fetchall()
    return decode([r[0] for r in rows], dimension(conn, generation)) if rows else np.empty((0, 0))


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
    rows = _rows_for_memories(conn, generation, [memory_id], "v.chunk_id, v.embedding, v.created_at")
    if not rows:
        return
    conn.executemany(f"DELETE FROM {name} WHERE chunk_id = ?", [(r[0],) for r in rows])
    file_rows(conn, generation, [
        {"chunk_id": chunk_id, "layer": layer, "project": project, "session": session,
         "created_at": created_at, "memory_id": memory_id} for chunk_id, _, created_at in rows],
        decode([r[1] for r in rows], dimension(conn, generation)))


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


def default_candidates(conn: apsw.Connection) -> int:
    """How many bit-pass candidates a query re-ranks: CANDIDATES up to 100K vectors, doubling with
    each tenfold growth (512 at 1M). The true nearest neighbours sink among the best bit matches as
    the file grows: the best 256 / 512 (bits weighed by the query's floats, bitscan.OVERSAMPLE) held
    0.990 of the exact top 10 at 100K vectors, 0.923 / 0.963 at 1M (question queries,
    bench/RESULTS.md)."""
    rows = conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0]
    if rows <= CANDIDATES_FLAT_ROWS:
        return CANDIDATES
    return int(min(MAX_CANDIDATES, round(CANDIDATES * 2 ** math.log10(rows / CANDIDATES_FLAT_ROWS))))


def knn(conn: apsw.Connection, generation: int, query: np.ndarray, k: int, filters: Filters,
        *, candidates: int | None = None, probe_scale: int = 1) -> list[tuple[int, int, float]]:
    """(chunk_id, memory_id, cosine similarity), best first: a coarse pass over the bit vectors of
    the nearest ANN lists (read from sqlite-vec's tables by magray/bitscan.py; else by vec0 KNN
    queries) keeps the best max(k, candidates) chunks, then an exact cosine re-rank of their
    float vectors keeps the best k. Returns k
    results whenever k chunks pass the filter (more lists are probed until they are found);
    k is at most MAX_K. `probe_scale`: probe that many times the usual number of lists."""
    if not 0 < k <= MAX_K:
        raise ValueError(f"k must be from 1 to {MAX_K}, got {k}")
    where, params = _metadata_clause(filters)
    layers = list(filters.layers) if len(filters.layers) > 1 else [None]
    sql = (f"SELECT chunk_id, distance FROM {table(generation)} "
           f"WHERE embedding_bits MATCH vec_quantize_binary(:q) AND k = :k AND shard = :shard{where}")
    base = params | {"q": query.astype("<f4").tobytes()}
    if candidates is None:
        candidates = default_candidates(conn)
    pool = min(max(k, candidates), MAX_K)
    chosen = bitscan.coarse(conn, table(generation), generation, query, k, filters, pool, probe_scale)
    if chosen is not None:  # the same pass, read from sqlite-vec's tables in one go
        return _best(conn, generation, float_rows(conn, generation, chosen), query, k)
    # sqlite-vec's queries give Hamming distances only, which need twice the pool for the recall of
    # the weighed pass (at 1M: 1,024 by Hamming distance 0.950, 512 weighed 0.963).
    pool = min(pool * 2, MAX_K)

    def scan(layer: str | None, shard: int, n: int) -> list[tuple[int, int]]:
        if layer is None:
            return conn.execute(sql, base | {"shard": shard, "k": n}).fetchall()
        return conn.execute(sql + " AND layer = :layer", base | {"shard": shard, "k": n, "layer": layer}).fetchall()

    current = ann.state(conn, generation)
    asked: dict[tuple[str | None, int], int] = {}
    found: dict[tuple[str | None, int], list[tuple[int, int]]] = {}
    scale = probe_scale
    while True:
        keys, complete = ann.nearest_lists(current, query, scale)
        lists = sum(key >= ann.LIST_BASE for key in keys)
        for shard in keys:
            # Flat shards hold a random share of the vectors, so each is asked for its share of
            # the pool; a list holds the vectors near its centroid, and the nearest ones may hold
            # most of the pool: asked for twice their share, then more below if they are full.
            n = -(-pool // SHARDS) if shard < ann.LIST_BASE else min(pool, 2 * -(-pool // max(lists, 1)))
            for layer in layers:
                if (layer, shard) not in asked:
                    asked[layer, shard], found[layer, shard] = n, scan(layer, shard, n)
        while True:
            full = [key for key, rows in found.items() if len(rows) == asked[key] and asked[key] < MAX_K]
            total = sum(map(len, found.values()))
            if total < k:
                refine = full
            else:
                # A full list whose worst row beats the pool's worst may hold more of the pool.
                worst = sorted(d for rows in found.values() for _, d in rows)[min(pool, total) - 1]
                refine = [key for key in full if key[1] >= ann.LIST_BASE and found[key][-1][1] < worst]
            if not refine:
                break
            for key in refine:
                asked[key] = min(asked[key] * 4, MAX_K)
                found[key] = scan(key[0], key[1], asked[key])
        if total >= k or complete:
            break
        scale *= 4  # a filter left too few in the nearest lists: probe more of them
    coarse = sorted((d, chunk_id) for rows in found.values() for chunk_id, d in rows)[:pool]
    return _best(conn, generation, float_rows(conn, generation, [c for _, c in coarse]), query, k)


def auxiliary_table(conn: apsw.Connection, generation: int) -> str | None:
    """sqlite-vec's own table of the auxiliary columns (memory_id, embedding), when it has the
    expected shape: read directly, a float vector costs ~12 us instead of ~75 us through the
    virtual table (measured at 100K rows). None: go through the virtual table."""
    name = f"{table(generation)}_auxiliary"
    known = _auxiliary_shape.setdefault(conn, {})
    if name not in known:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]
        known[name] = columns == ["rowid", "value00", "value01"]
    return name if known[name] else None


_auxiliary_shape: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def float_rows(conn: apsw.Connection, generation: int, chunk_ids: list[int]) -> list[tuple[int, int, bytes]]:
    """(chunk_id, memory_id, stored vector: see `decode`) of the given chunks (those that exist)."""
    auxiliary = auxiliary_table(conn, generation)
    if auxiliary is not None:
        sql = (f"SELECT a.rowid, a.value00, a.value01 FROM json_each(?) AS j "
               f"JOIN {auxiliary} AS a ON a.rowid = j.value")
    else:  # driven by json_each, so that sqlite-vec gets one point lookup per chunk
        sql = (f"SELECT v.chunk_id, v.memory_id, v.embedding FROM json_each(?) AS j "
               f"JOIN {table(generation)} AS v ON v.chunk_id = j.value")
    return conn.execute(sql, (json.dumps(chunk_ids),)).fetchall()


def exact(conn: apsw.Connection, generation: int, query: np.ndarray, memory_ids: list[int],
          k: int | None) -> list[tuple[int, int, float]]:
    """Exact cosine over the chunks of the given memories, best first (k: how many; None: all),
    for filters selective enough that scanning their vectors beats searching the index."""
    chunk_ids = [r[0] for r in conn.execute(
        "SELECT id FROM chunks WHERE generation = ? AND memory_id IN (SELECT value FROM json_each(?))",
        (generation, json.dumps(memory_ids)))]
    return _best(conn, generation, float_rows(conn, generation, chunk_ids), query, k)


def _best(conn: apsw.Connection, generation: int, rows: list[tuple[int, int, bytes]], query: np.ndarray,
          k: int | None) -> list[tuple[int, int, float]]:
    """The k rows (None: all) whose float vector has the highest cosine with `query`, best first
    (vectors are unit length)."""
    import numpy as np

    if not rows:
        return []
    query = np.asarray(query, dtype=np.float32)
    # Read at the table's own dimension: a float16 row of 2n dimensions has the length of a
    # float32 row of n, so a query of another size would otherwise be scored against noise.
    dim = dimension(conn, generation)
    if dim != len(query):
        raise StoreError(f"the vector table holds {dim}-dimension vectors, the query has {len(query)}: "
                         "run `magray doctor`")
    sims = decode([r[2] for r in rows], dim) @ query
    order = np.argsort(-sims)[:k]
    return [(rows[i][0], rows[i][1], float(sims[i])) for i in order]


def to_float16(conn: apsw.Connection, generation: int, budget: int | None = None) -> int | None:
    """Convert the float32 vectors of a file written before float16 storage, up to `budget`
    chunks (default CONVERT_BATCH) in one short write transaction, in chunk order; where it got
    to is kept in the settings. Returns how many were converted, or None once every vector of
    `generation` is float16."""
    budget = budget or CONVERT_BATCH
    key = _converted_key(generation)
    with write_transaction(conn):
        done = get_setting(conn, key, 0)  # true, or the chunk id converted up to
        dim = dimension(conn, generation)
        if done is True or dim is None:
            return None
        ids = [r[0] for r in conn.execute("SELECT id FROM chunks WHERE generation = ? AND id > ? ORDER BY id LIMIT ?",
                                          (generation, done, budget))]
        old = [(chunk_id, blob) for chunk_id, _, blob in float_rows(conn, generation, ids) if len(blob) == 4 * dim]
        if old:
            blobs = encode(decode([blob for _, blob in old], dim))
            conn.executemany(f"UPDATE {table(generation)} SET embedding = ? WHERE chunk_id = ?",
                             [(blob, chunk_id) for (chunk_id, _), blob in zip(old, blobs)])
        set_setting(conn, key, True if len(ids) < budget else ids[-1])
    return len(old)
