"""The doctor: checks that a memory file is sound and that everything derived from its memories (the
FTS index, chunks, vectors) agrees with them, and repairs what can be rebuilt from the memories.

A repair never changes a memory's content or fields: it rebuilds the FTS index from `memories`,
deletes vectors, chunks and tag rows that belong to no live memory, re-files misfiled vectors and
re-embeds memories whose vectors are missing. Damage that cannot be rebuilt (a failed
`PRAGMA integrity_check`, vectors of another dimension than the binding) is reported with what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import apsw

from . import binding as binding_mod
from . import reconcile, records, vectors
from .db import read_snapshot, write_transaction
from .embed import cache
from .errors import MagrayError
from .schema import query

# Ids listed per finding (the count is always complete).
SAMPLE = 10
# Memories re-embedded per write transaction during a repair.
REEMBED_BATCH = 64


@dataclass
class Finding:
    """One kind of problem: how many rows have it, a sample of their ids, and whether it is fixed."""

    problem: str  # stable name, e.g. "fts_orphans"
    count: int
    message: str  # one line for a person
    repairable: bool
    sample: list[int] = field(default_factory=list)
    repaired: bool = False


@dataclass
class Report:
    path: str
    repair: bool
    checks: list[str]
    findings: list[Finding]
    counts: dict[str, int]
    errors: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when nothing is wrong any more (never was, or every problem was repaired)."""
        return not self.errors and all(f.repaired for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "healthy": self.healthy, "repair": self.repair, "checks": self.checks,
                "counts": self.counts, "findings": [asdict(f) for f in self.findings],
                "errors": self.errors}

    def __str__(self) -> str:
        lines = [f"file:     {self.path}", "checked:  " + ", ".join(self.checks)]
        if self.counts:
            lines.append("counts:   " + ", ".join(f"{k} {v}" for k, v in self.counts.items()))
        for f in self.findings:
            state = "repaired" if f.repaired else ("repairable: run `magray doctor --repair`"
                                                   if f.repairable and not self.repair else "NOT repaired")
            sample = f" (e.g. {', '.join(map(str, f.sample))})" if f.sample else ""
            lines.append(f"problem:  {f.message}{sample} [{state}]")
        lines += [f"error:    {e}" for e in self.errors]
        lines.append("healthy" if self.healthy else "NOT healthy")
        return "\n".join(lines)


LoadEmbedder = Callable[[], tuple[Any, binding_mod.Binding]]
Progress = Callable[[int, int], None]


class Chunker:
    """Chunk text hashes as the bound model cuts a text, loading the model on first use only (a
    file without long memories is checked without it). `error` says why it could not load."""

    def __init__(self, load_embedder: LoadEmbedder) -> None:
        self._load = load_embedder
        self._embedder: Any = None
        self.error: str | None = None

    def __call__(self, text: str) -> list[str] | None:
        if self._embedder is None and self.error is None:
            try:
                self._embedder = self._load()[0]
            except MagrayError as exc:
                self.error = str(exc)
        if self._embedder is None:
            return None
        return [cache.text_hash(piece) for piece in self._embedder.chunks(text)]


def run(conn: apsw.Connection, path: Path | str, *, repair: bool, load_embedder: LoadEmbedder,
        now: Callable[[], float], progress: Progress | None = None) -> Report:
    """Check the file; with `repair`, fix what can be rebuilt, then check again so that each
    finding says whether it is really gone."""
    chunker = Chunker(load_embedder)
    checks, findings, counts = diagnose(conn, chunker)
    report = Report(str(path), repair, checks, findings, counts)
    if not repair or not any(f.repairable for f in findings):
        return report
    try:
        _repair(conn, findings, load_embedder, now(), progress, chunker)
    except MagrayError as exc:
        report.errors.append(str(exc))
    _, after, report.counts = diagnose(conn, chunker)
    still = {f.problem for f in after}
    for f in findings:
        f.repaired = f.problem not in still
    return report


# -- checks ------------------------------------------------------------------------------------


