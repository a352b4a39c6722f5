"""Memories as rows: validation, insert with dedup, read, list, update, tags, layers, delete."""

from __future__ import annotations

import hashlib
import time
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import apsw

from .config import DEFAULT_TTL, LAYERS, RENEWED_BY_USE
from .errors import InvalidInput, NotFound
from .schema import query
from .types import Filters, MemoryRecord

_TAG = re.compile(r"^[^\s,\x00]{1,100}$")
MAX_LIMIT = 100_000
MAX_INTEGER = 2**63 - 1  # SQLite's largest integer
MAX_CONTENT_CHARS = 1_000_000
MAX_METADATA_CHARS = 100_000
MAX_METADATA_DEPTH = 32


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise InvalidInput(f"unknown layer {layer!r}: use one of {', '.join(LAYERS)}")
    return layer


def check_text(value: Any, name: str) -> str:
    """Text SQLite can store and compare as given: a str, valid UTF-8, without NUL characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text")
    if "\x00" in value:
        # SQLite's text functions stop at a NUL: length('\x00abc') is 0, so such a text would fail
        # the schema's CHECKs with a raw constraint error, and would not compare or search as stored.
        raise InvalidInput(f"{name} contains a NUL character (\\x00); remove it, or encode binary data first")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} is not valid unicode (lone surrogate characters)") from None
    return value


def check_content(content: Any) -> str:
    """Content every way in (add, update, import) accepts alike."""
    check_text(content, "content")
    if not content.strip():
        raise InvalidInput("content is empty")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidInput(f"content is {len(content):,} characters; the limit is {MAX_CONTENT_CHARS:,}")
    return content


def check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple, set, frozenset)):
        raise InvalidInput("tags must be a list of texts")
    clean = []
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise InvalidInput(f"bad tag {tag!r}: tags are 1-100 characters without spaces or commas")
        clean.append(check_text(tag, "a tag"))
    return sorted(set(clean))


def check_metadata(metadata: Mapping[str, Any] | None) -> str:
    """Metadata as the JSON text stored: an object, at most MAX_METADATA_DEPTH deep (deeper
    structures cannot be read back by every JSON reader, Python's included) and
    MAX_METADATA_CHARS long."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise InvalidInput("metadata must be a JSON object")
    check_depth(metadata, "metadata")
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"metadata is not valid JSON: {exc}") from None
    if len(text) > MAX_METADATA_CHARS:
        raise InvalidInput(f"metadata is {len(text):,} characters as JSON; the limit is {MAX_METADATA_CHARS:,}")
    return check_text(text, "metadata")


