"""The Memory facade: the public API that the CLI and servers call. It never prints or exits."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from . import backup as backup_mod
from . import binding as binding_mod
from . import health, lifecycle, records, schema, search as search_mod, transfer, vectors
from .config import DURABILITY, LAYERS, PROFILES, default_db_path, default_profile, load_rules
from .db import open_connection, read_snapshot, translate_errors, write_transaction
from .embed import cache
from .memory_lifecycle import LifecycleMixin
from .errors import Busy, InvalidInput, ModelError, ModelMismatch
from .types import AddResult, Filters, MemoryRecord, SearchHit, Status

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Progress = Callable[[int, int], None]  # (done, total)

# Items embedded and written per transaction in bulk adds: big enough to batch the model, small
# enough that another process never waits long for the write lock.
WRITE_BATCH = {"safe": 64, "balanced": 64, "fast": 512}
MAX_CONTENT_CHARS = 1_000_000
CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")


@dataclass
class _Prepared:
    fields: dict[str, Any]
    tags: list[str]
    chunks: list[str] = field(default_factory=list)


class Memory(LifecycleMixin):
    """One memory file. Open with `Memory.open(path)`; use as a context manager to close it."""

    def __init__(self, conn: apsw.Connection, path: Path, *, profile: str, model: str | None,
                 device: str, clock: Clock) -> None:
        self._conn = conn
        self.path = path
        self.profile = profile
        self._model_request = model
        self._device = device
        self._clock = clock
        self._embedder = None
        self._binding: binding_mod.Binding | None = None
        self.rules = load_rules()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, profile: str | None = None,
             model: str | None = None, device: str = "auto", clock: Clock | None = None,
             create: bool = True) -> Memory:
        """Open (creating if needed) the memory file at `path` (default: $MAGRAY_DB or the XDG data
        dir) and bring its schema up to date. `model` (a registered name or a GGUF path; default
        $MAGRAY_MODEL) is used to bind a new file and must match the binding of an existing one."""
        path = Path(path) if path is not None else default_db_path()
        profile = profile or default_profile()
        if profile not in PROFILES:
            raise InvalidInput(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
        conn = open_connection(path, profile=profile, create=create,
                               check=lambda c: schema.check_version(c, path))
        try:
            with translate_errors(path):
                schema.migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path, profile=profile, model=model or os.environ.get("MAGRAY_MODEL"),
                   device=device, clock=clock or time.time)

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connection(self) -> apsw.Connection:
        """The underlying apsw connection, for tools built on the library (doctor, backup)."""
        return self._conn

    def now(self) -> float:
        return self._clock()

    def _write(self):
        return write_transaction(self._conn)

    # -- the model -----------------------------------------------------------------------------

    def _load_embedder(self):
        """The loaded embedder and the binding it matches, binding the file on first use."""
        if self._embedder is not None:
            return self._embedder, self._binding
        from .embed import models
        from .embed.embedder import Embedder

        bound = binding_mod.current(self._conn)
        entry = None
        if self._model_request:
            entry = self._resolve_request(self._model_request)
            if bound and entry.sha256 != bound.sha256:
                raise ModelMismatch(
                    f"this file's vectors were made by {bound.model_name} ({bound.sha256[:12]}), not "
                    f"{entry.name} ({entry.sha256[:12]}); run `magray reindex --model {entry.name}` to switch")
        elif bound:
            entry = binding_mod.model_by_sha(self._conn, bound.sha256)
            if entry is None:
                raise ModelError(f"the model {bound.model_name} that made this file's vectors is not "
                                 "registered here (run `magray model add PATH` with that model file)")
        else:
            raise ModelError("no embedding model: set MAGRAY_MODEL to a GGUF file, or run "
                             "`magray model add PATH_OR_URL` then `magray model use NAME`")
        models.verify(Path(entry.path), entry.sha256)
        embedder = Embedder(Path(entry.path), device=self._device)
        if bound is None:
            with self._write():
                bound = binding_mod.current(self._conn) or binding_mod.bind(
                    self._conn, entry.name, entry.sha256, embedder.dim, embedder.pooling, 1, self.now())
            if bound.sha256 != entry.sha256:
                embedder.close()
                raise ModelMismatch(f"another process bound this file to {bound.model_name} meanwhile")
        elif bound.dim != embedder.dim:
            embedder.close()
            raise ModelMismatch(f"model {entry.name} makes {embedder.dim}-dim vectors, the file holds {bound.dim}")
        self._embedder, self._binding = embedder, bound
        return embedder, bound

    @property
    def model_requested(self) -> str | None:
        """The model asked for by the caller or $MAGRAY_MODEL, if any."""
        return self._model_request

    def load_model(self) -> binding_mod.Binding:
        """Load the embedding model now (binding a new file to it) rather than on first use."""
        return self._load_embedder()[1]

    def _resolve_request(self, request: str) -> binding_mod.ModelEntry:
        """A registered model name, or a GGUF path (registered on the fly under its file name)."""
        entry = binding_mod.find_model(self._conn, request)
        if entry is not None:
            return entry
        if request.endswith(".gguf") or Path(request).exists():
            return self.add_model(request)
        raise ModelError(f"no model named {request!r} and no such GGUF file")

    def add_model(self, source: str, *, name: str | None = None, sha256: str | None = None,
                  progress: Callable[[int, int | None], None] | None = None) -> binding_mod.ModelEntry:
        """Register a model from a local GGUF path, a URL (downloaded into the cache dir) or a
        known name like `all-minilm-l6-v2`. The file's sha256 is checked and recorded."""
        from .embed import models

        if source in models.KNOWN_MODELS and not Path(source).exists():
            known = models.KNOWN_MODELS[source]
            name, sha256, source = name or source, sha256 or known["sha256"], known["url"]
        if models.is_url(source):
            path = models.download(source, sha256, progress=progress)
            url: str | None = source
        else:
            path, url = Path(source).expanduser().resolve(), None
        actual = models.verify(path, sha256)
        entry = binding_mod.ModelEntry(name or models.name_from_source(source), str(path), actual, url,
                                       self.now())
        with self._write():
            binding_mod.register(self._conn, entry)
        return entry

    def models(self) -> list[dict[str, Any]]:
        bound = binding_mod.current(self._conn)
        return [dict(vars(m), bound=bool(bound and bound.sha256 == m.sha256))
                for m in binding_mod.models(self._conn)]

    def use_model(self, name: str) -> binding_mod.Binding:
        """Bind the file to a registered model. Refused while vectors of another model exist."""
        from .embed import models
        from .embed.embedder import Embedder

        entry = binding_mod.require_model(self._conn, name)
        bound = binding_mod.current(self._conn)
        if bound and bound.sha256 == entry.sha256:
            return bound
        if bound and self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0]:
            raise ModelMismatch(f"this file's vectors were made by {bound.model_name}; "
                                f"run `magray reindex --model {name}` to re-embed them with {name}")
        models.verify(Path(entry.path), entry.sha256)
        probe = Embedder(Path(entry.path), device="cpu")
        dim, pooling = probe.dim, probe.pooling
        probe.close()
        with self._write():
            generation = (bound.generation + 1) if bound else 1
            if bound:
                vectors.drop(self._conn, bound.generation)
            new = binding_mod.bind(self._conn, entry.name, entry.sha256, dim, pooling, generation, self.now())
        self._embedder, self._binding = None, None
        return new

    def reindex(self, model: str, *, progress: Progress | None = None) -> dict[str, Any]:
        """Re-embed every memory with `model` into a new vector table, then switch the binding to it
        in one transaction. Until the switch the old vectors stay in use; an interrupted reindex
        is resumed by running it again (memories already re-embedded are skipped)."""
        from .embed import models
        from .embed.embedder import Embedder

        entry = self._resolve_request(model)
        models.verify(Path(entry.path), entry.sha256)
        embedder = Embedder(Path(entry.path), device=self._device)
        try:
            bound = binding_mod.current(self._conn)
            pending = binding_mod.get_setting(self._conn, "reindex")
            if pending and pending["sha256"] != entry.sha256:
                with self._write():
                    vectors.drop(self._conn, pending["generation"])
                    self._conn.execute("DELETE FROM chunks WHERE generation = ?", (pending["generation"],))
                pending = None
            if pending is None:
                generation = (bound.generation if bound else 0) + 1
                pending = {"sha256": entry.sha256, "generation": generation}
                with self._write():
                    vectors.create(self._conn, generation, embedder.dim)
                    binding_mod.set_setting(self._conn, "reindex", pending)
            generation = pending["generation"]
            done = 0
            while True:
                todo = [r[0] for r in self._conn.execute(
                    "SELECT id FROM memories WHERE deleted_at IS NULL AND id NOT IN "
                    "(SELECT memory_id FROM chunks WHERE generation = ?) ORDER BY id LIMIT 256",
                    (generation,))]
                if not todo:
                    break
                found = records.get_many(self._conn, todo)
                texts, spans = [], []
                for memory_id in todo:
                    pieces = embedder.chunks(found[memory_id].content)
                    spans.append((memory_id, len(texts), len(pieces)))
                    texts.extend(pieces)
                embedded = cache.embed_cached(self._conn, embedder, entry.sha256, texts)
                with self._write():
                    for memory_id, start, n in spans:
                        m = found[memory_id]
                        vectors.insert_chunks(self._conn, generation, memory_id, m.layer, m.project,
                                              m.session, m.created_at, embedded.hashes[start:start + n],
                                              embedded.vectors[start:start + n])
                    self._cache_store(entry.sha256, embedded, self.now())
                    records.bump_counters(self._conn, {"embeddings_computed": len(embedded.new_entries)}, self.now())
                done += len(todo)
                if progress:
                    progress(done, done + self._conn.execute(
                        "SELECT count(*) FROM memories WHERE deleted_at IS NULL AND id NOT IN "
                        "(SELECT memory_id FROM chunks WHERE generation = ?)", (generation,)).fetchone()[0])
            with self._write():
                missing = self._conn.execute(
                    "SELECT count(*) FROM memories WHERE deleted_at IS NULL AND id NOT IN "
                    "(SELECT memory_id FROM chunks WHERE generation = ?)", (generation,)).fetchone()[0]
                if missing:  # written by another process during the last batch: run again
                    raise Busy("memories were added during the reindex; run it again to finish")
                if bound:
                    vectors.drop(self._conn, bound.generation)
                    self._conn.execute("DELETE FROM chunks WHERE generation = ?", (bound.generation,))
                new = binding_mod.bind(self._conn, entry.name, entry.sha256, embedder.dim,
                                       embedder.pooling, generation, self.now())
                binding_mod.set_setting(self._conn, "reindex", None)
        except BaseException:
            embedder.close()
            raise
        if self._embedder is not None:
            self._embedder.close()
        self._embedder, self._binding = embedder, new
        return {"model": new.to_dict(), "memories": done}

    def device(self) -> str | None:
        return self._embedder.device if self._embedder is not None else None

    # -- writing -------------------------------------------------------------------------------

    def add(self, content: str, *, layer: str = "interact", tags: Iterable[str] = (),
            project: str | None = None, session: str | None = None, title: str | None = None,
            kind: str | None = None, source: str | None = None,
            metadata: Mapping[str, Any] | None = None, ttl: float | None = None,
            importance: float | None = None, created_at: float | None = None,
            dedup: bool | None = None) -> AddResult:
        """Store one memory (embedded on write) and return its id. The same content in the same
        layer and project is stored once: adding it again returns the existing id. In the dedup
        layers (insights, assets by default) a near-duplicate is kept as an alias that reinforces
        the memory it repeats; `dedup=False` stores it as a memory of its own."""
        item = dict(content=content, layer=layer, tags=tags, project=project, session=session,
                    title=title, kind=kind, source=source, metadata=metadata, ttl=ttl,
                    importance=importance, created_at=created_at)
        return self.add_many([item], dedup=dedup)[0]

    def add_many(self, items: Iterable[Mapping[str, Any]], *, progress: Progress | None = None,
                 dedup: bool | None = None) -> list[AddResult]:
        """Store many memories. Everything is validated before anything is written; then each
        batch is embedded (outside any transaction) and written in one short transaction."""
        now = self.now()
        prepared = [self._prepare(item, now) for item in items]
        results: list[AddResult] = []
        batch_size = WRITE_BATCH[self.profile]
        for start in range(0, len(prepared), batch_size):
            batch = self._add_batch(prepared[start:start + batch_size], dedup)
            results.extend(batch)
            self._maintain(sum(r.created for r in batch))
            if progress:
                progress(len(results), len(prepared))
        return results

    def _prepare(self, item: Mapping[str, Any], now: float) -> _Prepared:
        unknown = set(item) - {"content", "layer", "tags", "project", "session", "title", "kind",
                               "source", "metadata", "ttl", "importance", "created_at"}
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
        content = records.check_content(item.get("content"))
        if len(content) > MAX_CONTENT_CHARS:
            raise InvalidInput(f"content is {len(content):,} characters; the limit is {MAX_CONTENT_CHARS:,}")
        layer = records.check_layer(item.get("layer") or "interact")
        created = item.get("created_at")
        created = now if created is None else _number(created, "created_at")
        ttl = item.get("ttl")
        importance = item.get("importance")
        fields = {
            "layer": layer, "content": content, "content_hash": records.content_hash(content),
            "title": _optional_text(item.get("title"), "title"),
            "kind": _optional_text(item.get("kind"), "kind"),
            "source": _optional_text(item.get("source"), "source"),
            "project": _optional_text(item.get("project"), "project") or "",
            "session": _optional_text(item.get("session"), "session") or "",
            "metadata": records.check_metadata(item.get("metadata")),
            "created_at": created,
            "importance": 0.5 if importance is None else records.check_importance(importance),
            # A TTL counts from when magray stores the memory, also for one back-dated with created_at
            # (an import of old notes must not expire on arrival).
            "expires_at": records.expiry(layer, now, None if ttl is None else _number(ttl, "ttl")),
        }
        tags = item.get("tags") or ()
        if isinstance(tags, str):
            tags = [tags]
        return _Prepared(fields, records.check_tags(tags))

    def _add_batch(self, batch: list[_Prepared], dedup: bool | None) -> list[AddResult]:
        embedder, bound = self._load_embedder()
        texts: list[str] = []
        for p in batch:
            # Duplicates are embedded too: their chunks are in the cache, so it costs a lookup,
            # and the check that matters is the one made under the write lock below.
            p.chunks = embedder.chunks(p.fields["content"])
            texts.extend(p.chunks)
        embedded = cache.embed_cached(self._conn, embedder, bound.sha256, texts)
        results = []
        now = self.now()
        dedup_layers = set(self.rules["dedup"]["layers"])
        min_similarity = float(self.rules["dedup"]["min_similarity"])
        with self._write():
            self._check_binding(bound)
            offset = 0
            for p in batch:
                f, n = p.fields, len(p.chunks)
                existing = records.find_duplicate(self._conn, f["layer"], f["project"], f["content_hash"])
                if existing is not None:
                    results.append(AddResult(existing, False, 0))
                else:
                    survivor = None
                    if dedup is not False and f["layer"] in dedup_layers:
                        survivor = lifecycle.nearest_duplicate(self._conn, bound, embedded.vectors[offset], f["content"],
                                                               f["layer"], f["project"], min_similarity)
                    memory_id = records.insert(self._conn, f, p.tags)
                    vectors.insert_chunks(self._conn, bound.generation, memory_id, f["layer"], f["project"],
                                          f["session"], f["created_at"], embedded.hashes[offset:offset + n],
                                          embedded.vectors[offset:offset + n])
                    if survivor is not None:
                        lifecycle.merge_into(self._conn, memory_id, survivor[0], survivor[1], p.tags, now)
                    results.append(AddResult(memory_id, True, n, survivor[0] if survivor else None))
                offset += n
            self._cache_store(bound.sha256, embedded, now)
            records.bump_counters(self._conn, {
                "adds": sum(r.created for r in results),
                "embeddings_computed": len(embedded.new_entries),
                "cache_hits": embedded.hits,
                "cache_misses": len(texts) - embedded.hits,
            }, now)
        return results

    def _cache_store(self, model_sha256: str, embedded: cache.Embedded, now: float) -> None:
        evicted = cache.store(self._conn, model_sha256, embedded, now,
                              int(self.rules["cache"]["max_entries"]))
        if evicted:
            records.bump_counters(self._conn, {"cache_evictions": evicted}, now)
            log.info("embedding cache: evicted %d least recently used entries", evicted)

    def _check_binding(self, bound: binding_mod.Binding) -> None:
        """Inside a write transaction: the vectors about to be written still match the file."""
        live = binding_mod.current(self._conn)
        if live is None or live.sha256 != bound.sha256 or live.generation != bound.generation:
            self._embedder, self._binding = None, None
            raise ModelMismatch("the file was re-indexed with another model while this process ran; "
                                "run the command again")

    def update(self, memory_id: int, *, content: str | None = None, title: str | None = None,
               kind: str | None = None, source: str | None = None,
               metadata: Mapping[str, Any] | None = None, importance: float | None = None,
               ttl: float | None = None) -> MemoryRecord:
        """Change fields of a memory; new content is re-embedded."""
        now = self.now()
        record = records.get(self._conn, memory_id, now, include_expired=True)
        changes: dict[str, Any] = {}
        chunks: list[str] = []
        if content is not None:
            content = records.check_content(content)
            changes["content"], changes["content_hash"] = content, records.content_hash(content)
        for name, value in (("title", title), ("kind", kind), ("source", source)):
            if value is not None:
                changes[name] = _optional_text(value, name) or None
        if metadata is not None:
            changes["metadata"] = records.check_metadata(metadata)
        if importance is not None:
            changes["importance"] = records.check_importance(importance)
        if ttl is not None:
            changes["expires_at"] = records.expiry(record.layer, now, _number(ttl, "ttl"))
        if not changes:
            raise InvalidInput("nothing to update: give new content or a field to change")
        embedded = None
        if "content" in changes and changes["content_hash"] != record.content_hash:
            embedder, bound = self._load_embedder()
            chunks = embedder.chunks(content)
            embedded = cache.embed_cached(self._conn, embedder, bound.sha256, chunks)
        with self._write():
            if "content_hash" in changes:
                dup = records.find_duplicate(self._conn, record.layer, record.project, changes["content_hash"])
                if dup is not None and dup != memory_id:
                    raise InvalidInput(f"memory {dup} already holds that content in this layer and project")
            records.update_fields(self._conn, memory_id, changes, now)
            if embedded is not None:
                self._check_binding(bound)
                vectors.delete_for_memory(self._conn, bound.generation, memory_id)
                vectors.insert_chunks(self._conn, bound.generation, memory_id, record.layer, record.project,
                                      record.session, record.created_at, embedded.hashes, embedded.vectors)
                self._cache_store(bound.sha256, embedded, now)
        return records.get(self._conn, memory_id, now, include_expired=True)

    def tag(self, memory_id: int, add: Iterable[str] = (), remove: Iterable[str] = ()) -> MemoryRecord:
        add, remove = records.check_tags(add), records.check_tags(remove)
        now = self.now()
        with self._write():
            records.get(self._conn, memory_id, now, include_expired=True)
            records.set_tags(self._conn, memory_id, add, remove)
        return records.get(self._conn, memory_id, now, include_expired=True)

    def promote(self, memory_id: int, to: str, *, reason: str = "requested") -> MemoryRecord:
        """Move a memory to another layer; its expiry becomes that layer's default from now."""
        records.check_layer(to)
        now = self.now()
        with self._write():
            record = records.get(self._conn, memory_id, now, include_expired=True)
            if record.layer == to:
                return record
            dup = records.find_duplicate(self._conn, to, record.project, record.content_hash)
            if dup is not None:
                raise InvalidInput(f"memory {dup} already holds that content in layer {to}")
            records.update_fields(self._conn, memory_id,
                                  {"layer": to, "expires_at": records.expiry(to, now, None)}, now)
            bound = binding_mod.current(self._conn)
            if bound:
                vectors.move(self._conn, bound.generation, memory_id, to, record.project, record.session)
            records.log_event(self._conn, now, memory_id, "promote",
                              {"from": record.layer, "to": to, "reason": reason})
            records.bump_counters(self._conn, {"promotions": 1}, now)
        return records.get(self._conn, memory_id, now, include_expired=True)

    def delete(self, memory_id: int, *, hard: bool = False) -> None:
        """Soft-delete (hidden at once, purged later by `clean`), or with `hard` remove it now with
        its tags, FTS entry and vectors."""
        now = self.now()
        with self._write():
            records.get(self._conn, memory_id, now, include_deleted=hard, include_expired=True)
            bound = binding_mod.current(self._conn)
            if bound:
                vectors.delete_for_memory(self._conn, bound.generation, memory_id)
            if hard:
                records.purge(self._conn, memory_id)
            else:
                records.soft_delete(self._conn, memory_id, now)

    # -- reading -------------------------------------------------------------------------------

    def get(self, memory_id: int, *, touch: bool = True, include_expired: bool = False) -> MemoryRecord:
        """One memory by id. Reading it counts as a use unless `touch` is false."""
        now = self.now()
        record = records.get(self._conn, memory_id, now, include_expired=include_expired)
        if touch:
            with self._write():
                records.record_use(self._conn, [memory_id], now)
            record = records.get(self._conn, memory_id, now, include_expired=True)
        return record

    def list(self, filters: Filters = Filters(), *, limit: int = 50, offset: int = 0) -> list[MemoryRecord]:
        """Newest first."""
        return records.list_memories(self._conn, filters, self.now(), limit, offset)

    def search(self, query: str, *, k: int = 10, mode: str = "hybrid", filters: Filters = Filters(),
               touch: bool = True, ranking: search_mod.Ranking = search_mod.DEFAULT_RANKING) -> list[SearchHit]:
        """Hybrid (BM25 + vector KNN, fused), vector or text search; best first, with score parts.
        The memories returned count as used unless `touch` is false."""
        if mode not in search_mod.MODES:
            raise InvalidInput(f"unknown mode {mode!r}: use hybrid, vector or text")
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("the query is empty")
        records.check_limit(k)
        now = self.now()
        pool = max(k * 5, 50)
        text_hits: list[tuple[int, float]] = []
        vector_hits: list[tuple[int, float]] = []
        embedded = None
        bound = binding_mod.current(self._conn)
        if mode in ("vector", "hybrid") and (bound is not None or mode == "vector"):
            embedder, bound = self._load_embedder()
            embedded = cache.embed_cached(self._conn, embedder, bound.sha256, [query])
        with read_snapshot(self._conn):
            if mode in ("text", "hybrid"):
                text_hits = lifecycle.fold_aliases(self._conn, search_mod.text_candidates(
                    self._conn, query, filters, now, pool, ranking))
            if embedded is not None:
                vector_hits = lifecycle.fold_aliases(self._conn, search_mod.vector_candidates(
                    self._conn, bound.generation, embedded.vectors[0], filters, now, pool))
            parts = search_mod.score(self._conn, text_hits, vector_hits, filters, now, pool, ranking)
            found = records.get_many(self._conn, list(parts))
        hits = search_mod.rank(found, parts, now, k, ranking)
        with self._write():
            if touch and hits:
                records.record_use(self._conn, [h.memory.id for h in hits], now)
            if embedded is not None:
                self._cache_store(bound.sha256, embedded, now)
            records.bump_counters(self._conn, {
                "searches": 1,
                "embeddings_computed": len(embedded.new_entries) if embedded else 0,
                "cache_hits": embedded.hits if embedded else 0,
                "cache_misses": (1 - embedded.hits) if embedded else 0,
            }, now)
        return hits

    def status(self) -> Status:
        now = self.now()
        counts = {layer: 0 for layer in LAYERS}
        expired = deleted = 0
        with read_snapshot(self._conn):
            for layer, live, exp, dele in self._conn.execute(schema.query("status_counts"), {"now": now}):
                counts[layer] = live or 0
                expired += exp or 0
                deleted += dele or 0
            bound = binding_mod.current(self._conn)
            counters = records.counters(self._conn)
            cache_stats = cache.stats(self._conn)
            version = schema.current_version(self._conn)
            vec_version = self._conn.execute("SELECT vec_version()").fetchone()[0]
        lookups = counters.get("cache_hits", 0) + counters.get("cache_misses", 0)
        cache_stats["hit_rate"] = round(counters.get("cache_hits", 0) / lookups, 4) if lookups else None
        wal = Path(str(self.path) + "-wal")
        return Status(
            path=str(self.path), size_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0, schema_version=version,
            sqlite_version=apsw.sqlite_lib_version(), sqlite_vec_version=vec_version,
            profile=self.profile, counts=counts, deleted=deleted, expired=expired,
            model=bound.to_dict() if bound else None, device=self.device(),
            cache=cache_stats, counters=counters,
        )

    def durability(self) -> str:
        return DURABILITY[self.profile].promise

    def checkpoint(self, mode: str = "PASSIVE") -> dict[str, int]:
        """Copy the WAL back into the file. PASSIVE never waits for other processes; TRUNCATE waits
        (up to the busy timeout) for their readers and writers, then empties the WAL file.
        Long-running processes call this so that the WAL does not grow while they hold the file."""
        mode = mode.upper() if isinstance(mode, str) else mode
        if mode not in CHECKPOINT_MODES:
            raise InvalidInput(f"unknown checkpoint mode {mode!r}: use {', '.join(CHECKPOINT_MODES)}")
        with translate_errors(self.path):
            busy, log_frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return {"busy": busy, "log_frames": log_frames, "checkpointed_frames": done}

    def doctor(self, *, repair: bool = False, progress: Progress | None = None) -> health.Report:
        """Check the file (SQLite integrity, FTS index and vectors against the memories); with
        `repair`, rebuild what derives from the memories, never their content. See health.py."""
        with translate_errors(self.path):
            return health.run(self._conn, self.path, repair=repair, load_embedder=self._load_embedder,
                              now=self.now, progress=progress)

    # -- backups and transfer (magray.backup, magray.transfer) -----------------------------------

    def backup(self, dest: str | os.PathLike | None = None, *,
               progress: Progress | None = None) -> backup_mod.BackupReport:
        """Copy this file into one verified, self-contained backup while other processes keep
        writing (default: `backups/` beside the file); see `magray.backup.create`."""
        return backup_mod.create(self, dest, progress=progress)

    def restore(self, path: str | os.PathLike, *, progress: Progress | None = None) -> backup_mod.RestoreReport:
        """Replace this file's content with a verified backup's, keeping a safety copy of the
        current content; other processes see old or new content, never a mix."""
        report = backup_mod.restore(self, path, progress=progress)
        # The restored file may be bound to another model: bind afresh on next use.
        if self._embedder is not None:
            self._embedder.close()
        self._embedder, self._binding = None, None
        return report

    def verify_backup(self, path: str | os.PathLike) -> backup_mod.BackupReport:
        """Re-check a backup (or any copy of a memory file) without touching this file."""
        return backup_mod.verify(path)

    def list_backups(self, folder: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """The backups in `folder` (default: `backups/` beside this file), newest first."""
        return backup_mod.list_backups(Path(folder) if folder else backup_mod.default_dir(self.path))

    def backup_policy(self, *, keep_last: int | None = None, keep_daily: int | None = None,
                      keep_weekly: int | None = None) -> dict[str, int | None]:
        """The rotation policy stored in this file, after changing the values given."""
        changes = {k: v for k, v in (("keep_last", keep_last), ("keep_daily", keep_daily),
                                     ("keep_weekly", keep_weekly)) if v is not None}
        if changes:
            return backup_mod.set_policy(self, **(backup_mod.get_policy(self._conn) | changes))
        return backup_mod.get_policy(self._conn)

    def prune_backups(self, folder: str | os.PathLike | None = None, *, keep_last: int | None = None,
                      keep_daily: int | None = None, keep_weekly: int | None = None,
                      dry_run: bool = False) -> dict[str, Any]:
        """Remove the backups in `folder` (default: `backups/` beside this file) that the policy
        given, else the one stored in this file, does not keep."""
        given = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly}
        policy = given if any(v is not None for v in given.values()) else backup_mod.get_policy(self._conn)
        folder = Path(folder) if folder else backup_mod.default_dir(self.path)
        return backup_mod.prune(folder, policy, dry_run=dry_run)

    def export(self, fmt: str = "jsonl", path: str | None = None, *, with_vectors: bool = False,
               per: str = "memory", stdout: Any = None, progress: Progress | None = None) -> dict[str, Any]:
        """Every memory to a JSONL file (`stdout` when path is None or '-') or a folder of Markdown
        files; see `magray.transfer`."""
        return transfer.export_to_path(self, fmt, path, with_vectors=with_vectors, per=per, stdout=stdout,
                                       progress=progress)

    def import_jsonl(self, stream: Any, *, name: str = "input", progress: Progress | None = None) -> dict[str, Any]:
        """Add the memories of a JSONL export with their original fields; importing twice adds nothing."""
        return transfer.import_jsonl(self, stream, name=name, progress=progress)

    def import_records(self, items: Iterable[Mapping[str, Any]], *, vectors_sha256: str | None = None,
                       chunk_vectors: Mapping[str, bytes] | None = None,
                       progress: Progress | None = None) -> list[AddResult]:
        """Store exported memories as they were: like add_many (without near-duplicate merging),
        but an item may also carry updated_at, accessed_at, access_count, expires_at and its
        per-session `uses`, which are kept rather than derived from now (in the same transaction
        as the insert), and its source `id` and `merged_into`, which re-link aliases to their
        memory at the end. Content already present in its layer and project is skipped, so
        importing the same export twice adds nothing. `chunk_vectors` (float32 bytes by chunk
        text hash, made by the model `vectors_sha256`) are used instead of running the model when
        that is the model this file is bound to."""
        now = self.now()
        prepared = []
        for item in items:
            p = self._prepare({k: v for k, v in item.items() if k not in _KEPT_FIELDS}, now)
            prepared.append((p, _kept_fields(item, p.fields)))
        results: list[AddResult] = []
        for start in range(0, len(prepared), WRITE_BATCH[self.profile]):
            batch = prepared[start:start + WRITE_BATCH[self.profile]]
            embedder, bound = self._load_embedder()
            texts: list[str] = []
            for p, _ in batch:
                p.chunks = embedder.chunks(p.fields["content"])
                texts.extend(p.chunks)
            if chunk_vectors and vectors_sha256 == bound.sha256:
                # Seeded batch by batch, so that a bounded cache cannot evict them before use.
                seed = {h: chunk_vectors[h] for h in map(cache.text_hash, texts) if h in chunk_vectors}
                if seed:
                    import numpy as np

                    known = cache.Embedded(np.empty((0, bound.dim), np.float32), list(seed), new_entries=seed)
                    with self._write():
                        cache.store(self._conn, bound.sha256, known, now)
            embedded = cache.embed_cached(self._conn, embedder, bound.sha256, texts)
            created = 0
            with self._write():
                self._check_binding(bound)
                offset = 0
                for p, kept in batch:
                    f, n = p.fields, len(p.chunks)
                    existing = records.find_duplicate(self._conn, f["layer"], f["project"], f["content_hash"])
                    if existing is not None:
                        results.append(AddResult(existing, False, 0))
                    else:
                        memory_id = records.insert(self._conn, f, p.tags)
                        self._conn.execute(
                            "UPDATE memories SET updated_at = :updated_at, accessed_at = :accessed_at, "
                            "access_count = :access_count, expires_at = :expires_at WHERE id = :id",
                            {k: kept[k] for k in ("updated_at", "accessed_at", "access_count", "expires_at")}
                            | {"id": memory_id})
                        self._conn.executemany(
                            "INSERT INTO memory_uses (memory_id, session, uses, last_at) VALUES (?, ?, ?, ?)",
                            [(memory_id, u["session"], u["uses"], u["last_at"]) for u in kept["uses"]])
                        vectors.insert_chunks(self._conn, bound.generation, memory_id, f["layer"], f["project"],
                                              f["session"], f["created_at"], embedded.hashes[offset:offset + n],
                                              embedded.vectors[offset:offset + n])
                        results.append(AddResult(memory_id, True, n))
                        created += 1
                    offset += n
                self._cache_store(bound.sha256, embedded, self.now())
                records.bump_counters(self._conn, {
                    "imports": created, "embeddings_computed": len(embedded.new_entries),
                    "cache_hits": embedded.hits, "cache_misses": len(texts) - embedded.hits}, self.now())
            if progress:
                progress(len(results), len(prepared))
        # Aliases point at their memory by its id in the exported file: map both ids to this file's.
        new_id = {kept["id"]: r.id for (_, kept), r in zip(prepared, results) if kept["id"] is not None}
        links = [(new_id[kept["merged_into"]], r.id) for (_, kept), r in zip(prepared, results)
                 if kept["merged_into"] in new_id]
        if links:
            with self._write():
                self._conn.executemany("UPDATE memories SET merged_into = ? WHERE id = ? AND merged_into IS NULL",
                                       links)
        return results


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text")
    return value


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidInput(f"{name} must be a finite number")
    return number


