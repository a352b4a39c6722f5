"""Export every memory to JSONL (with its vectors if asked) or to Markdown files, and import our
JSONL back with every stored field as it was (timestamps, use count, importance, expiry)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import apsw

from . import binding as binding_mod, files, records, schema, vectors
from .db import read_snapshot
from .errors import InvalidInput, StoreError
from .timeutil import iso
from .types import MemoryRecord

if TYPE_CHECKING:
    from .memory import Memory

Progress = Callable[[int, int], None]  # (memories done, memories in all)

FORMAT = "magray-export"
FORMAT_VERSION = 1
FORMATS = ("jsonl", "markdown")
PER = ("memory", "layer")
# Memories read per query while exporting (keyset paging by id inside one read snapshot).
PAGE = 500
# What an import passes on to Memory.import_records (content_hash is only checked).
IMPORTED_FIELDS = ("content", "layer", "tags", "project", "session", "title", "kind", "source", "metadata",
                   "importance", "created_at", "updated_at", "accessed_at", "access_count", "expires_at",
                   "uses", "id", "merged_into")


# -- reading the file ---------------------------------------------------------------------------------

def _live_records(conn: apsw.Connection) -> Iterator[list[MemoryRecord]]:
    """Every memory not deleted (expired ones included), oldest id first, a page at a time.
    The caller holds a read snapshot, so pages agree with each other."""
    last = 0
    while True:
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM memories WHERE deleted_at IS NULL AND id > ? ORDER BY id LIMIT ?", (last, PAGE))]
        if not ids:
            return
        found = records.get_many(conn, ids)
        yield [found[i] for i in ids]
        last = ids[-1]


def _chunk_vectors(conn: apsw.Connection, generation: int, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """memory id -> its chunks in order, each {text_hash, vector (list of floats)}."""
    out: dict[int, list[dict[str, Any]]] = {}
    rows = conn.execute(
        f"SELECT c.memory_id, c.text_hash, v.embedding FROM chunks AS c JOIN {vectors.table(generation)} AS v "
        "ON v.chunk_id = c.id WHERE c.generation = ? AND c.memory_id IN (SELECT value FROM json_each(?)) "
        "ORDER BY c.memory_id, c.seq", (generation, json.dumps(ids)))
    rows = rows.fetchall()
    # Exported as float32 values whatever the stored form (see vectors.encode).
    matrix = vectors.decode([r[2] for r in rows], vectors.dimension(conn, generation)) if rows else []
    for (memory_id, text_hash, _), vector in zip(rows, matrix):
        out.setdefault(memory_id, []).append({"text_hash": text_hash, "vector": vector.astype("<f4").tolist()})
    return out


def _uses(conn: apsw.Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """memory id -> its uses per session."""
    out: dict[int, list[dict[str, Any]]] = {}
    for memory_id, session, uses, last_at in conn.execute(
            "SELECT memory_id, session, uses, last_at FROM memory_uses "
            "WHERE memory_id IN (SELECT value FROM json_each(?)) ORDER BY memory_id, session", (json.dumps(ids),)):
        out.setdefault(memory_id, []).append({"session": session, "uses": uses, "last_at": last_at})
    return out


def _record_data(m: MemoryRecord, uses: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    data = asdict(m)
    del data["deleted_at"]  # only live memories are exported
    data["uses"] = uses.get(m.id, [])
    return data


def _private_open(path: Path) -> IO[str]:
    """A new text file only its owner can read: exports hold every memory."""
    return files.private_text(path)


# -- JSONL --------------------------------------------------------------------------------------------

def export_jsonl(mem: Memory, out: IO[str], *, with_vectors: bool = False,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Write a header line, then one JSON object per memory: every stored field (times as unix
    seconds, so they round-trip exactly) and, with `with_vectors`, its chunks' vectors."""
    conn = mem.connection
    with read_snapshot(conn):
        total = conn.execute("SELECT count(*) FROM memories WHERE deleted_at IS NULL").fetchone()[0]
        bound = binding_mod.current(conn)
        header = {"format": FORMAT, "version": FORMAT_VERSION, "exported_at": mem.now(),
                  "schema_version": schema.current_version(conn), "memories": total,
                  "model": bound.to_dict() if bound else None, "vectors": bool(with_vectors and bound)}
        out.write(json.dumps(header, ensure_ascii=False) + "\n")
        done = 0
        for page in _live_records(conn):
            ids = [m.id for m in page]
            chunks = _chunk_vectors(conn, bound.generation, ids) if header["vectors"] else {}
            uses = _uses(conn, ids)
            for m in page:
                data = _record_data(m, uses)
                if header["vectors"]:
                    data["chunks"] = chunks.get(m.id, [])
                out.write(json.dumps(data, ensure_ascii=False) + "\n")
            done += len(page)
            if progress:
                progress(done, total)
    return {"format": "jsonl", "memories": done, "vectors": header["vectors"]}