def check_depth(value: Any, name: str, limit: int | None = None) -> None:
    """Refuse lists and objects nested deeper than `limit` (walked without recursion, so that a
    hostile value cannot exhaust the stack here either; a cycle counts as too deep)."""
    limit = MAX_METADATA_DEPTH if limit is None else limit
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        else:
            continue
        if depth > limit:
            raise InvalidInput(f"{name} is nested more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children)


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1 or limit > MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return limit


def check_offset(offset: int) -> int:
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise InvalidInput(f"offset must be a whole number, got {offset!r}")
    # Below 0 means from the start; past SQLite's 64-bit integers, past the end (not an overflow).
    return min(max(0, offset), 2**63 - 1)


def check_importance(importance: float) -> float:
    try:
        value = float(importance)
    except (TypeError, ValueError):
        raise InvalidInput(f"importance must be a number from 0 to 1, got {importance!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"importance must be a number from 0 to 1, got {importance!r}")
    return value


def optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    return check_text(value, name)


# Times are unix seconds from 1970 to the end of year 9999: what datetime can show.
MAX_TIME = 253402300799.0


def check_time(value: Any, name: str) -> float:
    number = check_number(value, name)
    if not 0 <= number <= MAX_TIME:
        raise InvalidInput(f"{name} must be a time between 1970 and 9999, got {value!r}")
    return number


def check_number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidInput(f"{name} must be a finite number")
    return number


def expiry(layer: str, now: float, ttl: float | None) -> float | None:
    """When a memory of `layer` added at `now` expires; an explicit ttl (seconds) wins, 0 = never."""
    if ttl is not None:
        if ttl < 0:
            raise InvalidInput("ttl cannot be negative")
        if ttl and now + ttl > MAX_TIME:
            raise InvalidInput("ttl is too long (past the year 9999); use 0 for never")
        return None if ttl == 0 else now + ttl
    default = DEFAULT_TTL[layer]
    return None if default is None else now + default


def with_filter(name: str) -> str:
    """A named query with the shared filter and column list filled in."""
    return (query(name)
            .replace("/*FILTER*/", query("filter"))
            .replace("/*COLUMNS*/", query("memory_columns")))


def filter_params(filters: Filters, now: float, *, include_aliases: bool = True) -> dict[str, Any]:
    """Parameters of sql/filter.sql. Aliases (near-duplicates merged into another memory) are
    included for search, which reports their survivor instead; `list` hides them."""
    for layer in filters.layers:
        check_layer(layer)
    tags = check_tags(filters.tags)
    return {
        "now": now,
        "include_expired": int(filters.include_expired),
        "layers": json.dumps(list(filters.layers)) if filters.layers else None,
        "project": filters.project,
        "session": filters.session,
        "since": filters.since,
        "until": filters.until,
        "tags": json.dumps(tags),
        "tag_count": len(tags),
        "include_aliases": int(include_aliases),
    }


def _record(row: tuple) -> MemoryRecord:
    (id_, layer, content, chash, title, kind, source, project, session, tags_text, metadata,
     created, updated, accessed, count, importance, expires, deleted, merged_into) = row
    return MemoryRecord(
        id=id_, layer=layer, content=content, content_hash=chash, title=title, kind=kind,
        source=source, project=project, session=session,
        tags=tags_text.split() if tags_text else [], metadata=json.loads(metadata),
        created_at=created, updated_at=updated, accessed_at=accessed, access_count=count,
        importance=importance, expires_at=expires, deleted_at=deleted, merged_into=merged_into,
    )


def find_duplicate(conn: apsw.Connection, layer: str, project: str, chash: str) -> int | None:
    row = conn.execute(
        "SELECT id FROM memories WHERE layer = ? AND project = ? AND content_hash = ? AND deleted_at IS NULL",
        (layer, project, chash),
    ).fetchone()
    return row[0] if row else None


def insert(conn: apsw.Connection, fields: dict[str, Any], tags: list[str]) -> int:
    """Insert a validated memory and its tags (inside the caller's transaction, which also writes
    its vectors: the row is taken off the queue that the insert trigger puts every new row on)."""
    memory_id = conn.execute(query("insert_memory"), fields).fetchone()[0]
    conn.execute("DELETE FROM pending_memories WHERE memory_id = ?", (memory_id,))
    conn.executemany("INSERT INTO memory_tags (memory_id, tag) VALUES (?, ?)",
                     [(memory_id, t) for t in tags])
    return memory_id


def restore_kept(conn: apsw.Connection, memory_id: int, kept: Mapping[str, Any]) -> None:
    """Give an imported memory back the stored times, counts and per-session uses it had."""
    conn.execute(
        "UPDATE memories SET updated_at = :updated_at, accessed_at = :accessed_at, "
        "access_count = :access_count, expires_at = :expires_at WHERE id = :id",
        {k: kept[k] for k in ("updated_at", "accessed_at", "access_count", "expires_at")} | {"id": memory_id})
    conn.executemany(
        "INSERT INTO memory_uses (memory_id, session, uses, last_at) VALUES (?, ?, ?, ?)",
        [(memory_id, u["session"], u["uses"], u["last_at"]) for u in kept["uses"]])


def get_many(conn: apsw.Connection, ids: list[int]) -> dict[int, MemoryRecord]:
    rows = conn.execute(with_filter("get_memories"), {"ids": json.dumps(ids)}).fetchall()
    return {row[0]: _record(row) for row in rows}


def get(conn: apsw.Connection, memory_id: int, now: float, *, include_deleted: bool = False,
        include_expired: bool = False) -> MemoryRecord:
    record = get_many(conn, [memory_id]).get(memory_id)
    if record is None or (record.deleted_at is not None and not include_deleted):
        raise NotFound(f"no memory with id {memory_id}")
    if not include_expired and record.expires_at is not None and record.expires_at <= now:
        raise NotFound(f"memory {memory_id} has expired (use --include-expired to see it)")
    return record


def unchanged(conn: apsw.Connection, content_hashes: Mapping[int, str]) -> set[int]:
    """The ids, among `content_hashes` (id -> the content hash read earlier), of memories that are
    still live with that same content: what may be given vectors computed from it."""
    rows = conn.execute(
        "SELECT m.id FROM memories AS m JOIN json_each(?) AS j ON m.id = CAST(j.key AS INTEGER) "
        "WHERE m.deleted_at IS NULL AND m.content_hash = j.value",
        (json.dumps({str(k): v for k, v in content_hashes.items()}),))
    return {r[0] for r in rows}


def list_memories(conn: apsw.Connection, filters: Filters, now: float, limit: int,
                  offset: int = 0) -> list[MemoryRecord]:
    params = filter_params(filters, now, include_aliases=False) | {"limit": check_limit(limit), "offset": check_offset(offset)}
    return [_record(row) for row in conn.execute(with_filter("list_memories"), params)]


def record_use(conn: apsw.Connection, ids: list[int], now: float, session: str | None = None) -> None:
    """Count a use of each memory (and of the session it was used in, when known)."""
    if session:
        conn.executemany(
            "INSERT INTO memory_uses (memory_id, session, uses, last_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT DO UPDATE SET uses = uses + 1, last_at = excluded.last_at",
            [(i, session, now) for i in ids])
    conn.execute(query("record_use"), {
        "ids": json.dumps(ids), "now": now,
        "renewed_layers": json.dumps(sorted(RENEWED_BY_USE)),
        "ttls": json.dumps({k: v for k, v in DEFAULT_TTL.items() if v is not None}),
    })


def update_fields(conn: apsw.Connection, memory_id: int, changes: dict[str, Any], now: float) -> None:
    """Set the given columns (names come from the library, never from the user)."""
    allowed = {"content", "content_hash", "title", "kind", "source", "metadata", "importance",
               "expires_at", "layer", "project", "session"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"cannot update {', '.join(sorted(unknown))}")
    assignments = ", ".join(f"{name} = :{name}" for name in changes)
    conn.execute(f"UPDATE memories SET {assignments}, updated_at = :now WHERE id = :id",
                 changes | {"now": now, "id": memory_id})


def set_tags(conn: apsw.Connection, memory_id: int, add: list[str], remove: list[str]) -> None:
    conn.executemany("INSERT OR IGNORE INTO memory_tags (memory_id, tag) VALUES (?, ?)",
                     [(memory_id, t) for t in add])
    conn.executemany("DELETE FROM memory_tags WHERE memory_id = ? AND tag = ?",
                     [(memory_id, t) for t in remove])


def soft_delete(conn: apsw.Connection, memory_id: int, now: float) -> None:
    conn.execute("UPDATE memories SET deleted_at = ? WHERE id = ?", (now, memory_id))


def purge(conn: apsw.Connection, memory_id: int) -> None:
    """Remove the row; tags, uses and chunks go by trigger (and foreign-key cascade), the FTS
    row by trigger. The caller removes the vectors first (vec0 tables cannot take part in a
    trigger; chunks left for the trigger are queued for reconcile.py)."""
    conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))