# Fields of an exported memory that an import keeps as they were (the others go through _prepare
# like an add): stored times and counts, per-session uses, and the ids that link aliases.
_KEPT_FIELDS = ("updated_at", "accessed_at", "access_count", "expires_at", "uses", "id", "merged_into")


def _kept_fields(item: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    def count(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{name} must be a whole number, 0 or more, got {value!r}")
        return value

    kept: dict[str, Any] = {name: None if item.get(name) is None else _number(item[name], name)
                            for name in ("accessed_at", "expires_at")}
    if "expires_at" not in item:
        kept["expires_at"] = fields["expires_at"]
    updated = item.get("updated_at")
    kept["updated_at"] = fields["created_at"] if updated is None else _number(updated, "updated_at")
    kept["access_count"] = count(item.get("access_count", 0), "access_count")
    kept["id"] = None if item.get("id") is None else count(item["id"], "id")
    kept["merged_into"] = None if item.get("merged_into") is None else count(item["merged_into"], "merged_into")
    uses = item.get("uses") or []
    if not isinstance(uses, list) or not all(isinstance(u, Mapping) for u in uses):
        raise InvalidInput("uses must be a list of {session, uses, last_at} objects")
    kept["uses"] = [{"session": _optional_text(u.get("session"), "uses.session") or "",
                     "uses": count(u.get("uses", 0), "uses.uses"),
                     "last_at": _number(u.get("last_at"), "uses.last_at")} for u in uses]
    return kept
