"""The coarse Hamming pass of `vectors.knn` in numpy, over the bit vectors of the probed ANN lists
read straight from sqlite-vec's shadow tables.

Why read sqlite-vec's tables: a vec0 KNN query cannot name several partitions (partition keys
take =, <, >, not IN), so probing 50 lists at 1M vectors took ~67 queries (one per list, then the
fullest ones again with a larger k), each with ~1 ms of fixed cost, and sqlite-vec 0.1.9 selects
its top k per chunk at a cost of 1,024 x k: 73-86 ms for the vector side. Here the probed lists'
chunks are listed in one query on `<table>_chunks` (partition keys, validity bitmap), their
metadata (under a filter) and bit vectors read by incremental blob I/O (half the time of
selecting the blobs: no bytes objects to build and join), all in one read transaction, and
ranked in numpy: XOR and popcount word by word, a threshold from a histogram of the distances.
The rowids of the chosen slots come last, from the chunks that hold them. The best `pool` chunks
go to the same exact re-rank as before (vectors.float_rows and _best). Numbers:
bench/RESULTS.md, "The vector side in one read".

sqlite-vec still owns every write: this module only reads, and only a layout it has checked once
per connection (the vec0 declaration magray wrote, the shadow tables' columns, a sqlite-vec
version in VERSIONS whose source the layout below was read from, numpy with bitwise_count).
Anything else, or a surprise during a read (a blob of another size), returns None and
`vectors.knn` asks sqlite-vec as before. The layout (sqlite-vec 0.1.9, sqlite-vec.c):
- `<table>_chunks`: chunk_id, size (slots per chunk, 1,024), sequence_id, partition00 (layer),
  partition01 (shard: the list key), validity (bit i of byte i / 8, lowest bit first: slot i
  holds a live row), rowids (`size` little-endian int64: the vec0 rowid, our chunk id, per slot);
- `<table>_vector_chunks00`: vectors, `size` x dim / 8 bytes, bit j of a vector in byte j / 8,
  lowest bit first, set when the float is > 0 (vec_quantize_binary); addressed by the internal
  rowid = chunk_id (sqlite3_blob_open, as sqlite-vec reads it);
- `<table>_metadatachunksNN`, NN = 00 project, 01 session (TEXT), 02 created_at (FLOAT): `size`
  slots of 16 bytes for TEXT (int32 byte length, then the first 12 bytes, zero padded; a longer
  value lives whole in `<table>_metadatatextNN`, keyed by the vec0 rowid) or of 8 bytes (float64)
  for FLOAT.
Slots not marked valid are never returned, whatever they still hold."""

from __future__ import annotations

import json
import re
import sys
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import apsw

from . import ann

if TYPE_CHECKING:
    import numpy as np

    from .types import Filters

# sqlite-vec versions whose shadow-table layout was checked against their source (see above). A
# file opened with another version is searched through vec0 queries until it is checked too.
VERSIONS = frozenset({"v0.1.9"})
# The vec0 columns magray declares (vectors.create), auxiliary (+) columns aside.
DECLARED = ["chunk_id INTEGER PRIMARY KEY", "layer TEXT PARTITION KEY", "shard INTEGER PARTITION KEY",
            "embedding_bits bit[{dim}]", "project TEXT", "session TEXT", "created_at FLOAT"]
SHADOW_COLUMNS = {
    "chunks": ["chunk_id", "size", "sequence_id", "partition00", "partition01", "validity", "rowids"],
    "vector_chunks00": ["rowid", "vectors"],
    "metadatachunks00": ["rowid", "data"], "metadatatext00": ["rowid", "data"],
    "metadatachunks01": ["rowid", "data"], "metadatatext01": ["rowid", "data"],
    "metadatachunks02": ["rowid", "data"],
}
TEXT_SLOT = 16  # bytes per TEXT metadata slot
TEXT_INLINE = 12  # bytes of the value kept in the slot
# The Hamming distance keeps OVERSAMPLE x pool slots, which are then ranked by the query's own
# floats against their bits (`_Scan._rescore`) to keep `pool`. Both sides' signs alone lose the
# question's magnitudes; with them, the best 512 held as many of the exact top 10 at 1M
# (recall@10 0.963) as the best 1,024 by Hamming distance (0.950), and the best 256 at 100K
# 0.990 against 0.950 (bench/RESULTS.md). 8x: 0.973 at 1M for 2.8x the cost of this step.
OVERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    table: str
    dim: int  # bits per vector