def diagnose(conn: apsw.Connection, chunker: Callable[[str], list[str] | None] | None = None, *,
             integrity: bool = True) -> tuple[list[str], list[Finding], dict[str, int]]:
    """(checks run, problems found, row counts). Reads only, apart from FTS5's integrity-check
    command, which is written as an INSERT but changes nothing. `chunker` (text -> its chunk
    hashes) lets the vectors of memories of several chunks be checked against their content;
    `integrity=False` skips SQLite's integrity_check, for a caller that has just run it."""
    checks = ["integrity"] if integrity else []
    problem = _integrity(conn) if integrity else None
    if problem is not None:
        # Nothing else can be trusted on a damaged file: stop before reading it further.
        return checks, [problem], {}
    findings: list[Finding] = []
    fts_ok = _fts_index_ok(conn)
    checks.append("fts" if fts_ok is not None else "fts (index check skipped: the file is read-only)")
    with read_snapshot(conn):
        counts = {
            "memories": _scalar(conn, "SELECT count(*) FROM memories WHERE deleted_at IS NULL"),
            "deleted": _scalar(conn, "SELECT count(*) FROM memories WHERE deleted_at IS NOT NULL"),
            "chunks": _scalar(conn, "SELECT count(*) FROM chunks"),
        }
        if fts_ok is False:
            findings.append(Finding("fts_index", 1, "the full-text index disagrees with the memories "
                                    "(FTS5 integrity-check failed)", True))
        findings += _fts_rows(conn)
        orphan_tags = _ids(conn, "SELECT DISTINCT memory_id FROM memory_tags "
                                 "WHERE memory_id NOT IN (SELECT id FROM memories) ORDER BY 1")
        if orphan_tags:
            findings.append(_finding("orphan_tags", orphan_tags, "purged memories still have tag rows"))
        stale_hashes = _hash_mismatches(conn)
        if stale_hashes:
            findings.append(_finding("hash_mismatch", stale_hashes, "memories have a content_hash that is not "
                                     "the hash of their content (content changed outside magray)"))
        bound = binding_mod.current(conn)
        if bound is not None:
            checks.append("vectors")
            findings += _vector_findings(conn, bound, counts)
    if bound is not None:
        # Outside the snapshot: the chunker may load (and register) the model first.
        stale, unchecked = stale_vectors(conn, bound.generation, chunker)
        if stale:
            findings.append(_finding("stale_vectors", stale, "memories have vectors made from "
                                     "another text than their content"))
        if unchecked:
            checks.append(f"vector texts ({unchecked} memories of several chunks not checked: "
                          f"{getattr(chunker, 'error', None) or 'no model'})")
    return checks, findings, counts


def stale_vectors(conn: apsw.Connection, generation: int,
                  chunker: Callable[[str], list[str] | None] | None) -> tuple[list[int], int]:
    """(live memories whose vectors in `generation` were made from another text than their
    content, memories of several chunks that could not be checked for want of a chunker)."""
    stale = _ids(conn, query("doctor_stale_vectors"), {"generation": generation})
    unchecked = 0
    rows = conn.execute(
        "SELECT m.id, m.content, json_group_array(c.text_hash ORDER BY c.seq) FROM memories AS m "
        "JOIN chunks AS c ON c.memory_id = m.id AND c.generation = ? WHERE m.deleted_at IS NULL "
        "GROUP BY m.id HAVING count(*) > 1 AND count(*) = max(c.seq) + 1 ORDER BY m.id", (generation,)).fetchall()
    for memory_id, content, stored in rows:
        expected = chunker(content) if chunker is not None else None
        if expected is None:
            unchecked += 1
        elif expected != json.loads(stored):
            stale.append(memory_id)
    return sorted(stale), unchecked


def _integrity(conn: apsw.Connection) -> Finding | None:
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        rows = [str(exc)]
    if rows == ["ok"]:
        return None
    return Finding("integrity", len(rows), f"SQLite integrity_check failed: {rows[0]} (restore a backup, or "
                   "copy what is readable with `sqlite3 FILE .recover`)", False)


def _fts_index_ok(conn: apsw.Connection) -> bool | None:
    """FTS5's own check; rank=1 also compares the index with the content table (memories).
    None when it cannot run: it is written as an INSERT, which a read-only file refuses."""
    try:
        conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")
    except apsw.CorruptError:
        return False
    except apsw.ReadOnlyError:
        return None
    return True


def _fts_rows(conn: apsw.Connection) -> list[Finding]:
    """FTS rows against memories, by rowid. The docsize table holds one row per indexed document
    (a plain SELECT on an external-content FTS table reads the content table instead)."""
    found = []
    orphans = _ids(conn, "SELECT id FROM memories_fts_docsize WHERE id NOT IN (SELECT id FROM memories) ORDER BY 1")
    if orphans:
        found.append(_finding("fts_orphans", orphans, "full-text index rows have no memory"))
    missing = _ids(conn, "SELECT id FROM memories WHERE id NOT IN (SELECT id FROM memories_fts_docsize) ORDER BY 1")
    if missing:
        found.append(_finding("fts_missing", missing, "memories are missing from the full-text index"))
    return found