def import_jsonl(mem: Memory, stream: IO[str], *, name: str = "input",
                 progress: Progress | None = None) -> dict[str, Any]:
    """Add the memories of a magray JSONL export, each with its stored fields as exported. Every
    line is read and checked before anything is written. Content already present in its layer
    and project is skipped, so a second import of the same file adds nothing. Exported vectors
    made by the model this file is bound to are used as they are (nothing is re-embedded);
    vectors of another model are ignored and the text is embedded here."""
    header, items, chunk_vectors = _read_export(stream, name)
    if not items:
        return {"added": 0, "existing": 0, "vectors_reused": 0}
    model = header.get("model") or {}
    reused = 0
    if chunk_vectors and model.get("sha256"):
        bound = mem.load_model()
        if bound.sha256 == model["sha256"] and bound.dim == model.get("dim"):
            reused = len(chunk_vectors)
    results = mem.import_records(items, vectors_sha256=model.get("sha256") if reused else None,
                                 chunk_vectors=chunk_vectors, progress=progress)
    return {"added": sum(r.created for r in results), "existing": sum(not r.created for r in results),
            "vectors_reused": reused}


def json_objects(stream: IO[str], name: str, *, note: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL stream; a bad line (not UTF-8,
    not JSON, nested too deep, not an object) is a one-line error."""
    lines = iter(stream)
    number = 0
    while True:
        number += 1
        try:
            line = next(lines)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{name} is not valid UTF-8 (byte {exc.start} of a block near line "
                               f"{number}: {exc.reason}){note}") from None
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"line {number} of {name} is not valid UTF-8 ({exc.reason} at byte "
                                   f"{exc.start}){note}") from None
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"line {number} of {name} is not valid JSON: {exc}{note}") from None
        except RecursionError:
            raise InvalidInput(f"line {number} of {name} is nested too deep to read{note}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"line {number} of {name} is not a JSON object{note}")
        yield number, data


def _read_export(stream: IO[str], name: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]]:
    import numpy as np

    header: dict[str, Any] | None = None
    items: list[dict[str, Any]] = []
    chunk_vectors: dict[str, bytes] = {}
    for number, data in json_objects(stream, name, note=" (nothing was imported)"):
        if header is None:
            if data.get("format") != FORMAT:
                raise InvalidInput(f"{name} is not a magray JSONL export (no format header on its first "
                                   "line); to add plain JSON lines use `magray add --jsonl`")
            if not isinstance(data.get("version"), int) or data["version"] > FORMAT_VERSION:
                raise InvalidInput(f"{name} is export format version {data.get('version')!r}; this magray "
                                   f"reads up to {FORMAT_VERSION}: upgrade magray to import it")
            header = data
            continue
        content = data.get("content")
        if data.get("content_hash") is not None and isinstance(content, str) \
                and records.content_hash(content) != data["content_hash"]:
            raise InvalidInput(f"line {number} of {name}: the content does not match its content_hash "
                               "(the file was edited or damaged; nothing was imported)")
        for chunk in data.get("chunks") or ():
            if isinstance(chunk, dict) and isinstance(chunk.get("vector"), list):
                try:
                    vector = np.asarray(chunk["vector"], dtype="<f4")
                except (TypeError, ValueError):
                    raise InvalidInput(f"line {number} of {name}: a chunk vector is not a list of numbers") from None
                length = float(np.linalg.norm(vector)) if vector.ndim == 1 and vector.size else 0.0
                if not math.isfinite(length) or length == 0.0:
                    raise InvalidInput(f"line {number} of {name}: a chunk vector is empty, zero or not finite "
                                       "(nothing was imported)")
                # Stored as float16 at unit length, like the model's own vectors.
                chunk_vectors[str(chunk.get("text_hash"))] = (vector / length).astype("<f4").tobytes()
        items.append({k: data[k] for k in IMPORTED_FIELDS if k in data})
    if header is None:
        raise InvalidInput(f"{name} is empty: not a magray JSONL export")
    return header, items, chunk_vectors


# -- Markdown -----------------------------------------------------------------------------------------

_SLUG = re.compile(r"[^a-z0-9]+")


def _front_matter(m: MemoryRecord) -> str:
    """YAML front matter; every value is JSON, which YAML reads as is."""
    fields = {"id": m.id, "layer": m.layer, "title": m.title, "kind": m.kind, "source": m.source,
              "project": m.project, "session": m.session, "tags": m.tags, "metadata": m.metadata,
              "created": iso(m.created_at), "updated": iso(m.updated_at), "accessed": iso(m.accessed_at),
              "access_count": m.access_count, "importance": m.importance, "expires": iso(m.expires_at),
              "merged_into": m.merged_into}
    lines = [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in fields.items()]
    return "---\n" + "\n".join(lines) + "\n---\n"


def _slug(m: MemoryRecord) -> str:
    words = _SLUG.sub("-", (m.title or m.content[:60]).lower()).strip("-")
    return f"{m.id:06d}" + (f"-{words[:40].rstrip('-')}" if words else "")


def export_markdown(mem: Memory, folder: Path, *, per: str = "memory",
                    progress: Progress | None = None) -> dict[str, Any]:
    """One Markdown file per memory (`<layer>/<id>-<slug>.md`) or one per layer (`<layer>.md`,
    memories one after another), each memory with its front matter then its content."""
    if per not in PER:
        raise InvalidInput(f"unknown --per {per!r}: use memory or layer")
    folder = Path(folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InvalidInput(f"{folder} exists and is not an empty folder; name a new folder")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}") from None
    conn = mem.connection
    files: dict[str, IO[str]] = {}
    done = 0
    try:
        with read_snapshot(conn):
            total = conn.execute("SELECT count(*) FROM memories WHERE deleted_at IS NULL").fetchone()[0]
            for page in _live_records(conn):
                for m in page:
                    block = _front_matter(m) + "\n" + m.content.rstrip("\n") + "\n"
                    if per == "layer":
                        if m.layer not in files:
                            files[m.layer] = _private_open(folder / f"{m.layer}.md")
                        else:
                            block = "\n" + block
                        files[m.layer].write(block)
                    else:
                        (folder / m.layer).mkdir(mode=0o700, exist_ok=True)
                        with _private_open(folder / m.layer / f"{_slug(m)}.md") as out:
                            out.write(block)
                done += len(page)
                if progress:
                    progress(done, total)
    finally:
        for f in files.values():
            f.close()
    return {"format": "markdown", "memories": done, "path": str(folder), "per": per}


def export_to_path(mem: Memory, fmt: str, path: str | None, *, with_vectors: bool = False,
                   per: str = "memory", stdout: IO[str] | None = None, force: bool = False,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Export in `fmt` to `path`: a new file (JSONL; None or '-' means `stdout`; an existing file
    only with `force`, never the memory file or its -wal/-shm) or a new folder (Markdown). The
    file is written to a private temporary file beside its final name, renamed when complete."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: use jsonl or markdown")
    if fmt == "markdown":
        if path in (None, "-"):
            raise InvalidInput("a Markdown export is a folder of files: give it with -o FOLDER")
        files.refuse_memory_file(Path(path), mem.path)
        return export_markdown(mem, Path(path), per=per, progress=progress)
    if path in (None, "-"):
        if stdout is None:
            raise InvalidInput("name the output file with -o PATH")
        return export_jsonl(mem, stdout, with_vectors=with_vectors, progress=progress) | {"path": "-"}
    target = files.check_new(Path(path), mem.path, force=force)
    if not target.parent.is_dir():
        raise InvalidInput(f"the folder {target.parent} does not exist")
    tmp = files.new_partial(target)
    try:
        with _private_open(tmp) as out:
            result = export_jsonl(mem, out, with_vectors=with_vectors, progress=progress)
            out.flush()
            os.fsync(out.fileno())
        try:
            files.publish(tmp, target, force=force)
        except FileExistsError:
            raise InvalidInput(f"{target} was created by another process meanwhile; nothing was "
                               "replaced (add --force to replace it)") from None
        files.fsync(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return result | {"path": str(target)}