class Unreadable(Exception):
    """The shadow tables hold something this module does not expect: ask sqlite-vec instead."""


_shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shape(conn: apsw.Connection, name: str) -> Shape | None:
    """The vector table `name` when its shadow tables have the layout read here (checked once per
    connection), else None."""
    known = _shapes.setdefault(conn, {})
    if name not in known:
        known[name] = _check(conn, name)
    return known[name]


def _check(conn: apsw.Connection, name: str) -> Shape | None:
    import numpy as np

    if not hasattr(np, "bitwise_count") or sys.byteorder != "little":  # numpy < 2; the layout's ints
        return None
    if conn.execute("SELECT vec_version()").fetchone()[0] not in VERSIONS:
        return None
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    found = re.fullmatch(r"CREATE VIRTUAL TABLE \S+ USING vec0\((.*)\)", row[0] if row else "", re.S | re.I)
    if not found:
        return None
    declared = [c.strip() for c in found.group(1).split(",") if not c.strip().startswith("+")]
    bits = re.fullmatch(r"embedding_bits bit\[(\d+)\]", declared[3]) if len(declared) > 3 else None
    if bits is None or int(bits.group(1)) % 8 or declared != [c.format(dim=bits.group(1)) for c in DECLARED]:
        return None
    for suffix, columns in SHADOW_COLUMNS.items():
        if [r[1] for r in conn.execute(f'PRAGMA table_info("{name}_{suffix}")')] != columns:
            return None
    return Shape(name, int(bits.group(1)))


def coarse(conn: apsw.Connection, name: str, generation: int, query: np.ndarray, k: int,
           filters: Filters, pool: int, probe_scale: int = 1) -> list[int] | None:
    """The chunk ids of the best `pool` bit vectors by Hamming distance to `query` among those the
    filter admits (layer, project, session, time; not tags) in the nearest ANN lists, probing
    more lists until k pass or every list is read (`name`: the vector table of `generation`).
    None: the layout is not the one read here."""
    found = shape(conn, name)
    if found is None or query.shape[-1] != found.dim:
        return None
    conn.execute("SAVEPOINT bitscan")  # one snapshot for the list of chunks and their blobs
    try:
        return _Scan(conn, found, query, filters).run(k, pool, ann.state(conn, generation), probe_scale)
    except (Unreadable, apsw.SQLError):
        return None
    finally:
        conn.execute("RELEASE bitscan")


def _used(passes: np.ndarray) -> np.ndarray:
    """Per chunk (a row of per-slot flags): its slots up to the last one set (0 when none is)."""
    import numpy as np

    return np.where(passes.any(axis=1), passes.shape[1] - np.argmax(passes[:, ::-1], axis=1), 0)


