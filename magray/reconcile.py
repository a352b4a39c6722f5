"""Writes made with plain SQL (the sqlite3 shell, a script, Datasette) finished as if magray had made
them. The schema's triggers (migrations/0005_plain_sql.sql) queue what such a write changed, using
nothing a stock shell lacks; every magray process works the queue off before it reads or writes:
it fills in the content hash, applies the exact-duplicate rule, gives a new memory its layer's
default expiry, embeds the text and drops the vectors of deleted chunks.

Nothing queued costs one indexed lookup. A long queue (a bulk insert) goes in batches, each
embedded outside any transaction and written in one short transaction that re-reads every row, so
other writers wait at most one batch and a row edited again meanwhile simply stays queued."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apsw

from . import binding as binding_mod
from . import records, vectors
from .db import write_transaction
from .embed import cache
from .errors import InvalidInput, ModelError

log = logging.getLogger(__name__)

# Memories embedded and written per transaction (as many as an import batch).
BATCH = 64
# Queued vector deletes per transaction: each is one point delete, no embedding.
DROP_BATCH = 1000

LoadEmbedder = Callable[[], tuple[Any, binding_mod.Binding]]


@dataclass
class Outcome:
    """What one pass did."""

    synced: int = 0          # memories hashed (and embedded, where a model is bound)
    duplicates: int = 0      # folded into the memory that already held their content
    vectors_dropped: int = 0
    waiting: int = 0         # still queued: edited again meanwhile, or no model to embed with


def has_work(conn: apsw.Connection) -> bool:
    """Whether anything is queued: one lookup on each (usually empty) queue."""
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pending_memories) OR EXISTS (SELECT 1 FROM pending_vector_deletes)"
    ).fetchone()[0])


def pending(conn: apsw.Connection) -> dict[str, int]:
    """How much is queued, for `magray status`."""
    memories, deletes = conn.execute(
        "SELECT (SELECT count(*) FROM pending_memories), (SELECT count(*) FROM pending_vector_deletes)"
    ).fetchone()
    return {"memories": memories, "vector_deletes": deletes}


def run(conn: apsw.Connection, load_embedder: LoadEmbedder, now: Callable[[], float], *,
        cache_limit: int | None = None, batch: int = BATCH) -> Outcome:
    """Work off the queue once, in id order. `load_embedder` gives the embedder and binding (it
    may bind a new file) or raises ModelError: then the rows are hashed and checked, and wait
    for a model to be embedded."""
    outcome = Outcome()
    _drop_vectors(conn, outcome)
    if conn.execute("SELECT 1 FROM pending_memories LIMIT 1").fetchone() is None:
        return outcome
    try:
        embedding = load_embedder()
    except ModelError as exc:
        log.warning("memories written with plain SQL wait for an embedding model: %s", exc)
        embedding = None
    after = -1
    while True:
        rows = conn.execute(
            "SELECT p.memory_id, p.change, m.content, m.deleted_at IS NOT NULL FROM pending_memories AS p "
            "LEFT JOIN memories AS m ON m.id = p.memory_id "
            "WHERE p.memory_id > ? ORDER BY p.memory_id LIMIT ?", (after, batch)).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        _sync_batch(conn, rows, embedding, now(), cache_limit, outcome)
    if outcome.synced or outcome.duplicates:
        log.info("plain-SQL writes: %d memories synced, %d exact duplicates folded, %d waiting",
                 outcome.synced, outcome.duplicates, outcome.waiting)
    return outcome


def _sync_batch(conn: apsw.Connection, rows: list[tuple[int, str, str | None, bool]],
                embedding: tuple[Any, binding_mod.Binding] | None, now: float, cache_limit: int | None,
                outcome: Outcome) -> None:
    embedded, spans = None, {}
    if embedding is not None:
        embedder, bound = embedding
        texts: list[str] = []
        for memory_id, _change, content, deleted in rows:
            if content is not None and not deleted:
                pieces = embedder.chunks(content)
                spans[memory_id] = (len(texts), len(pieces))
                texts.extend(pieces)
        embedded = cache.embed_cached(conn, embedder, bound.sha256, texts,
                                      prompt=binding_mod.prompts_for(conn, bound.sha256, bound.model_name).document)
    with write_transaction(conn):
        live = binding_mod.current(conn)
        if embedded is not None and (live is None or live.sha256 != bound.sha256
                                     or live.generation != bound.generation):
            embedded = None  # re-indexed meanwhile: the next pass embeds with the new binding
        generations = binding_mod.generations(conn)
        synced = 0
        for memory_id, change, content, _deleted in rows:
            row = conn.execute("SELECT content, content_hash, layer, project, session, created_at, deleted_at, "
                               "expires_at "
                               "FROM memories WHERE id = ?", (memory_id,)).fetchone()
            if row is None:  # deleted since: its clean-up was done by the delete triggers
                _dequeue(conn, memory_id)
                continue
            current, stored_hash, layer, project, session, created_at, deleted_at, expires_at = row
            if conn.execute("SELECT 1 FROM pending_memories WHERE memory_id = ?", (memory_id,)).fetchone() is None:
                continue  # another magray process finished it meanwhile
            if current != content:
                outcome.waiting += 1  # written again since it was read: the next pass takes it
                continue
            if change == "insert":
                _adopt_tags_text(conn, memory_id)
            chash = records.content_hash(content)
            if deleted_at is None:
                survivor = records.find_duplicate(conn, layer, project, chash)
                if survivor is not None and survivor != memory_id:
                    _fold(conn, memory_id, survivor, change, generations, now)
                    outcome.duplicates += 1
                    continue
            if deleted_at is None and (embedded is None or memory_id not in spans):
                if stored_hash != chash:
                    conn.execute("UPDATE memories SET content_hash = ? WHERE id = ?", (chash, memory_id))
                outcome.waiting += 1  # hashed; the vectors wait for a model (or the next pass)
                continue
            changes: dict[str, Any] = {"content_hash": chash}
            if change == "insert" and expires_at is None:
                # As `magray add` would: the layer's default lifetime, counted from now.
                changes["expires_at"] = records.expiry(layer, now, None)
            conn.execute("UPDATE memories SET " + ", ".join(f"{k} = :{k}" for k in changes)
                         + " WHERE id = :id", changes | {"id": memory_id})
            for generation in generations:
                vectors.delete_for_memory(conn, generation, memory_id)
            if deleted_at is None:
                offset, n = spans[memory_id]
                vectors.insert_chunks(conn, bound.generation, memory_id, layer, project, session, created_at,
                                      embedded.hashes[offset:offset + n], embedded.vectors[offset:offset + n])
            _dequeue(conn, memory_id)
            synced += 1
        if embedded is not None:
            evicted = cache.store(conn, bound.sha256, embedded, now, cache_limit)
            records.bump_counters(conn, {"embeddings_computed": len(embedded.new_entries),
                                         "cache_evictions": evicted}, now)
        records.bump_counters(conn, {"plain_sql_synced": synced}, now)
    outcome.synced += synced


def _fold(conn: apsw.Connection, memory_id: int, survivor: int, change: str, generations: list[int],
          now: float) -> None:
    """The exact-duplicate rule (one memory per content, layer and project): the memory that
    already held the content stays and takes the tags and aliases of the plain-SQL one."""
    conn.execute("INSERT OR IGNORE INTO memory_tags (memory_id, tag) SELECT ?, tag FROM memory_tags "
                 "WHERE memory_id = ?", (survivor, memory_id))
    conn.execute("UPDATE memories SET merged_into = ? WHERE merged_into = ? AND id != ?",
                 (survivor, memory_id, survivor))
    for generation in generations:
        vectors.delete_for_memory(conn, generation, memory_id)
    records.log_event(conn, now, survivor, "duplicate", {
        "removed": memory_id, "change": change,
        "reason": "content written with plain SQL repeats this memory in the same layer and project"})
    records.purge(conn, memory_id)
    records.bump_counters(conn, {"plain_sql_duplicates": 1}, now)


def _adopt_tags_text(conn: apsw.Connection, memory_id: int) -> None:
    """A row inserted with `tags_text` (derived from memory_tags) rather than memory_tags rows:
    its words become tags, as magray would have stored them; words that are not valid tags go."""
    text = conn.execute("SELECT tags_text FROM memories WHERE id = ?", (memory_id,)).fetchone()[0]
    have = {r[0] for r in conn.execute("SELECT tag FROM memory_tags WHERE memory_id = ?", (memory_id,))}
    words = {w for w in re.split(r"[\s,]+", text or "") if w}
    if words <= have and text == " ".join(sorted(have)):
        return
    valid = []
    for word in sorted(words - have):
        try:
            valid += records.check_tags([word])
        except InvalidInput:
            log.warning("memory %d: %r in tags_text is not a valid tag; dropped", memory_id, word)
    conn.executemany("INSERT OR IGNORE INTO memory_tags (memory_id, tag) VALUES (?, ?)",
                     [(memory_id, tag) for tag in valid])
    conn.execute("UPDATE memories SET tags_text = coalesce((SELECT group_concat(tag, ' ') FROM (SELECT tag "
                 "FROM memory_tags WHERE memory_id = ?1 ORDER BY tag)), '') WHERE id = ?1", (memory_id,))


def _dequeue(conn: apsw.Connection, memory_id: int) -> None:
    conn.execute("DELETE FROM pending_memories WHERE memory_id = ?", (memory_id,))


def _drop_vectors(conn: apsw.Connection, outcome: Outcome) -> None:
    """The vectors of chunks that plain SQL removed, a batch per transaction."""
    while conn.execute("SELECT 1 FROM pending_vector_deletes LIMIT 1").fetchone() is not None:
        with write_transaction(conn):
            rows = conn.execute("SELECT chunk_id, generation FROM pending_vector_deletes ORDER BY chunk_id "
                                "LIMIT ?", (DROP_BATCH,)).fetchall()
            by_generation: dict[int, list[tuple[int]]] = {}
            for chunk_id, generation in rows:
                by_generation.setdefault(generation, []).append((chunk_id,))
            for generation, ids in by_generation.items():
                name = vectors.table(generation)
                if conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?",
                                (name,)).fetchone():
                    conn.executemany(f"DELETE FROM {name} WHERE chunk_id = ?", ids)
            conn.executemany("DELETE FROM pending_vector_deletes WHERE chunk_id = ?",
                             [(chunk_id,) for chunk_id, _ in rows])
        outcome.vectors_dropped += len(rows)
