"""The approximate nearest-neighbour index inside the file: IVF lists on sqlite-vec partitions.

Each vector of vec_chunks_<generation> sits in one partition, its `shard` key:
- keys below LIST_BASE are the flat shards (chunk_id % SHARDS) of a file never trained: a query
  scans all of them, which is exact enough and fast below TRAIN_MIN_ROWS vectors;
- keys from LIST_BASE up are IVF lists: k-means centroids stored in ann_lists_<generation>, a
  vector filed in the list of its nearest centroid (on insert, at once), a query scanning only the
  lists nearest to it (see vectors.knn: bit pass inside sqlite-vec, then exact re-rank).

Lists are trained in epochs. When the file has grown REGROW times since the last training,
`rebalance.step` trains a new epoch from a sample, then re-files the older vectors a batch per
short write transaction; meanwhile new vectors go to the newest epoch and a query probes the
nearest lists of every epoch still holding vectors. This module holds the lists' state; the
rows of the vector table are moved by magray/rebalance.py."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apsw

from .db import get_setting, set_setting

if TYPE_CHECKING:
    import numpy as np

# Flat shards of an untrained file (see vectors.SHARDS); IVF list keys start above them.
SHARDS = 8
LIST_BASE = 1024
# Below this many vectors the flat shards are scanned whole; at and above, lists are trained.
# Measured on question queries (bench/RESULTS.md): at 100K vectors the flat scan found 0.95 of
# the exact top 10 and lists 0.85-0.91 at a similar cost; at 1M the lists found 0.95 in 73 ms
# where the flat scan needed 262 ms for 0.96.
TRAIN_MIN_ROWS = 250_000
# Lists are re-trained when the file holds this many times the vectors of the last training.
REGROW = 2
# Vectors per list at training. sqlite-vec scans a partition by chunks of 1,024 slots, and a
# list is a partition per layer: lists much smaller than 3 x 1,024 would scan empty slots.
ROWS_PER_LIST = 2_000
# A query probes this share of the lists of each epoch, and at least MIN_PROBES.
PROBE_SHARE = 0.1
MIN_PROBES = 16
# k-means: training sample per list, iterations.
SAMPLE_PER_LIST = 48
ITERATIONS = 10

_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def lists_table(generation: int) -> str:
    return f"ann_lists_{int(generation)}"


def setting_key(generation: int) -> str:
    return f"ann:{int(generation)}"


def create(conn: apsw.Connection, generation: int) -> None:
    """The list table of a generation (with its vector table; or later, for older files)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {lists_table(generation)} ("
        "id INTEGER PRIMARY KEY, "  # the `shard` partition key of the list's vectors
        "epoch INTEGER NOT NULL, "
        "centroid BLOB NOT NULL)")  # float32, unit length


def drop(conn: apsw.Connection, generation: int) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {lists_table(generation)}")
    set_setting(conn, setting_key(generation), None)


@dataclass(frozen=True)
class Epoch:
    number: int
    keys: np.ndarray  # list keys, int64
    centroids: np.ndarray  # one unit row per key


@dataclass(frozen=True)
class State:
    """The lists of one generation: `epochs` oldest first (new vectors go to the last one), and
    the re-filing under way, if any: chunks with refile_from < id <= refile_upto still sit in an
    older epoch or a flat shard."""

    version: int
    trained_rows: int
    epochs: tuple[Epoch, ...]
    refile_from: int | None = None
    refile_upto: int | None = None

    def to_setting(self) -> dict:
        return {"version": self.version, "trained_rows": self.trained_rows,
                "refile_from": self.refile_from, "refile_upto": self.refile_upto}


def state(conn: apsw.Connection, generation: int) -> State | None:
    """The lists of `generation`, or None when it was never trained. Cached per connection and
    re-read whenever another process (or this one) changed them."""
    meta = get_setting(conn, setting_key(generation))
    if meta is None:
        return None
    cached = _states.get(conn, {}).get(generation)
    if cached is not None and cached.version == meta["version"]:
        return cached
    import numpy as np

    by_epoch: dict[int, tuple[list[int], list[bytes]]] = {}
    for key, epoch, blob in conn.execute(f"SELECT id, epoch, centroid FROM {lists_table(generation)} "
                                         "ORDER BY epoch, id"):
        keys, blobs = by_epoch.setdefault(epoch, ([], []))
        keys.append(key)
        blobs.append(blob)
    epochs = tuple(
        Epoch(number, np.array(keys, dtype=np.int64),
              np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(keys), -1))
        for number, (keys, blobs) in sorted(by_epoch.items()))
    found = State(meta["version"], meta["trained_rows"], epochs, meta.get("refile_from"),
                  meta.get("refile_upto"))
    _states.setdefault(conn, {})[generation] = found
    return found


