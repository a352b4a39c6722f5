"""All output of the CLI: one JSON envelope for scripts, or text for people."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import is_dataclass
from typing import Any

from ..timeutil import iso
from ..types import AddResult, MemoryRecord, SearchHit, Status


def to_data(value: Any) -> Any:
    """Anything a handler returns, as plain JSON data."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    if is_dataclass(value):
        return {k: to_data(v) for k, v in vars(value).items()}
    return value


def envelope_ok(command: str, value: Any) -> str:
    return json.dumps({"ok": True, "command": command, "data": to_data(value)}, ensure_ascii=False)


def envelope_error(command: str | None, kind: str, message: str, exit_code: int) -> str:
    return json.dumps({"ok": False, "command": command,
                       "error": {"type": kind, "message": message, "exit_code": exit_code}},
                      ensure_ascii=False)


def _one_line(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _memory_line(m: MemoryRecord) -> str:
    tags = f" [{', '.join(m.tags)}]" if m.tags else ""
    scope = f" {m.project}" + (f"/{m.session}" if m.session else "") if m.project or m.session else ""
    return f"{m.id:>6}  {m.layer:<8} {iso(m.created_at)}{scope}{tags}  {_one_line(m.content, 80)}"


def _memory_block(m: MemoryRecord) -> str:
    lines = [f"id:         {m.id}", f"layer:      {m.layer}"]
    for label, value in (("title", m.title), ("kind", m.kind), ("source", m.source),
                         ("project", m.project), ("session", m.session)):
        if value:
            lines.append(f"{label + ':':<12}{value}")
    if m.tags:
        lines.append(f"tags:       {', '.join(m.tags)}")
    if m.metadata:
        lines.append(f"metadata:   {json.dumps(m.metadata, ensure_ascii=False)}")
    lines += [f"created:    {iso(m.created_at)}", f"updated:    {iso(m.updated_at)}",
              f"used:       {m.access_count} time(s), last {iso(m.accessed_at) or 'never'}",
              f"importance: {m.importance}", f"expires:    {iso(m.expires_at) or 'never'}"]
    if m.deleted_at:
        lines.append(f"deleted:    {iso(m.deleted_at)}")
    return "\n".join(lines) + "\n\n" + m.content


def _search(hits: list[SearchHit], explain: bool) -> str:
    if not hits:
        return "no memory matches"
    out = []
    window = hits[0].parts.get("window")
    if window:
        out.append(_window_line(window))
    for h in hits:
        out.append(f"{h.memory.id:>6}  {h.score:.4f}  {h.memory.layer:<8} {_one_line(h.memory.content, 80)}")
        if explain:
            p = h.parts
            out.append(f"        text rank {p.get('text_rank')} (bm25 {p.get('bm25')}, evidence "
                       f"{p.get('text_evidence')}), vector rank {p.get('vector_rank')} (cosine "
                       f"{p.get('similarity')}), context {p.get('context')}, fused {p.get('fused')}, "
                       f"recency {p.get('recency')}, use {p.get('use')}")
    return "\n".join(out)


def _window_line(window: dict) -> str:
    if window.get("vague"):
        return f"time: {window['phrase']!r} prefers newer memories"
    span = f"{window.get('since') or 'the beginning'} to {window.get('until') or 'now'}"
    if window.get("applied"):
        return f"time: {window['phrase']!r} = {span}"
    return f"time: nothing matched in {window['phrase']!r} ({span}); searched all times"


def _status(s: Status) -> str:
    model = s.model
    lines = [
        f"file:           {s.path}",
        f"size:           {s.size_bytes:,} bytes (WAL {s.wal_bytes:,})",
        f"schema version: {s.schema_version}",
        f"profile:        {s.profile}",
        f"sqlite:         {s.sqlite_version}, sqlite-vec {s.sqlite_vec_version}",
        "memories:       " + ", ".join(f"{layer} {n}" for layer, n in s.counts.items())
        + f" (expired {s.expired}, deleted {s.deleted})",
        "model:          " + (f"{model['model_name']} ({model['dim']} dims, {model['pooling']} pooling, "
                              f"sha256 {model['sha256'][:12]}…)" if model else "none bound yet"),
        f"device:         {s.device or 'not loaded by this command'}",
        f"embedding cache: {s.cache['entries']} entries, {s.cache['bytes']:,} bytes, hit rate "
        + (f"{s.cache['hit_rate']:.1%}" if s.cache.get("hit_rate") is not None else "n/a"),
    ]
    if s.pending["memories"] or s.pending["vector_deletes"]:
        memories, drops = s.pending["memories"], s.pending["vector_deletes"]
        lines.append(f"pending:        {memories} {'memory' if memories == 1 else 'memories'} written with "
                     f"plain SQL to hash and embed, {drops} {'vector' if drops == 1 else 'vectors'} to drop "
                     "(done by the next command)")
    if s.counters:
        lines.append("counters:       " + ", ".join(f"{k} {v}" for k, v in s.counters.items()))
    return "\n".join(lines)


def _bar(value: int, biggest: int, width: int = 30) -> str:
    return "█" * max(1 if value else 0, round(width * value / biggest)) if biggest else ""


def _stats(stats: dict[str, Any]) -> str:
    out = ["counters: " + (", ".join(f"{k} {v}" for k, v in stats["counters"].items()) or "none")]
    months: dict[str, dict[str, int]] = {}
    for row in stats["layers_by_month"]:
        months.setdefault(row["month"], {})[row["layer"]] = row["count"]
    if months:
        out.append("\nmemories created per month (i = interact, n = insights, a = assets):")
        biggest = max(sum(v.values()) for v in months.values())
        for month, layers in months.items():
            total = sum(layers.values())
            bar = "".join(ch * max(0, round(30 * layers.get(layer, 0) / biggest))
                          for layer, ch in (("interact", "i"), ("insights", "n"), ("assets", "a")))
            out.append(f"  {month}  {bar:<30} {total}")
    days: dict[str, dict[str, int]] = {}
    for row in stats["activity_by_day"]:
        days.setdefault(row["day"], {})[row["name"]] = row["value"]
    if days:
        out.append("\nactivity per day (adds + searches):")
        busiest = max(d.get("adds", 0) + d.get("searches", 0) for d in days.values())
        for day, counts in days.items():
            n = counts.get("adds", 0) + counts.get("searches", 0)
            out.append(f"  {day}  {_bar(n, busiest):<30} {counts.get('adds', 0)} adds, {counts.get('searches', 0)} searches")
    if "space" in stats:
        out.append(_space(stats["space"]))
    return "\n".join(out)


def _space(space: dict[str, Any]) -> str:
    n = space["memories"]
    out = [f"\nspace per part of the file ({space['used_bytes']:,} bytes used, {space['free_bytes']:,} free; "
           f"{n:,} memories):", f"  {'part':<31} {'bytes':>15} {'per memory':>11} {'unused in its pages':>20}"]
    for part in space["parts"]:
        per = "" if part["bytes_per_memory"] is None else f"{part['bytes_per_memory']:,.0f}"
        out.append(f"  {part['name']:<31} {part['bytes']:>15,} {per:>11} {part['unused_bytes']:>20,}")
    return "\n".join(out)


def _backups(backups: list[dict[str, Any]]) -> str:
    if not backups:
        return "no backups"
    lines = [f"{'created':<21} {'size':>10} {'memories':>9} {'schema':>6} {'verified':<8} file"]
    for b in backups:
        lines.append(f"{b['created'] or '?':<21} {b['size_bytes'] / 1e6:>8.1f}MB {b['memories'] or 0:>9} "
                     f"{b['schema_version'] or '?':>6} {'yes' if b['verified'] else 'NO':<8} {b['file']}"
                     + ("" if b["kind"] == "backup" else f"  ({b['kind']})"))
    return "\n".join(lines)


def _backup_report(b: dict[str, Any]) -> str:
    model = b["model"]["model_name"] if b.get("model") else "no model bound"
    line = (f"{b['path']}: {b['memories']} memories, schema {b['schema_version']}, {model}, "
            f"{b['size_bytes'] / 1e6:.1f} MB, sha256 {b['sha256'][:16]}…, integrity ok"
            + ("" if b["manifest"] else " (no manifest beside it)"))
    rotation = b.get("rotation")
    if rotation:
        line += f"\nrotation: kept {len(rotation['kept'])}, removed {len(rotation['removed'])}"
        line += "".join(f"\n  removed {name}" for name in rotation["removed"])
    return line


def text(command: str, value: Any, args: Any) -> str:
    if isinstance(value, str):
        return value.rstrip("\n")
    if command == "stats":
        return _stats(value)
    if command == "backup" and getattr(args, "action_or_dest", None) == "list":
        return _backups(value)
    if command == "backup" and isinstance(value, dict) and "sha256" in value:
        return _backup_report(value)
    if command == "export" and isinstance(value, dict) and value.get("path") == "-":
        return ""  # the export itself went to stdout
    if isinstance(value, AddResult):
        return f"{'added' if value.created else 'exists'} {value.id}"
    if isinstance(value, MemoryRecord):
        return _memory_block(value)
    if isinstance(value, Status):
        return _status(value)
    if command == "search":
        return _search(value, getattr(args, "explain", False))
    if isinstance(value, list) and all(isinstance(v, MemoryRecord) for v in value):
        return "\n".join(_memory_line(m) for m in value) if value else "no memories"
    if isinstance(value, list):
        return "\n".join(json.dumps(to_data(v), ensure_ascii=False) for v in value) or "none"
    if isinstance(value, dict):
        return "\n".join(f"{k}: {json.dumps(to_data(v), ensure_ascii=False) if isinstance(v, (dict, list)) else v}"
                         for k, v in value.items())
    return str(value)


# Control characters (C0 but newline and tab, DEL, C1) and the bidirectional overrides: printed
# raw, stored text could move the cursor, recolour or retitle the terminal, or reorder a line.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Text for a terminal: each control character shown as its escape (ESC as \\x1b), so that
    stored content can neither drive the terminal nor hide what it says. JSON output is exact."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def emit(line: str, stream=None) -> None:
    (stream or sys.stdout).write(line + "\n")
