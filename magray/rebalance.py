"""Growing the ANN index (magray/ann.py) with the file: train a new epoch of lists from a sample
once the file has grown enough, then re-file the older vectors into it, a batch per short write
transaction, so that writers and readers never wait long. Nobody has to call this: writes do a
little of it (`step`), and `magray optimize` finishes it (`run`)."""

from __future__ import annotations

import logging

import apsw

from . import ann, vectors
from .db import write_transaction

log = logging.getLogger(__name__)

# Vectors moved per write transaction by `run` (~0.1-0.3 s on 2 cores).
REFILE_BATCH = 2_000
# Vectors moved per memory added, by the upkeep that follows writes.
REFILE_PER_ADD = 20


def chunk_count(conn: apsw.Connection, generation: int) -> int:
    return conn.execute("SELECT count(*) FROM chunks WHERE generation = ?", (generation,)).fetchone()[0]


def training_due(conn: apsw.Connection, generation: int, rows: int | None = None,
                 min_rows: int | None = None) -> bool:
    current = ann.state(conn, generation)
    if current is not None and current.refile_upto is not None:
        return False  # finish re-filing first
    rows = chunk_count(conn, generation) if rows is None else rows
    if rows < (ann.TRAIN_MIN_ROWS if min_rows is None else min_rows):
        return False
    return current is None or rows >= ann.REGROW * current.trained_rows


def train(conn: apsw.Connection, generation: int, *, lists: int | None = None, seed: int = 0) -> bool:
    """Train a new epoch of lists from a sample of the stored vectors (read outside any write
    transaction) and store it; the vectors already stored are then due for re-filing. False
    when another process changed the index meanwhile (its training stands)."""
    import numpy as np

    before = ann.state(conn, generation)
    ids = np.array([r[0] for r in conn.execute("SELECT id FROM chunks WHERE generation = ?", (generation,))],
                   dtype=np.int64)
    if len(ids) == 0:
        return False
    n = ann.list_count(lists, len(ids))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, min(len(ids), n * ann.SAMPLE_PER_LIST), replace=False)
    blobs = []
    for start in range(0, len(chosen), 5000):
        blobs += [r[2] for r in vectors.float_rows(conn, generation, chosen[start:start + 5000].tolist())]
    if not blobs:
        return False
    sample = vectors.decode(blobs, vectors.dimension(conn, generation))
    centroids = ann.kmeans(sample, n, seed=seed)
    with write_transaction(conn):
        now = ann.state(conn, generation)
        if (now.version if now else 0) != (before.version if before else 0):
            return False
        upto = conn.execute("SELECT coalesce(max(id), 0) FROM chunks WHERE generation = ?",
                            (generation,)).fetchone()[0]
        ann.add_epoch(conn, generation, centroids, len(ids), upto)
    log.info("ANN index of generation %d: %d lists trained on %d of %d vectors", generation,
             len(centroids), len(sample), len(ids))
    return True


def refile(conn: apsw.Connection, generation: int, budget: int = REFILE_BATCH) -> int:
    """Move up to `budget` vectors still filed under an older epoch (or a flat shard) into their
    nearest list of the newest epoch, in one write transaction. Returns how many were moved."""
    with write_transaction(conn):
        current = ann.state(conn, generation)
        if current is None or current.refile_upto is None:
            return 0
        todo = conn.execute(
            "SELECT c.id, c.memory_id, m.layer, m.project, m.session, m.created_at "
            "FROM chunks AS c JOIN memories AS m ON m.id = c.memory_id "
            "WHERE c.generation = ? AND c.id > ? AND c.id <= ? ORDER BY c.id LIMIT ?",
            (generation, current.refile_from or 0, current.refile_upto, budget)).fetchall()
        floats = {chunk_id: blob for chunk_id, _, blob in vectors.float_rows(conn, generation, [r[0] for r in todo])}
        table = vectors.table(generation)
        conn.executemany(f"DELETE FROM {table} WHERE chunk_id = ?", [(c,) for c in floats])
        found = [r for r in todo if r[0] in floats]
        vectors.file_rows(conn, generation, [
            {"chunk_id": chunk_id, "layer": layer, "project": project, "session": session,
             "created_at": created_at, "memory_id": memory_id}
            for chunk_id, memory_id, layer, project, session, created_at in found],
            vectors.decode([floats[r[0]] for r in found], vectors.dimension(conn, generation)))
        if len(todo) < budget:
            ann.finish_refile(conn, generation)
        else:
            ann.advance_refile(conn, generation, todo[-1][0])
    return len(todo)


def step(conn: apsw.Connection, generation: int, adds: int, *, may_train: bool) -> None:
    """The share of upkeep that follows a write of `adds` memories: a few re-filed vectors
    while a re-filing is under way, or (`may_train`, every so many adds) a new training once the
    file has grown enough."""
    current = ann.state(conn, generation)
    if current is not None and current.refile_upto is not None:
        refile(conn, generation, max(200, REFILE_PER_ADD * adds))
    elif may_train and training_due(conn, generation):
        train(conn, generation)


def run(conn: apsw.Connection, generation: int, *, min_rows: int | None = None) -> dict[str, int]:
    """Everything due now: train when the file has grown enough, then re-file every vector."""
    trained = train(conn, generation) if training_due(conn, generation, min_rows=min_rows) else False
    moved = 0
    while True:
        n = refile(conn, generation)
        moved += n
        if n < REFILE_BATCH:
            break
    current = ann.state(conn, generation)
    return {"ann_trained": int(trained), "ann_refiled": moved,
            "ann_lists": len(current.epochs[-1].keys) if current and current.epochs else 0}