def save(conn: apsw.Connection, generation: int, value: State) -> None:
    """Inside the caller's write transaction."""
    set_setting(conn, setting_key(generation), value.to_setting())


def assign(conn: apsw.Connection, generation: int, chunk_ids: list[int], vectors: np.ndarray) -> list[int]:
    """The partition key of each new vector: the nearest list of the newest epoch, or the flat
    shard of its chunk id in a file never trained. Call inside the write transaction that
    inserts them, so that a re-training committed meanwhile is seen."""
    current = state(conn, generation)
    if current is None or not current.epochs:
        return [chunk_id % SHARDS for chunk_id in chunk_ids]
    newest = current.epochs[-1]
    nearest = (vectors.astype("float32") @ newest.centroids.T).argmax(axis=1)
    return [int(k) for k in newest.keys[nearest]]


def probes_for(lists: int) -> int:
    return min(lists, max(MIN_PROBES, math.ceil(lists * PROBE_SHARE)))


def nearest_lists(current: State | None, query: np.ndarray, scale: int = 1) -> tuple[list[int], bool]:
    """The list keys a query probes: the flat shards, then the nearest lists of each epoch
    (`scale` times the usual number). Also whether that is every list (an exact-by-bits scan)."""
    # The flat shards hold vectors only until the first re-filing is done.
    flat = current is None or not current.epochs or current.refile_upto is not None
    keys = list(range(SHARDS)) if flat else []
    complete = True
    for epoch in (current.epochs if current else ()):
        n = min(len(epoch.keys), probes_for(len(epoch.keys)) * scale)
        complete = complete and n == len(epoch.keys)
        order = (epoch.centroids @ query.astype("float32")).argsort()[::-1][:n]
        keys.extend(int(k) for k in epoch.keys[order])
    return keys, complete


def list_count(lists: int | None, rows: int) -> int:
    """Lists for `rows` vectors: ROWS_PER_LIST each (500 at 1M)."""
    return lists or max(SHARDS, min(4096, round(rows / ROWS_PER_LIST)))


def kmeans(sample: np.ndarray, lists: int, *, iterations: int = ITERATIONS, seed: int = 0) -> np.ndarray:
    """Spherical k-means (cosine): unit centroids of `sample` (unit rows). An empty list takes the
    sample row farthest from its centroid."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lists = min(lists, len(sample))
    centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
    for _ in range(iterations):
        sims = sample @ centroids.T
        nearest = sims.argmax(axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        counts = np.bincount(nearest, minlength=lists)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            worst = np.argsort(sims[np.arange(len(sample)), nearest])[:len(empty)]
            sums[empty] = sample[worst]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
    return centroids


def add_epoch(conn: apsw.Connection, generation: int, centroids: np.ndarray, trained_rows: int,
              refile_upto: int) -> State:
    """Inside the caller's write transaction: store a new epoch of lists, to which every new
    vector goes from now on, and mark chunks up to `refile_upto` for re-filing."""
    create(conn, generation)
    current = state(conn, generation)
    table = lists_table(generation)
    epoch, top = conn.execute(f"SELECT coalesce(max(epoch), 0) + 1, coalesce(max(id), 0) FROM {table}").fetchone()
    first = max(LIST_BASE, top + 1)
    conn.executemany(f"INSERT INTO {table} (id, epoch, centroid) VALUES (?, ?, ?)",
                     [(first + i, epoch, c.astype("<f4").tobytes()) for i, c in enumerate(centroids)])
    new = State((current.version if current else 0) + 1, trained_rows, (), 0, refile_upto)
    save(conn, generation, new)
    return state(conn, generation)


def finish_refile(conn: apsw.Connection, generation: int) -> None:
    """Inside the caller's write transaction: every vector is in the newest epoch; drop the
    older epochs' lists."""
    current = state(conn, generation)
    if current is None:
        return
    if current.epochs:
        conn.execute(f"DELETE FROM {lists_table(generation)} WHERE epoch < ?", (current.epochs[-1].number,))
    save(conn, generation, State(current.version + 1, current.trained_rows, ()))


def advance_refile(conn: apsw.Connection, generation: int, done_upto: int) -> None:
    """Inside the caller's write transaction: chunks up to `done_upto` are re-filed."""
    current = state(conn, generation)
    save(conn, generation, State(current.version + 1, current.trained_rows, current.epochs, done_upto,
                                 current.refile_upto))