def _vector_findings(conn: apsw.Connection, bound: binding_mod.Binding, counts: dict[str, int]) -> list[Finding]:
    table = vectors.table(bound.generation)
    exists = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if exists is None:
        live = _ids(conn, "SELECT id FROM memories WHERE deleted_at IS NULL ORDER BY id")
        return [Finding("vector_table_missing", len(live), f"the vector table {table} of the bound model is "
                        "missing: every memory must be re-embedded", True, live[:SAMPLE])]
    dim = vectors.dimension(conn, bound.generation)
    if dim != bound.dim:
        got = dim or "unknown"
        return [Finding("dimension_mismatch", 1, f"{table} holds {got}-dim vectors but the binding says "
                        f"{bound.dim} ({bound.model_name}): run `magray reindex --model NAME`", False)]
    counts["vectors"] = _scalar(conn, f"SELECT count(*) FROM {table}")
    params = {"generation": bound.generation, "pending": _pending_generation(conn)}
    found = []
    for problem, message in (
        ("orphan_vectors", "vectors belong to no live memory (ids are chunk ids)"),
        ("orphan_chunks", "chunk rows belong to no live memory or to a dropped model (ids are chunk ids)"),
        ("misfiled_vectors", "memories have vectors filed under another layer, project or session"),
        ("missing_vectors", "live memories have missing or incomplete vectors"),
    ):
        ids = _ids(conn, _vector_query(problem, table), params)
        if ids:
            found.append(_finding(problem, ids, message))
    ids = _damaged(conn, bound.generation, dim)
    if ids:
        found.append(_finding("damaged_vectors", ids, "memories have stored vectors "
                              "of the wrong size (searches that read them fail)"))
    return found


def _damaged(conn: apsw.Connection, generation: int, dim: int) -> list[int]:
    """Memories with a stored vector of neither float16 nor float32 length at `dim` (read from
    sqlite-vec's auxiliary table; none found when its shape is not the one expected)."""
    auxiliary = vectors.auxiliary_table(conn, generation)
    if auxiliary is None:
        return []
    return _ids(conn, query("doctor_damaged_vectors").replace("/*AUX*/", auxiliary), {"dim": dim})


def _vector_query(problem: str, table: str) -> str:
    return query(f"doctor_{problem}").replace("/*VEC*/", table)


def _pending_generation(conn: apsw.Connection) -> int | None:
    pending = binding_mod.get_setting(conn, "reindex")
    return pending["generation"] if pending else None


# -- repairs -----------------------------------------------------------------------------------


def _repair(conn: apsw.Connection, findings: list[Finding], load_embedder: LoadEmbedder, now: float,
            progress: Progress | None, chunker: Chunker | None = None) -> None:
    problems = {f.problem for f in findings if f.repairable}
    done: dict[str, int] = {}
    with write_transaction(conn):
        # Recomputed under the write lock: another process may have written since the check.
        if problems & {"fts_index", "fts_orphans", "fts_missing"}:
            conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
            done["fts_rebuilt"] = 1
        if "orphan_tags" in problems:
            conn.execute("DELETE FROM memory_tags WHERE memory_id NOT IN (SELECT id FROM memories)")
            done["orphan_tags"] = conn.changes()
        if "hash_mismatch" in problems:
            done["hash_mismatch"] = _requeue_hash_mismatches(conn, now)
        bound = binding_mod.current(conn)
        if bound is not None:
            done |= _repair_vectors_in_place(conn, bound, problems)
            if "stale_vectors" in problems:
                # Dropped whole, then re-embedded from the content like memories without vectors.
                stale, _ = stale_vectors(conn, bound.generation, chunker)
                for memory_id in stale:
                    vectors.delete_for_memory(conn, bound.generation, memory_id)
                done["stale_vectors"] = len(stale)
            if "damaged_vectors" in problems:
                damaged = _damaged(conn, bound.generation, bound.dim)
                for memory_id in damaged:
                    vectors.delete_for_memory(conn, bound.generation, memory_id)
                done["damaged_vectors"] = len(damaged)
        if done:
            records.log_event(conn, now, None, "repair", done)
    if "hash_mismatch" in problems:
        reconcile.run(conn, load_embedder, lambda: now)
    if bound is not None and problems & {"missing_vectors", "vector_table_missing", "stale_vectors", "damaged_vectors"}:
        _reembed(conn, load_embedder, now, progress)


def _hash_mismatches(conn: apsw.Connection) -> list[int]:
    """Memories whose stored hash is not that of their content: edited outside magray in a way
    the triggers cannot tell (the hash written too, or an edit made before schema version 5).
    Rows still queued for reconcile.py are not counted: their hash is being filled in."""
    rows = conn.execute("SELECT id, content, content_hash FROM memories "
                        "WHERE id NOT IN (SELECT memory_id FROM pending_memories) ORDER BY id")
    return [memory_id for memory_id, content, chash in rows if records.content_hash(content) != chash]


