"""The MCP tools: their JSON schemas and descriptions (written for a model to read), and one small
function per tool that turns validated arguments into one call of the `Memory` facade."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import DEFAULT_TTL, LAYERS
from ..memory import Memory
from ..timeutil import parse_duration, parse_when
from ..types import Filters, MemoryRecord, SearchHit

MAX_K = 100
MAX_ID = 2**63 - 1


def _days(layer: str) -> str:
    ttl = DEFAULT_TTL[layer]
    return "never expires" if ttl is None else f"expires after {ttl / 86400:g} day(s) by default"


LAYER_HELP = (
    f"interact = short-lived conversation context ({_days('interact')}); "
    f"insights = learned facts, preferences and decisions ({_days('insights')}, renewed when recalled); "
    f"assets = durable reference material ({_days('assets')})"
)

_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID, "description": "the memory's id, as returned by remember or recall"}
_LAYER = {"type": "string", "enum": list(LAYERS), "description": LAYER_HELP}
_TEXT = {"type": "string", "maxLength": 1000}

FILTERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Optional limits on which memories are considered; leave a field out to not filter on it.",
    "properties": {
        "layers": {"type": "array", "items": {"type": "string", "enum": list(LAYERS)}, "uniqueItems": True,
                   "description": "only memories in one of these layers"},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "only memories carrying all of these tags"},
        "project": _TEXT | {"description": "only memories of this project"},
        "session": _TEXT | {"description": "only memories of this session"},
        "since": _TEXT | {"description": "only memories created at or after this time: an ISO date or "
                                         "date-time (2026-05-01, 2026-05-01T09:30Z), a span ago (30m, 24h, 7d) "
                                         "or a phrase ('last week', 'in September')"},
        "until": _TEXT | {"description": "only memories created before this time (same formats as since; "
                                         "a phrase counts up to its end: 'yesterday' includes yesterday)"},
        "include_expired": {"type": "boolean", "default": False,
                            "description": "also consider memories past their expiry"},
    },
    "additionalProperties": False,
}


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    run: Callable[[Memory, Mapping[str, Any]], dict[str, Any]]
    writes: bool  # changes the file (counts toward the periodic WAL checkpoint)
    read_only: bool = False  # the MCP hint: no change a user would notice (use counters aside)
    destructive: bool = False


# -- conversions ---------------------------------------------------------------------------------

def filters_from(raw: Mapping[str, Any] | None, mem: Memory) -> Filters:
    raw, now = raw or {}, mem.now()
    return Filters(
        layers=tuple(raw.get("layers") or ()), tags=tuple(raw.get("tags") or ()),
        project=raw.get("project"), session=raw.get("session"),
        since=parse_when(raw["since"], now, mem.timezone) if raw.get("since") else None,
        until=parse_when(raw["until"], now, mem.timezone, end=True) if raw.get("until") else None,
        include_expired=bool(raw.get("include_expired", False)),
    )


def _ttl(value: float | str | None) -> float | None:
    """Seconds, or a span like '24h'; 0 means never expire."""
    if value is None or isinstance(value, (int, float)):
        return value
    return 0.0 if value.strip() == "0" else parse_duration(value)


def memory_data(m: MemoryRecord) -> dict[str, Any]:
    data = m.to_dict()
    data.pop("content_hash")
    return {k: v for k, v in data.items() if v not in (None, "", [], {})} | {"id": m.id, "content": m.content}


def hit_data(h: SearchHit) -> dict[str, Any]:
    m = h.memory
    item = {"id": m.id, "score": round(h.score, 6), "layer": m.layer, "content": m.content,
            "scores": {k: v for k, v in h.parts.items() if v is not None}}
    for name in ("title", "project", "session"):
        if getattr(m, name):
            item[name] = getattr(m, name)
    if m.tags:
        item["tags"] = m.tags
    item["created_at"] = m.to_dict()["created_at"]
    return item


# -- the tools -----------------------------------------------------------------------------------

def _remember(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    result = mem.add(a["content"], layer=a.get("layer", "interact"), tags=a.get("tags", ()),
                     project=a.get("project"), session=a.get("session"), metadata=a.get("metadata"),
                     ttl=_ttl(a.get("ttl")))
    return {"id": result.id, "created": result.created, "layer": a.get("layer", "interact")}


def _recall(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    hits = mem.search(a["query"], k=int(a.get("k", 5)), mode=a.get("mode", "hybrid"),
                      filters=filters_from(a.get("filters"), mem), min_score=0.0 if a.get("all") else None)
    result: dict[str, Any] = {"results": [hit_data(h) for h in hits], "count": len(hits)}
    if not hits:
        result["message"] = ("no memory matches: nothing stored answers this query "
                             "(all=true lists the weak matches too)")
    return result


def _get(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    return memory_data(mem.get(int(a["id"]), include_expired=bool(a.get("include_expired", False))))


def _forget(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    hard = bool(a.get("hard", False))
    mem.delete(int(a["id"]), hard=hard)
    return {"id": int(a["id"]), "deleted": "purged" if hard else "soft"}


def _promote(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    m = mem.promote(int(a["id"]), a["to"], reason=a.get("reason") or "requested")
    return {"id": m.id, "layer": m.layer, "expires_at": m.to_dict()["expires_at"]}


def _list_recent(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    found = mem.list(filters_from(a.get("filters"), mem), limit=int(a.get("limit", 10)))
    return {"memories": [memory_data(m) for m in found], "count": len(found)}


def _stats(mem: Memory, a: Mapping[str, Any]) -> dict[str, Any]:
    return mem.status().to_dict()


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "remember", "Remember something",
        "Store one memory so that it can be recalled later by meaning or by words. Use it for facts "
        "about the user, preferences, decisions, and context worth keeping. Storing the same content "
        "again in the same layer and project returns the existing id (created=false). Returns the id.",
        _schema({
            "content": {"type": "string", "minLength": 1, "description": "the text to remember, self-contained (it is read later without this conversation)"},
            "layer": _LAYER | {"default": "interact"},
            "tags": {"type": "array", "items": {"type": "string", "pattern": r"^[^\s,]{1,100}$"},
                     "description": "short labels for filtering later (no spaces or commas), e.g. [\"ui\", \"preference\"]"},
            "project": _TEXT | {"description": "the project this memory belongs to, if any"},
            "session": _TEXT | {"description": "the conversation or session id, if any"},
            "metadata": {"type": "object", "description": "any extra JSON fields to keep with the memory"},
            "ttl": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "maxLength": 32}],
                    "description": "expire after this long: seconds, or a span like 30m, 24h, 90d; 0 = never. "
                                   "Default: the layer's lifetime"},
        }, ("content",)),
        _remember, writes=True),
    ToolSpec(
        "recall", "Recall memories",
        "Find the stored memories most relevant to a query, best first. The default hybrid mode "
        "matches both meaning (a paraphrase finds the memory) and exact words; use mode=text for "
        "exact names or codes. A time phrase in the query ('last week', 'in September') limits it to "
        "memories stored then. Returns id, content, layer and score (with its parts) per memory; an "
        "empty list when nothing stored answers the query.",
        _schema({
            "query": {"type": "string", "minLength": 1, "maxLength": 10_000,
                      "description": "what to look for, in natural language"},
            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 5,
                  "description": f"how many memories to return (1-{MAX_K})"},
            "mode": {"type": "string", "enum": ["hybrid", "vector", "text"], "default": "hybrid",
                     "description": "hybrid = meaning + words (best in general); vector = meaning only; text = words only"},
            "all": {"type": "boolean", "default": False,
                    "description": "also return weak matches below the relevance floor"},
            "filters": FILTERS_SCHEMA,
        }, ("query",)),
        _recall, writes=True, read_only=True),
    ToolSpec(
        "get", "Get one memory",
        "Read one memory by id with all its fields (tags, metadata, times, expiry).",
        _schema({"id": _ID, "include_expired": {"type": "boolean", "default": False,
                                                "description": "also return it if it has expired"}}, ("id",)),
        _get, writes=True, read_only=True),
    ToolSpec(
        "forget", "Forget a memory",
        "Delete one memory by id. By default it is hidden at once and purged later; hard=true "
        "removes it and its index entries now. Use when the user asks to forget something or a "
        "memory turned out wrong.",
        _schema({"id": _ID, "hard": {"type": "boolean", "default": False,
                                     "description": "remove it from the file now instead of hiding it"}}, ("id",)),
        _forget, writes=True, destructive=True),
    ToolSpec(
        "promote", "Promote a memory",
        "Move a memory to another layer, e.g. a conversation detail (interact) that proved to be a "
        "lasting fact (insights) or reference material (assets). Its expiry becomes the new layer's default.",
        _schema({"id": _ID, "to": _LAYER,
                 "reason": _TEXT | {"description": "why, kept in the memory's history"}}, ("id", "to")),
        _promote, writes=True),
    ToolSpec(
        "list_recent", "List recent memories",
        "List the newest memories first, optionally filtered by layer, tags, project, session or time. "
        "Use it to review what was stored recently; use recall to search.",
        _schema({"limit": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10,
                           "description": f"how many memories (1-{MAX_K})"},
                 "filters": FILTERS_SCHEMA}),
        _list_recent, writes=False, read_only=True),
    ToolSpec(
        "stats", "Memory statistics",
        "Describe the memory file: counts per layer, the embedding model, cache and file sizes.",
        _schema({}),
        _stats, writes=False, read_only=True),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