def bump_counters(conn: apsw.Connection, counts: Mapping[str, int], now: float | None = None) -> None:
    """Add to the file's counters, in total and for the day (UTC) of `now`."""
    rows = [(k, v) for k, v in counts.items() if v]
    conn.executemany(
        "INSERT INTO counters (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", rows)
    conn.executemany(
        "INSERT INTO daily_counters (day, name, value) VALUES (date(?, 'unixepoch'), ?, ?) "
        "ON CONFLICT DO UPDATE SET value = value + excluded.value",
        [(now if now is not None else time.time(), k, v) for k, v in rows])


def counters(conn: apsw.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT name, value FROM counters ORDER BY name").fetchall())


def log_event(conn: apsw.Connection, now: float, memory_id: int | None, kind: str,
              detail: Mapping[str, Any]) -> None:
    conn.execute("INSERT INTO events (at, memory_id, kind, detail) VALUES (?, ?, ?, ?)",
                 (now, memory_id, kind, json.dumps(dict(detail))))


def filtered_ids(conn: apsw.Connection, filters: Filters, now: float, most: int = -1) -> list[int]:
    """The memories the filter admits (at most `most` of them; -1: all)."""
    # The project and session again as plain equalities: the shared filter's `(:project IS NULL
    # OR m.project = :project)` keeps SQLite off the scope index (25 ms against 0.2 ms to find 201
    # memories of a 1% project of 1M).
    scope = "".join(f" AND m.{c} = :{c}" for c in ("project", "session") if getattr(filters, c) is not None)
    sql = "SELECT m.id FROM memories AS m WHERE " + query("filter") + scope + " LIMIT :most"
    return [r[0] for r in conn.execute(sql, filter_params(filters, now) | {"most": most})]


def visible(conn: apsw.Connection, ids: list[int], filters: Filters, now: float) -> set[int]:
    sql = ("SELECT m.id FROM memories AS m WHERE m.id IN (SELECT value FROM json_each(:ids)) AND "
           + query("filter"))
    return {r[0] for r in conn.execute(sql, filter_params(filters, now) | {"ids": json.dumps(ids)})}