def _requeue_hash_mismatches(conn: apsw.Connection, now: float) -> int:
    """Queue them as plain-SQL edits: reconcile.py fills the hash, applies the exact-duplicate
    rule and re-embeds them, as for any edit made with plain SQL."""
    ids = _hash_mismatches(conn)
    conn.executemany("INSERT OR IGNORE INTO pending_memories (memory_id, change, queued_at) "
                     "VALUES (?, 'update', ?)", [(i, now) for i in ids])
    return len(ids)


def _repair_vectors_in_place(conn: apsw.Connection, bound: binding_mod.Binding, problems: set[str]) -> dict[str, int]:
    table = vectors.table(bound.generation)
    params = {"generation": bound.generation, "pending": _pending_generation(conn)}
    done: dict[str, int] = {}
    if "vector_table_missing" in problems:
        vectors.create(conn, bound.generation, bound.dim)
    if "orphan_vectors" in problems:
        ids = _ids(conn, _vector_query("orphan_vectors", table), params)
        conn.executemany(f"DELETE FROM {table} WHERE chunk_id = ?", [(i,) for i in ids])
        done["orphan_vectors"] = len(ids)
    if "orphan_chunks" in problems:
        ids = _ids(conn, _vector_query("orphan_chunks", table), params)
        conn.executemany(f"DELETE FROM {table} WHERE chunk_id = ?", [(i,) for i in ids])
        conn.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])
        done["orphan_chunks"] = len(ids)
    if "misfiled_vectors" in problems:
        ids = _ids(conn, _vector_query("misfiled_vectors", table), params)
        for memory_id, layer, project, session in conn.execute(
                "SELECT id, layer, project, session FROM memories WHERE id IN (SELECT value FROM json_each(?))",
                (_json_ids(ids),)).fetchall():
            vectors.move(conn, bound.generation, memory_id, layer, project, session)
        done["misfiled_vectors"] = len(ids)
    if problems & {"missing_vectors", "vector_table_missing"}:
        # Incomplete vectors are dropped whole; the memory is then re-embedded like one without any.
        ids = _ids(conn, _vector_query("missing_vectors", table), params)
        for memory_id in ids:
            vectors.delete_for_memory(conn, bound.generation, memory_id)
        done["missing_vectors"] = len(ids)
    return done


def _reembed(conn: apsw.Connection, load_embedder: LoadEmbedder, now: float, progress: Progress | None) -> None:
    """Embed live memories that have no vectors, a batch at a time: the model runs outside any
    transaction, and each batch is written in one short one that re-checks every memory."""
    embedder, bound = load_embedder()
    todo = _ids(conn, _vector_query("missing_vectors", vectors.table(bound.generation)),
                {"generation": bound.generation, "pending": None})
    total = len(todo)
    for start in range(0, total, REEMBED_BATCH):
        batch = records.get_many(conn, todo[start:start + REEMBED_BATCH])
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []
        for memory_id, record in batch.items():
            pieces = embedder.chunks(record.content)
            spans.append((memory_id, len(texts), len(pieces)))
            texts.extend(pieces)
        embedded = cache.embed_cached(conn, embedder, bound.sha256, texts,
                                      prompt=binding_mod.prompts_for(conn, bound.sha256, bound.model_name).document)
        with write_transaction(conn):
            unchanged = records.unchanged(conn, {i: r.content_hash for i, r in batch.items()})
            for memory_id, offset, n in spans:
                record = batch[memory_id]
                if memory_id not in unchanged or not _lacks_vectors(conn, bound.generation, memory_id):
                    continue  # changed, deleted or re-embedded by another process meanwhile
                vectors.insert_chunks(conn, bound.generation, memory_id, record.layer, record.project,
                                      record.session, record.created_at, embedded.hashes[offset:offset + n],
                                      embedded.vectors[offset:offset + n])
            cache.store(conn, bound.sha256, embedded, now)
            records.bump_counters(conn, {"embeddings_computed": len(embedded.new_entries)}, now)
        if progress:
            progress(min(start + REEMBED_BATCH, total), total)


# -- helpers -----------------------------------------------------------------------------------


def _finding(problem: str, ids: list[int], message: str) -> Finding:
    return Finding(problem, len(ids), f"{len(ids)} {message}", True, ids[:SAMPLE])


def _ids(conn: apsw.Connection, sql: str, params: dict[str, Any] | tuple = ()) -> list[int]:
    return [r[0] for r in conn.execute(sql, params)]


def _lacks_vectors(conn: apsw.Connection, generation: int, memory_id: int) -> bool:
    """The memory is live and has no chunk in `generation` (its partial ones were dropped)."""
    row = conn.execute("SELECT deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM chunks WHERE memory_id = m.id "
                       "AND generation = ?) FROM memories AS m WHERE id = ?", (generation, memory_id)).fetchone()
    return bool(row and row[0])


def _scalar(conn: apsw.Connection, sql: str) -> int:
    return conn.execute(sql).fetchone()[0]


def _json_ids(ids: list[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"
