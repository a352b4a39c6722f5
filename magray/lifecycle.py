"""How memories move through their life: expiry and purge, promotion by rule, near-duplicate
aliases, scopes (sessions, projects), usage statistics and maintenance. Functions take a
connection; the Memory facade runs them in its transactions."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import apsw

from . import records, vectors
from .binding import Binding
from .schema import query

log = logging.getLogger(__name__)


# An alias (a near-duplicate merged into another memory) lives as long as the memory it was merged
# into: uses renew only that memory, and dedup never loses text. Its own expiry counts once the
# memory it was merged into has gone.
_EXPIRED = ("m.expires_at IS NOT NULL AND m.expires_at <= :now AND NOT EXISTS ("
            "SELECT 1 FROM memories AS s WHERE s.id = m.merged_into AND s.deleted_at IS NULL "
            "AND (s.expires_at IS NULL OR s.expires_at > :now))")


def expired_ids(conn: apsw.Connection, now: float, limit: int | None = None) -> list[int]:
    sql = f"SELECT m.id FROM memories AS m WHERE {_EXPIRED} AND m.deleted_at IS NULL ORDER BY m.expires_at"
    params: dict[str, Any] = {"now": now}
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [r[0] for r in conn.execute(sql, params)]


def clean_candidates(conn: apsw.Connection, now: float) -> list[dict[str, Any]]:
    """What `clean` would purge: expired memories and soft-deleted ones."""
    rows = conn.execute(
        "SELECT m.id, m.layer, CASE WHEN m.deleted_at IS NOT NULL THEN 'deleted' ELSE 'expired' END, "
        f"substr(m.content, 1, 80) FROM memories AS m WHERE m.deleted_at IS NOT NULL OR ({_EXPIRED}) "
        "ORDER BY m.id", {"now": now})
    return [{"id": i, "layer": layer, "reason": reason, "preview": preview} for i, layer, reason, preview in rows]


def purge(conn: apsw.Connection, items: list[dict[str, Any]], now: float) -> int:
    """Remove memories with their tags, FTS entries and vectors, logging why (inside a transaction).
    Aliases of a purged memory become memories of their own again (ON DELETE SET NULL)."""
    from .binding import generations

    live_generations = generations(conn)
    for item in items:
        for generation in live_generations:
            vectors.delete_for_memory(conn, generation, item["id"])
        records.purge(conn, item["id"])
        records.log_event(conn, now, item["id"], "expire" if item["reason"] == "expired" else "purge",
                          {"layer": item["layer"], "reason": item["reason"]})
    expired = sum(1 for i in items if i["reason"] == "expired")
    records.bump_counters(conn, {"expirations": expired, "purges": len(items) - expired}, now)
    if items:
        log.info("purged %d memories (%d expired)", len(items), expired)
    return len(items)


def promotion_candidates(conn: apsw.Connection, now: float, rules: dict[str, Any]) -> list[dict[str, Any]]:
    params = {"now": now, **{k: rules[k] for k in
                             ("interact_min_uses", "insights_min_sessions", "insights_min_importance")}}
    return [{"id": i, "to": target, "reason": reason}
            for i, target, reason in conn.execute(query("promotion_candidates"), params)]


_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def numbers(text: str) -> list[str]:
    """The numbers a text states. Sentence embeddings barely see them ("Alice is 30" and "Alice
    is 31" score 0.98), so two texts with different numbers are never near-duplicates."""
    return sorted(_NUMBER.findall(text))


def nearest_duplicate(conn: apsw.Connection, bound: Binding, vector, text: str, layer: str,
                      project: str, min_similarity: float, now: float) -> tuple[int, float] | None:
    """The live memory of the same layer and project whose vector is at least `min_similarity`
    to `vector` and which states the same numbers as `text`, if any (the survivor an incoming
    near-duplicate should reinforce; it must be live and unexpired)."""
    from .types import Filters

    hits = vectors.knn(conn, bound.generation, vector, 5, Filters(layers=(layer,), project=project),
                       candidates=64)
    wanted = numbers(text)
    for _, memory_id, sim in hits:
        if sim < min_similarity:
            return None
        row = conn.execute(
            "SELECT s.id, s.content FROM memories AS m JOIN memories AS s ON s.id = coalesce(m.merged_into, m.id) "
            "WHERE m.id = ? AND s.deleted_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > ?)",
            (memory_id, now)).fetchone()
        if row and numbers(row[1]) == wanted:
            return (row[0], sim)
    return None


def merge_into(conn: apsw.Connection, alias_id: int, survivor_id: int, similarity: float,
               tags: list[str], now: float) -> None:
    """Keep `alias_id` as an alias of `survivor_id` and reinforce the survivor (a use, merged tags)."""
    conn.execute("UPDATE memories SET merged_into = ? WHERE id = ?", (survivor_id, alias_id))
    conn.execute("UPDATE memories SET access_count = access_count + 1, updated_at = ? WHERE id = ?",
                 (now, survivor_id))
    records.set_tags(conn, survivor_id, tags, [])
    records.log_event(conn, now, alias_id, "merge",
                      {"into": survivor_id, "similarity": round(similarity, 4), "tags_added": tags})
    records.bump_counters(conn, {"merges": 1}, now)
    log.info("memory %d merged into %d as a near-duplicate (cosine %.3f)", alias_id, survivor_id, similarity)


def unmerge(conn: apsw.Connection, alias_id: int, now: float) -> int:
    row = conn.execute("SELECT merged_into FROM memories WHERE id = ?", (alias_id,)).fetchone()
    if row is None or row[0] is None:
        from .errors import InvalidInput

        raise InvalidInput(f"memory {alias_id} is not merged into another memory")
    # On its own again, it lives at least as long as the memory it was merged into would have.
    conn.execute(
        "UPDATE memories SET merged_into = NULL, expires_at = CASE "
        "WHEN memories.expires_at IS NULL OR s.until IS NULL THEN NULL ELSE max(memories.expires_at, s.until) END "
        "FROM (SELECT expires_at AS until FROM memories WHERE id = ?1) AS s WHERE memories.id = ?2",
        (row[0], alias_id))
    records.log_event(conn, now, alias_id, "unmerge", {"from": row[0]})
    return row[0]


def aliases_of(conn: apsw.Connection, memory_id: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM memories WHERE merged_into = ?", (memory_id,))]


def survivors(conn: apsw.Connection, ids: list[int]) -> dict[int, int]:
    """alias id -> the memory it was merged into, for the aliases among `ids`."""
    rows = conn.execute("SELECT id, merged_into FROM memories WHERE merged_into IS NOT NULL "
                        "AND id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))
    return dict(rows.fetchall())


def fold_parts(conn: apsw.Connection, parts: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Score parts by memory with each alias folded into its survivor (the better score wins)."""
    mapping = survivors(conn, list(parts))
    if not mapping:
        return parts
    out: dict[int, dict[str, Any]] = {}
    for memory_id, p in parts.items():
        target = mapping.get(memory_id, memory_id)
        if target not in out or p.get("fused", 0) > out[target].get("fused", 0):
            out[target] = p
    return out


def duplicate_groups(conn: apsw.Connection, bound: Binding, layers: list[str],
                     min_similarity: float) -> list[list[int]]:
    """Groups of live memories (same layer and project) whose vectors are near-duplicates."""
    from .types import Filters

    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    table = vectors.table(bound.generation)
    rows = conn.execute(
        f"SELECT v.memory_id, v.embedding, m.layer, m.project, m.content FROM {table} AS v JOIN memories AS m "
        "ON m.id = v.memory_id WHERE m.deleted_at IS NULL AND m.merged_into IS NULL "
        "AND m.layer IN (SELECT value FROM json_each(?))", (json.dumps(layers),)).fetchall()
    texts = {r[0]: r[4] for r in rows}
    live = set(texts)
    for memory_id, blob, layer, project, _ in rows:
        vec = vectors.decode([blob], bound.dim)[0]
        for _, other, sim in vectors.knn(conn, bound.generation, vec, 5,
                                         Filters(layers=(layer,), project=project), candidates=64):
            if other != memory_id and other in live and sim >= min_similarity \
                    and numbers(texts[other]) == numbers(texts[memory_id]):
                parent[find(other)] = find(memory_id)
    groups: dict[int, set[int]] = {}
    for x in list(parent):
        groups.setdefault(find(x), set()).add(x)
    for root in list(groups):
        groups[root].add(root)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def scopes(conn: apsw.Connection, column: str, now: float) -> list[dict[str, Any]]:
    """Sessions or projects with their live memory counts and last activity."""
    if column not in ("session", "project"):
        raise ValueError(column)
    rows = conn.execute(
        f"SELECT {column}, count(*), max(created_at) FROM memories WHERE {column} != '' "
        "AND deleted_at IS NULL AND merged_into IS NULL AND (expires_at IS NULL OR expires_at > ?) "
        f"GROUP BY {column} ORDER BY max(created_at) DESC", (now,))
    return [{"name": name, "memories": n, "last": last} for name, n, last in rows]


def tag_counts(conn: apsw.Connection, now: float) -> list[dict[str, Any]]:
    """Every tag on a live memory, with how many carry it, most used first."""
    rows = conn.execute(
        "SELECT t.tag, count(*) FROM memory_tags AS t JOIN memories AS m ON m.id = t.memory_id "
        "WHERE m.deleted_at IS NULL AND m.merged_into IS NULL AND (m.expires_at IS NULL OR m.expires_at > ?) "
        "GROUP BY t.tag ORDER BY count(*) DESC, t.tag", (now,))
    return [{"name": tag, "memories": n} for tag, n in rows]


def scope_ids(conn: apsw.Connection, column: str, value: str) -> list[int]:
    if column not in ("session", "project"):
        raise ValueError(column)
    return [r[0] for r in conn.execute(f"SELECT id FROM memories WHERE {column} = ?", (value,))]


def layers_by_month(conn: apsw.Connection) -> list[tuple[str, str, int]]:
    return conn.execute(query("stats_layers_by_month")).fetchall()


def activity_by_day(conn: apsw.Connection, days: int) -> list[tuple[str, str, int]]:
    return conn.execute(
        "SELECT day, name, value FROM daily_counters WHERE day >= date('now', ?) ORDER BY day, name",
        (f"-{int(days)} days",)).fetchall()


def optimize(conn: apsw.Connection, vacuum: bool, checkpoint: str = "TRUNCATE") -> None:
    """Merge FTS5 segments, refresh planner statistics, fold the WAL back into the file (with the
    `checkpoint` mode: PASSIVE while the file is replicated), and optionally VACUUM. Each step is
    safe while other processes use the file."""
    from .db import write_transaction

    with write_transaction(conn):
        conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('optimize')")
    conn.execute("PRAGMA optimize")
    if vacuum:
        conn.execute("VACUUM")
    if checkpoint not in ("PASSIVE", "TRUNCATE"):
        raise ValueError(checkpoint)
    conn.execute(f"PRAGMA wal_checkpoint({checkpoint})").fetchall()


# The parts of the file that `stats(space=True)` shows, by the table each b-tree belongs to (an
# index counts with its table), first match wins; everything else is "other".
FILE_PARTS = (
    ("re-rank vectors", re.compile(r"vec_chunks_\d+_auxiliary")),  # float16, see vectors.encode
    ("vector signatures", re.compile(r"vec_chunks_\d+_vector_chunks\d+")),  # one bit a dimension
    ("vector metadata and ANN lists", re.compile(r"vec_chunks_\d+(_\w+)?|ann_lists_\d+")),
    ("full-text index", re.compile(r"memories_fts(_\w+)?")),
    ("chunks", re.compile(r"chunks")),
    ("embedding cache", re.compile(r"embedding_cache")),
    ("events and counters", re.compile(r"events|counters|daily_counters")),
    ("memories and metadata", re.compile(r"memories|memory_tags|memory_uses")),
)
OTHER_PART = "other"
# SQLite never uses the page at byte offset 2^30 (its locking range) of a file larger than that.
_LOCK_BYTE = 1 << 30


def part_of(table: str) -> str:
    return next((name for name, pattern in FILE_PARTS if pattern.fullmatch(table)), OTHER_PART)


def file_parts(conn: apsw.Connection) -> dict[str, Any]:
    """What each part of the file costs: the pages of its tables and indexes, from SQLite's dbstat
    (which reads every page: ~1 s per GB), in bytes and bytes per memory row (deleted ones
    included: they hold space until purged), and how much of those pages is unused (after many
    deletes, or the float16 conversion of an older file: VACUUM packs them). The parts add up to
    the used pages; free pages are apart (VACUUM gives them back too)."""
    from .db import read_snapshot

    with read_snapshot(conn):
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')"))
        sizes = dict.fromkeys([name for name, _ in FILE_PARTS] + [OTHER_PART], 0)
        unused = dict.fromkeys(sizes, 0)
        for name, size, spare in conn.execute("SELECT name, pgsize, unused FROM dbstat WHERE aggregate = TRUE"):
            part = part_of(owner.get(name, name))
            sizes[part] += size
            unused[part] += spare
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    if pages * page_size > _LOCK_BYTE:
        sizes[OTHER_PART] += page_size
        unused[OTHER_PART] += page_size
    return {
        "memories": memories, "page_size": page_size,
        "used_bytes": (pages - free) * page_size, "free_bytes": free * page_size,
        "parts": [{"name": name, "bytes": size, "bytes_per_memory": round(size / memories, 1) if memories else None,
                   "unused_bytes": unused[name]}
                  for name, size in sorted(sizes.items(), key=lambda item: -item[1])],
    }
