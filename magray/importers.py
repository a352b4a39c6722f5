"""Reading memories kept by other tools, as they are on disk, into items for `Memory.add_many`:
mem0's JSON export, a basic-memory folder of notes, any folder of Markdown, and a simonw/llm
embeddings database (content and metadata; vectors are re-made with magray's model)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from . import records
from .errors import InvalidInput, NotFound

SOURCES = ("mem0", "basic-memory", "markdown", "llm")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


@dataclass
class Plan:
    """What a source holds: the memories to add, and what could not be taken (with why)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read(source: str, path: Path, *, layer: str, project: str | None = None,
         collection: str | None = None, split: str = "file") -> Plan:
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path} does not exist")
    if source == "mem0":
        return _mem0(path, layer, project)
    if source in ("basic-memory", "markdown"):
        if split not in ("file", "heading"):
            raise InvalidInput("split must be 'file' or 'heading'")
        return _markdown(path, layer, project, source, "file" if source == "basic-memory" else split)
    if source == "llm":
        return _llm(path, layer, project, collection)
    raise InvalidInput(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")


def tag(text: Any) -> str | None:
    """A tag from another tool's label: spaces and commas become dashes, at most 100 characters."""
    clean = re.sub(r"[\s,]+", "-", str(text).strip().lstrip("#"))[:100].strip("-")
    return clean or None


def _tags(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = re.split(r"[,\s]+", values)
    elif not isinstance(values, (list, tuple)):
        values = [values]
    return sorted({t for t in (tag(v) for v in values if isinstance(v, (str, int, float))) if t})


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _timestamp(value: Any) -> float | None:
    """A time another tool wrote, as unix seconds; None (stored as now) when it is missing or
    cannot be one (not a date, or outside 1970..9999)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            seconds = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return seconds if 0 <= seconds <= records.MAX_TIME else None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Another tool's metadata as magray stores it (JSON, bounded in depth and size), or
    InvalidInput saying why it cannot be."""
    records.check_depth(value, "metadata")
    try:
        clean = _jsonable(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"metadata is not valid JSON: {exc}") from None
    records.check_metadata(clean)
    return clean


def _mem0(path: Path, layer: str, project: str | None) -> Plan:
    """mem0's `get_all()` / export JSON: a list of memories, or {"results": [...]} / {"memories": [...]}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"{path} is not a mem0 JSON export: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"{path} is not a mem0 JSON export: nested too deep to read") from None
    if isinstance(data, dict):
        data = data.get("results", data.get("memories"))
    if not isinstance(data, list):
        raise InvalidInput(f"{path} is not a mem0 JSON export (no list of memories)")
    plan = Plan()
    for n, entry in enumerate(data, start=1):
        text = entry.get("memory") or entry.get("text") or entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(text, str) or not text.strip():
            plan.skipped.append(f"entry {n}: no memory text")
            continue
        given = entry.get("metadata")
        meta = dict(given) if isinstance(given, dict) else ({} if given is None else {"value": given})
        for key in ("id", "hash", "user_id", "agent_id", "run_id", "updated_at"):
            if entry.get(key) is not None:
                meta[f"mem0_{key}"] = entry[key]
        try:
            metadata = _metadata(meta)
        except InvalidInput as exc:
            plan.skipped.append(f"entry {n}: {exc}")
            continue
        scope = project if project is not None else (entry.get("user_id") or entry.get("agent_id") or "")
        plan.items.append({
            "content": text, "layer": layer, "source": "mem0",
            "project": scope if isinstance(scope, str) else str(scope),
            "session": _text_or_empty(entry.get("run_id")), "tags": _tags(entry.get("categories")),
            "metadata": metadata, "created_at": _timestamp(entry.get("created_at")),
        })
    return plan


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a note's front matter is a few fields, and aliases let a
    few hundred bytes expand into gigabytes (or into a structure that contains itself)."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted",
                                              event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "YAML anchors (&name) are not accepted",
                                              event.start_mark)
        return super().compose_node(parent, index)


class FrontMatterError(ValueError):
    """Front matter that is YAML but cannot be taken (aliases, nesting too deep)."""


def front_matter(text: str) -> tuple[dict[str, Any], str]:
    """YAML front matter (if any) and the body after it. Front matter that is not YAML is left
    in the body; YAML with aliases or anchors, or nested too deep, raises FrontMatterError."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.load(match.group(1), Loader=_NoAliasLoader) or {}
    except yaml.composer.ComposerError as exc:
        if "not accepted" in str(exc.problem):
            raise FrontMatterError(f"front matter: {exc.problem}") from None
        return {}, text
    except yaml.YAMLError:
        return {}, text
    except RecursionError:
        raise FrontMatterError("front matter is nested too deep") from None
    return (meta if isinstance(meta, dict) else {}), text[match.end():]


def _markdown(path: Path, layer: str, project: str | None, source: str, split: str) -> Plan:
    files = sorted(path.rglob("*.md")) if path.is_dir() else [path]
    root = path if path.is_dir() else path.parent
    plan = Plan()
    for file in files:
        if any(part.startswith(".") for part in file.relative_to(root).parts):
            continue  # .obsidian/, .git/ and the like
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            plan.skipped.append(f"{file.relative_to(root)}: {exc}")
            continue
        rel = str(file.relative_to(root))
        try:
            meta, body = front_matter(text)
            metadata = _metadata({str(k): v for k, v in meta.items() if k not in ("tags", "title", "type")})
        except (FrontMatterError, InvalidInput) as exc:
            plan.skipped.append(f"{rel}: {exc}")
            continue
        base = {
            "layer": layer, "source": f"{source}:{rel}", "project": project or "",
            "kind": meta.get("type") if isinstance(meta.get("type"), str) else None,
            "tags": _tags(meta.get("tags")), "created_at": _timestamp(meta.get("created") or meta.get("date")),
            "metadata": metadata,
        }
        sections = _sections(body) if split == "heading" else [(None, body)]
        title = meta.get("title") if isinstance(meta.get("title"), str) else file.stem
        for heading, content in sections:
            if not content.strip():
                continue
            plan.items.append(dict(base, content=content.strip(),
                                   title=f"{title} / {heading}" if heading else title))
        if not any(c.strip() for _, c in sections):
            plan.skipped.append(f"{rel}: empty")
    return plan


def _sections(body: str) -> list[tuple[str | None, str]]:
    """The text before the first heading, then each heading with the text under it."""
    found = list(_HEADING.finditer(body))
    if not found:
        return [(None, body)]
    out = [(None, body[:found[0].start()])]
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(body)
        out.append((match.group(2), body[match.end():end]))
    return out


def _llm(path: Path, layer: str, project: str | None, collection: str | None) -> Plan:
    """A simonw/llm embeddings database: collections(name, model) and embeddings(id, content,
    metadata, updated). Rows stored without their content (no --store) cannot be imported."""
    import apsw

    try:
        conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        rows = conn.execute(
            "SELECT c.name, e.id, e.content, e.metadata, e.updated FROM embeddings AS e "
            "JOIN collections AS c ON c.id = e.collection_id WHERE ?1 IS NULL OR c.name = ?1 "
            "ORDER BY c.name, e.id", (collection,)).fetchall()
    except apsw.Error as exc:
        raise InvalidInput(f"{path} is not an llm embeddings database: {exc}") from None
    plan = Plan()
    for name, item_id, content, metadata, updated in rows:
        if not content or not content.strip():
            plan.skipped.append(f"{name}/{item_id}: stored without its content")
            continue
        try:
            meta = json.loads(metadata) if metadata else {}
        except (ValueError, RecursionError):
            meta = {}
        meta = dict(meta if isinstance(meta, dict) else {"value": meta}, llm_collection=name, llm_id=item_id)
        try:
            metadata = _metadata(meta)
        except InvalidInput as exc:
            plan.skipped.append(f"{name}/{item_id}: {exc}")
            continue
        plan.items.append({"content": content, "layer": layer, "source": "llm", "project": project or name,
                           "metadata": metadata, "created_at": _timestamp(updated)})
    if not rows and collection:
        raise NotFound(f"no collection named {collection!r} in {path}")
    return plan