def _ranges(used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chunk, place) of each of the first `used[i]` slots of each chunk i, in order."""
    import numpy as np

    starts = np.cumsum(used) - used
    chunk = np.repeat(np.arange(len(used)), used)
    return chunk, np.arange(int(used.sum())) - starts[chunk]


class _Scan:
    """The chunks read so far for one query (those with a slot that passes the filter) and the
    Hamming distance of each of their used slots, or `none` (dim + 1) when the slot is empty or
    does not pass. sqlite-vec fills a chunk's slots in order, and a list holds fewer vectors than
    a chunk has slots (at 1M: 1,819 chunks of 1,024 slots for 1,000,000 vectors), so only each
    chunk's slots up to its last valid one are read and ranked: about half of them there."""

    def __init__(self, conn: apsw.Connection, found: Shape, query: np.ndarray, filters: Filters) -> None:
        import numpy as np

        self.conn, self.table, self.dim, self.filters = conn, found.table, found.dim, filters
        self.vector = query.astype(np.float32)
        self.width = found.dim // 8  # bytes per bit vector
        self.word = np.dtype("<u8") if self.width % 8 == 0 else np.dtype(np.uint8)
        self.bits = np.packbits(self.vector > 0, bitorder="little").view(self.word)
        self.none = found.dim + 1
        # Filter values too long to sit whole in a slot match there by length and first bytes,
        # then by the whole text in metadatatextNN (see _verify).
        self.long = {i: v for i, v in ((0, filters.project), (1, filters.session))
                     if v is not None and len(v.encode()) > TEXT_INLINE}
        self.size = 0  # slots per chunk
        self.chunks = np.empty(0, np.int64)  # chunk ids, as read
        self.slot = np.empty(0, np.int64)  # per used slot: chunk index * size + its place there
        self.distance = np.empty(0, np.int32)  # per used slot
        self.verified = np.empty(0, bool)  # per used slot: passed _verify
        self.rowids = np.empty((0, 0), np.int64)  # per chunk, read when one of its slots is chosen
        self.loaded = np.empty(0, bool)  # per chunk: its rowids are read
        self.blobs: dict[tuple[str, str], apsw.Blob] = {}
        self.packed: list[np.ndarray] = []  # the bit vectors of the used slots, per read

    def run(self, k: int, pool: int, current: ann.State | None, scale: int) -> list[int]:
        read: set[int] = set()
        try:
            while True:
                keys, complete = ann.nearest_lists(current, self.vector, scale)
                self._read([key for key in keys if key not in read])
                read.update(keys)
                chosen = self._choose(pool * OVERSAMPLE)
                if len(chosen) >= k or complete:
                    return self._rowids(self._rescore(chosen, pool)).tolist()
                scale *= 4  # a filter left too few in the nearest lists: probe more of them
        finally:
            for blob in self.blobs.values():
                blob.close()

    def _blob(self, suffix: str, column: str, rowid: int, length: int) -> apsw.Blob:
        """The blob of `column` in row `rowid` (the internal rowid, as sqlite-vec opens it) of a
        shadow table, checked to be `length` bytes."""
        key = (suffix, column)
        blob = self.blobs.get(key)
        if blob is None:
            blob = self.blobs[key] = self.conn.blob_open("main", f"{self.table}_{suffix}", column, rowid, False)
        else:
            blob.reopen(rowid)
        if blob.length() != length:
            raise Unreadable(f"{self.table}_{suffix}.{column} of chunk {rowid}: {blob.length()} bytes")
        return blob

    def _blobs(self, suffix: str, column: str, chunk_ids: list[int], length: int) -> np.ndarray:
        """One row of `length` bytes per chunk."""
        import numpy as np

        out = np.empty((len(chunk_ids), length), np.uint8)
        for row, chunk_id in zip(out, chunk_ids):
            self._blob(suffix, column, chunk_id, length).read_into(row)
        return out

    def _prefixes(self, suffix: str, column: str, chunk_ids: list[int], used: np.ndarray,
                  slot_bytes: int) -> np.ndarray:
        """The first `used[i]` slots of `slot_bytes` bytes of each chunk `chunk_ids[i]`, one chunk
        after the other: shape (used.sum(), slot_bytes)."""
        import numpy as np

        out = np.empty((int(used.sum()), slot_bytes), np.uint8)
        flat = out.reshape(-1)
        at = 0
        for chunk_id, n in zip(chunk_ids, used.tolist()):
            if n:
                self._blob(suffix, column, chunk_id, self.size * slot_bytes).read_into(flat, at, n * slot_bytes)
                at += n * slot_bytes
        return out

    def _read(self, keys: list[int]) -> None:
        """Read the chunks of the lists `keys` (of the filter's layers): distance per slot."""
        import numpy as np

        if not keys:
            return
        sql = (f'SELECT chunk_id, size, validity FROM "{self.table}_chunks" '
               'WHERE partition01 IN (SELECT value FROM json_each(?))')
        params: tuple = (json.dumps(keys),)
        if self.filters.layers:
            sql += " AND partition00 IN (SELECT value FROM json_each(?))"
            params += (json.dumps(list(self.filters.layers)),)
        rows = self.conn.execute(sql, params).fetchall()
        if not rows:
            return
        size = self.size or rows[0][1]
        if size <= 0 or size % 8 or any(r[1] != size or len(r[2]) != size // 8 for r in rows):
            raise Unreadable(f"{self.table}_chunks: chunks of {size} slots expected")
        self.size = size
        ids = [r[0] for r in rows]
        valid = np.unpackbits(np.frombuffer(b"".join(r[2] for r in rows), np.uint8), bitorder="little")
        passes = valid.astype(bool).reshape(len(ids), size)
        filters = self.filters
        if filters.project is not None or filters.session is not None or \
                filters.since is not None or filters.until is not None:
            # The metadata of the valid slots only, as for the bit vectors below.
            valid_upto = _used(passes)
            chunk, place = _ranges(valid_upto)
            ok = passes[chunk, place]
            for index, value in ((0, filters.project), (1, filters.session)):
                if value is not None:
                    ok &= self._text_equals(index, value, ids, valid_upto)
            if filters.since is not None or filters.until is not None:
                created = self._prefixes("metadatachunks02", "data", ids, valid_upto, 8).view("<f8").reshape(-1)
                if filters.since is not None:
                    ok &= created >= filters.since
                if filters.until is not None:
                    ok &= created < filters.until
            passes = np.zeros_like(passes)
            passes[chunk, place] = ok
        # Only the chunks with a slot that passes (under a selective filter many have none), and
        # in each only its slots up to the last one that passes.
        kept = np.flatnonzero(passes.any(axis=1))
        ids = [ids[i] for i in kept]
        passes = passes[kept]
        used = _used(passes)
        chunk, place = _ranges(used)
        bits = self._prefixes("vector_chunks00", "vectors", ids, used, self.width)
        inside = passes[chunk, place]
        if inside.sum() * 2 < len(inside):  # a selective filter: rank only the slots that pass
            chunk, place, bits = chunk[inside], place[inside], bits[inside]
            inside = inside[inside]
        self.packed.append(bits)
        bits = bits.view(self.word)
        # Word by word: XOR with a scalar and popcount over a column are ~2x faster than XOR
        # with a broadcast row and a sum along the rows' few words.
        distance = np.zeros(len(bits), np.int32)
        for column, word in enumerate(self.bits):
            distance += np.bitwise_count(bits[:, column] ^ word)
        distance[~inside] = self.none
        self.slot = np.concatenate([self.slot, (chunk + len(self.chunks)) * size + place])
        self.chunks = np.concatenate([self.chunks, np.array(ids, np.int64)])
        self.distance = np.concatenate([self.distance, distance])
        self.verified = np.concatenate([self.verified, np.zeros(len(distance), bool)])
        self.loaded = np.concatenate([self.loaded, np.zeros(len(ids), bool)])

    def _text_equals(self, index: int, value: str, ids: list[int], used: np.ndarray) -> np.ndarray:
        """Per used slot (see _prefixes): the TEXT metadata column `index` holds `value` (for a
        value longer than TEXT_INLINE bytes: its length and first bytes match)."""
        import numpy as np

        data = value.encode()
        slot = np.zeros(TEXT_SLOT, np.uint8)
        slot[:4] = np.frombuffer(np.array([len(data)], np.int32).tobytes(), np.uint8)  # native int
        slot[4:4 + min(len(data), TEXT_INLINE)] = np.frombuffer(data[:TEXT_INLINE], np.uint8)
        slots = self._prefixes(f"metadatachunks{index:02d}", "data", ids, used, TEXT_SLOT)
        slots = slots.view("<u8").reshape(-1, 2)
        want = slot.view("<u8")
        return (slots[:, 0] == want[0]) & (slots[:, 1] == want[1])

    def _rescore(self, chosen: np.ndarray, pool: int) -> np.ndarray:
        """The best `pool` of the `chosen` used slots by the sum of the query's floats where a
        slot's bit is set (the query's dot product with the bits, up to a constant): a table of
        that sum for each value of each byte, looked up once per byte of each slot."""
        import numpy as np

        if len(chosen) <= pool:
            return chosen
        packed = np.concatenate(self.packed) if len(self.packed) > 1 else self.packed[0]
        byte_values = np.arange(256, dtype=np.uint8)[:, None]
        bits_of = np.unpackbits(byte_values, axis=1, bitorder="little").astype(np.float32)  # (256, 8)
        table = (self.vector.reshape(self.width, 8) @ bits_of.T).reshape(-1)  # byte j, value v: j * 256 + v
        where = packed[chosen].astype(np.intp) + np.arange(self.width) * 256
        scores = np.take(table, where).sum(axis=1)
        return chosen[np.argpartition(-scores, pool - 1)[:pool]]

    def _choose(self, pool: int) -> np.ndarray:
        """The used slots (indexes into `distance`) of the best `pool` distances among those that
        pass (ties at the threshold: the first ones read), values too long for a slot checked in
        full."""
        import numpy as np

        while True:
            counts = np.bincount(self.distance, minlength=self.none + 1)[:self.none]
            if counts.sum() <= pool:
                chosen = np.flatnonzero(self.distance < self.none)
            else:
                threshold = int(np.searchsorted(np.cumsum(counts), pool))
                below = np.flatnonzero(self.distance < threshold)
                at = np.flatnonzero(self.distance == threshold)[:pool - len(below)]
                chosen = np.concatenate([below, at])
            unknown = chosen[~self.verified[chosen]] if self.long else chosen[:0]
            if not len(unknown):
                return chosen
            ok = self._verify(unknown)
            self.verified[unknown[ok]] = True
            self.distance[unknown[~ok]] = self.none

    def _verify(self, slots: np.ndarray) -> np.ndarray:
        """Per slot: its long TEXT values equal the filter's, read whole from metadatatextNN
        (keyed by the vec0 rowid, as sqlite-vec reads them)."""
        import numpy as np

        rowids = self._rowids(slots)
        sql = "SELECT j.value FROM json_each(:ids) AS j WHERE " + " AND ".join(
            f'(SELECT data FROM "{self.table}_metadatatext{index:02d}" WHERE rowid = j.value) = :v{index}'
            for index in self.long)
        params = {"ids": json.dumps(rowids.tolist())} | {f"v{i}": v for i, v in self.long.items()}
        return np.isin(rowids, [r[0] for r in self.conn.execute(sql, params)])

    def _rowids(self, used: np.ndarray) -> np.ndarray:
        """The vec0 rowid (chunk id) of each used slot, reading the rowids of the chunks not read
        yet."""
        import numpy as np

        slots = self.slot[used]
        chunks = np.unique(slots // self.size)
        if len(self.rowids) < len(self.chunks):  # room for the chunks read since (left unset)
            grown = np.empty((len(self.chunks), self.size), np.int64)
            if len(self.rowids):
                grown[:len(self.rowids)] = self.rowids
            self.rowids = grown
        missing = chunks[~self.loaded[chunks]]
        if len(missing):
            data = self._blobs("chunks", "rowids", self.chunks[missing].tolist(), self.size * 8)
            self.rowids[missing] = data.view("<i8")
            self.loaded[missing] = True
        return self.rowids.reshape(-1)[slots]
