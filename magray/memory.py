"""The Memory facade: the public API that the CLI and servers call. It never prints or exits."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from . import binding as binding_mod
from . import health, lifecycle, reconcile, records, replication, schema, search as search_mod, timephrases, vectors
from .config import DURABILITY, LAYERS, WRITE_BATCH, PROFILES, default_db_path, default_profile, load_rules
from .db import is_follower, open_connection, read_snapshot, translate_errors, write_transaction
from .embed import cache
from .memory_archive import ArchiveMixin
from .memory_lifecycle import LifecycleMixin
from .memory_models import ModelsMixin
from .memory_replication import ReplicationMixin, follow as _follow, restore_replica_copy as _restore_replica_copy
from .errors import InvalidInput, MagrayError, ModelMismatch, StoreError
from .types import AddResult, Filters, MemoryRecord, SearchHit, Status

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Progress = Callable[[int, int], None]  # (done, total)

MAX_CONTENT_CHARS = records.MAX_CONTENT_CHARS
CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")


@dataclass
class _Prepared:
    fields: dict[str, Any]
    tags: list[str]
    chunks: list[str] = field(default_factory=list)
    # An import keeps these stored fields as they were (see memory_archive._kept_fields).
    kept: dict[str, Any] | None = None


class Memory(ModelsMixin, LifecycleMixin, ArchiveMixin, ReplicationMixin):
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
        self._reconciling = False
        self._shares_model = False  # the embedder belongs to the Memory this one came from
        # The binding (model sha256) a cached query vector was last checked against: the check
        # reads the model registry and the model file's state, ~0.6 ms a search.
        self._checked_binding: str | None = None
        self.rules = load_rules()
        self.timezone = timephrases.zone()
        # A follower (`magray follow`): Litestream writes it, magray only reads it.
        self.read_only = conn.readonly("main")

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, *, profile: str | None = None,
             model: str | None = None, device: str = "auto", clock: Clock | None = None,
             create: bool = True, timezone: str | None = None) -> Memory:
        """Open (creating if needed) the memory file at `path` (default: $MAGRAY_DB or the XDG data
        dir) and bring its schema up to date. `model` (a registered name or a GGUF path; default
        $MAGRAY_MODEL) is used to bind a new file and must match the binding of an existing one.
        `timezone` (an IANA name; default $MAGRAY_TZ, else the system's local zone) is the zone
        time phrases are read in: "yesterday" is the user's yesterday."""
        path = Path(path) if path is not None else default_db_path()
        profile = profile or default_profile()
        if profile not in PROFILES:
            raise InvalidInput(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
        follower = is_follower(path)
        conn = open_connection(path, profile=profile, create=create, read_only=follower,
                               check=lambda c: schema.check_version(c, path))
        try:
            with translate_errors(path):
                if follower:
                    _check_follower_schema(conn, path)
                else:
                    schema.migrate(conn, path)
                    if replication.is_replicated(conn):
                        conn.execute(f"PRAGMA journal_size_limit={replication.JOURNAL_SIZE_LIMIT}")
            # The rules are read (and checked) here: a bad config.toml must not leak the connection.
            memory = cls(conn, path, profile=profile, model=model or os.environ.get("MAGRAY_MODEL"),
                         device=device, clock=clock or time.time)
            memory.timezone = timephrases.zone(timezone)
            return memory
        except BaseException:
            conn.close()
            raise

    def another(self) -> Memory:
        """A second connection to the same file that shares this one's loaded model, for a server
        that runs calls in several threads at once (one connection per thread at a time; the model
        embeds for one of them at a time). Close it before this one."""
        conn = open_connection(self.path, profile=self.profile, create=False, read_only=self.read_only,
                               check=lambda c: schema.check_version(c, self.path))
        other = type(self)(conn, self.path, profile=self.profile, model=self._model_request,
                           device=self._device, clock=self._clock)
        other.timezone = self.timezone
        if self._embedder is not None:
            other._embedder, other._binding, other._shares_model = self._embedder, self._binding, True
        return other

    # `Memory.follow(url, to, stop)`: keep a read-only copy of a replica (see memory_replication).
    follow = staticmethod(_follow)
    # `Memory.restore_replica_copy(url, to, at=...)`: a replica's state into a new file, no file open.
    restore_replica_copy = staticmethod(_restore_replica_copy)

    def close(self) -> None:
        if self._embedder is not None:
            if not self._shares_model:
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
        self._reconcile()
        return write_transaction(self._conn)

    def _reconcile(self) -> None:
        """Finish what plain SQL wrote to the file since this process last looked (reconcile.py):
        called before every read and write; one indexed lookup when nothing is queued. A failure
        leaves the work queued (`status` shows it) rather than failing the caller's command."""
        # A follower is written by Litestream alone: its primary reconciles.
        if self._reconciling or self._conn is None or self.read_only or not reconcile.has_work(self._conn):
            return
        self._reconciling = True
        try:
            with translate_errors(self.path):
                reconcile.run(self._conn, self._load_embedder, self.now,
                              cache_limit=int(self.rules["cache"]["max_entries"]))
        except MagrayError as exc:
            log.warning("plain-SQL writes not synced yet: %s", exc)
        finally:
            self._reconciling = False

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
        layer = records.check_layer(item.get("layer") or "interact")
        created = item.get("created_at")
        created = now if created is None else records.check_time(created, "created_at")
        ttl = item.get("ttl")
        importance = item.get("importance")
        fields = {
            "layer": layer, "content": content, "content_hash": records.content_hash(content),
            "title": records.optional_text(item.get("title"), "title"),
            "kind": records.optional_text(item.get("kind"), "kind"),
            "source": records.optional_text(item.get("source"), "source"),
            "project": records.optional_text(item.get("project"), "project") or "",
            "session": records.optional_text(item.get("session"), "session") or "",
            "metadata": records.check_metadata(item.get("metadata")),
            "created_at": created,
            "importance": 0.5 if importance is None else records.check_importance(importance),
            # A TTL counts from when magray stores the memory, also for one back-dated with created_at
            # (an import of old notes must not expire on arrival).
            "expires_at": records.expiry(layer, now, None if ttl is None else records.check_number(ttl, "ttl")),
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
        embedded = cache.embed_cached(self._conn, embedder, bound.sha256, texts,
                                      prompt=self._prompts(bound).document)
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
                                                               f["layer"], f["project"], min_similarity, now)
                    memory_id = records.insert(self._conn, f, p.tags)
                    if p.kept is not None:
                        records.restore_kept(self._conn, memory_id, p.kept)
                    vectors.insert_chunks(self._conn, bound.generation, memory_id, f["layer"], f["project"],
                                          f["session"], f["created_at"], embedded.hashes[offset:offset + n],
                                          embedded.vectors[offset:offset + n])
                    if survivor is not None:
                        lifecycle.merge_into(self._conn, memory_id, survivor[0], survivor[1], p.tags, now)
                    results.append(AddResult(memory_id, True, n, survivor[0] if survivor else None))
                offset += n
            self._cache_store(bound.sha256, embedded, now)
            created = [r.created for r, p in zip(results, batch)]
            records.bump_counters(self._conn, {
                "adds": sum(c for c, p in zip(created, batch) if p.kept is None),
                "imports": sum(c for c, p in zip(created, batch) if p.kept is not None),
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
                changes[name] = records.optional_text(value, name) or None
        if metadata is not None:
            changes["metadata"] = records.check_metadata(metadata)
        if importance is not None:
            changes["importance"] = records.check_importance(importance)
        if ttl is not None:
            changes["expires_at"] = records.expiry(record.layer, now, records.check_number(ttl, "ttl"))
        if not changes:
            raise InvalidInput("nothing to update: give new content or a field to change")
        embedded = None
        if "content" in changes and changes["content_hash"] != record.content_hash:
            embedder, bound = self._load_embedder()
            chunks = embedder.chunks(content)
            embedded = cache.embed_cached(self._conn, embedder, bound.sha256, chunks,
                                          prompt=self._prompts(bound).document)
        with self._write():
            # Read again under the lock: another process may have moved it while we embedded.
            record = records.get(self._conn, memory_id, now, include_expired=True)
            if "content_hash" in changes:
                dup = records.find_duplicate(self._conn, record.layer, record.project, changes["content_hash"])
                if dup is not None and dup != memory_id:
                    raise InvalidInput(f"memory {dup} already holds that content in this layer and project")
            records.update_fields(self._conn, memory_id, changes, now)
            if embedded is not None:
                self._check_binding(bound)
                for generation in binding_mod.generations(self._conn):
                    vectors.delete_for_memory(self._conn, generation, memory_id)
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
            for generation in binding_mod.generations(self._conn):
                vectors.move(self._conn, generation, memory_id, to, record.project, record.session)
            records.log_event(self._conn, now, memory_id, "promote",
                              {"from": record.layer, "to": to, "reason": reason})
            records.bump_counters(self._conn, {"promotions": 1}, now)
        return records.get(self._conn, memory_id, now, include_expired=True)

    def delete(self, memory_id: int, *, hard: bool = False) -> None:
        """Soft-delete (hidden at once, purged later by `clean`), or with `hard` remove it now with
        its tags, FTS entry and vectors; near-duplicates merged into it go with it."""
        now = self.now()
        with self._write():
            records.get(self._conn, memory_id, now, include_deleted=hard, include_expired=True)
            # Its near-duplicate aliases say the same thing: they go with it.
            for target in [memory_id, *lifecycle.aliases_of(self._conn, memory_id)]:
                for generation in binding_mod.generations(self._conn):
                    vectors.delete_for_memory(self._conn, generation, target)
                if hard:
                    records.purge(self._conn, target)
                else:
                    records.soft_delete(self._conn, target, now)

    # -- reading -------------------------------------------------------------------------------

    def get(self, memory_id: int, *, touch: bool = True, include_expired: bool = False) -> MemoryRecord:
        """One memory by id. Reading it counts as a use unless `touch` is false."""
        self._reconcile()
        now = self.now()
        record = records.get(self._conn, memory_id, now, include_expired=include_expired)
        if touch and not self.read_only:
            with self._write():
                records.record_use(self._conn, [memory_id], now)
            record = records.get(self._conn, memory_id, now, include_expired=True)
        return record

    def list(self, filters: Filters = Filters(), *, limit: int = 50, offset: int = 0) -> list[MemoryRecord]:
        """Newest first."""
        self._reconcile()
        return records.list_memories(self._conn, filters, self.now(), limit, offset)

    def search(self, query: str, *, k: int = 10, mode: str = "hybrid", filters: Filters = Filters(),
               touch: bool = True, ranking: search_mod.Ranking = search_mod.DEFAULT_RANKING,
               min_score: float | None = None, time_phrases: bool = True) -> list[SearchHit]:
        """Hybrid (BM25 + vector KNN, fused), vector or text search; best first, with score parts.

        A time phrase in the query ("last week", "in September") becomes a window on created_at
        and is taken out of the searched text (`time_phrases=False` searches the words as typed);
        when nothing in the window matches, the whole query is searched at any time and the
        hits' `window` part says the window was not applied. Memories less relevant than
        `min_score` (default: the ranking's calibrated floor in hybrid and vector mode, none in
        text mode; 0 for everything) are left out.
        The memories returned count as used unless `touch` is false."""
        if mode not in search_mod.MODES:
            raise InvalidInput(f"unknown mode {mode!r}: use hybrid, vector or text")
        if isinstance(query, str):
            query = query.replace("\x00", " ")  # a NUL in a query is noise, not a reason to fail
        if not records.check_text(query, "the query").strip():
            raise InvalidInput("the query is empty")
        records.check_limit(k)
        # Text search asks for the memories that hold the words, however few: no floor unless asked.
        floor = (0.0 if mode == "text" else ranking.min_score) if min_score is None else float(min_score)
        if not math.isfinite(floor) or floor < 0:
            raise InvalidInput(f"bad min_score {min_score!r}: use a number >= 0")
        self._reconcile()
        now = self.now()
        text, window = timephrases.find_window(query, now, self.timezone) if time_phrases else (query, None)
        if window is not None and window.vague:
            ranking = dataclasses.replace(ranking, recency_weight=ranking.recency_weight * ranking.vague_recency_factor)
        windowed = window is not None and not window.vague
        embedded: list[tuple[binding_mod.Binding, cache.Embedded]] = []  # query vectors, to cache
        hits = self._find(text, filters.narrowed(window.since, window.until) if windowed else filters,
                          now, k, mode, ranking, floor, embedded)
        applied = windowed and bool(hits)
        if windowed and not hits:
            # Nothing in the window matches: the phrase may name when something happened rather
            # than when it was told ("camping in June"), so search the words as typed, any time.
            hits = self._find(query, filters, now, k, mode, ranking, floor, embedded)
        if window is not None:
            shown = window.to_dict() | {"applied": applied}
            for hit in hits:
                hit.parts["window"] = shown
        self._after_search(hits, embedded, now, touch)
        return hits

    def _find(self, text: str, filters: Filters, now: float, k: int, mode: str,
              ranking: search_mod.Ranking, floor: float,
              embedded: list[tuple[binding_mod.Binding, cache.Embedded]]) -> list[SearchHit]:
        query_vec, generation = None, None
        bound = binding_mod.current(self._conn)
        if mode in ("vector", "hybrid") and (bound is not None or mode == "vector"):
            found = None
            if bound is not None and self._embedder is None:
                if self._checked_binding != bound.sha256:
                    self._resolve_model()  # refuses another model before anything is read
                    self._checked_binding = bound.sha256
                found = cache.cached(self._conn, bound.sha256, text, bound.dim, prompt=self._prompts(bound).query)
            if found is None:
                embedder, bound = self._load_embedder()
                # A query longer than the model's window is embedded by its first chunk.
                found = cache.embed_cached(self._conn, embedder, bound.sha256, embedder.chunks(text)[:1],
                                           prompt=self._prompts(bound).query)
            embedded.append((bound, found))
            query_vec, generation = found.vectors[0], bound.generation
        return search_mod.find(self._conn, text, query_vec, generation, filters, now, k, mode, ranking, floor)

    def _after_search(self, hits: list[SearchHit], embedded: list[tuple[binding_mod.Binding, cache.Embedded]],
                      now: float, touch: bool) -> None:
        """Count the hits as used and the search in the counters, and keep the query vectors."""
        if self.read_only:  # a follower: uses are counted on the primary only
            return
        try:
            with self._write():
                if touch and hits:
                    records.record_use(self._conn, [h.memory.id for h in hits], now)
                for bound, found in embedded:
                    self._cache_store(bound.sha256, found, now)
                records.bump_counters(self._conn, {
                    "searches": 1,
                    "embeddings_computed": sum(len(found.new_entries) for _, found in embedded),
                    "cache_hits": sum(found.hits for _, found in embedded),
                    "cache_misses": sum(1 - found.hits for _, found in embedded),
                }, now)
        except StoreError as exc:  # counting uses is best effort: the results stand
            log.warning("search results not counted as uses: %s", exc)

    def status(self) -> Status:
        """The file at a glance, including plain-SQL writes still queued (status itself leaves
        them queued, so that they can be seen)."""
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
            queued = reconcile.pending(self._conn)
        lookups = counters.get("cache_hits", 0) + counters.get("cache_misses", 0)
        cache_stats["hit_rate"] = round(counters.get("cache_hits", 0) / lookups, 4) if lookups else None
        wal = Path(str(self.path) + "-wal")
        return Status(
            path=str(self.path), size_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0, schema_version=version,
            sqlite_version=apsw.sqlite_lib_version(), sqlite_vec_version=vec_version,
            profile=self.profile, counts=counts, deleted=deleted, expired=expired,
            model=bound.to_dict() | {"prompts": self._prompts(bound).to_dict()} if bound else None,
            device=self.device(),
            cache=cache_stats, counters=counters, pending=queued,
        )

    def durability(self) -> str:
        return DURABILITY[self.profile].promise

    def checkpoint(self, mode: str = "PASSIVE") -> dict[str, int]:
        """Copy the WAL back into the file. PASSIVE never waits for other processes; TRUNCATE waits
        (up to the busy timeout) for their readers and writers, then empties the WAL file.
        Long-running processes call this so that the WAL does not grow while they hold the file.
        While the file is replicated every mode runs as PASSIVE: Litestream holds a read
        transaction, so any other mode would wait its whole busy timeout and stall every writer."""
        mode = mode.upper() if isinstance(mode, str) else mode
        if mode not in CHECKPOINT_MODES:
            raise InvalidInput(f"unknown checkpoint mode {mode!r}: use {', '.join(CHECKPOINT_MODES)}")
        with translate_errors(self.path):
            if mode != "PASSIVE" and replication.is_replicated(self._conn):
                mode = "PASSIVE"
            busy, log_frames, done = self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return {"mode": mode, "busy": busy, "log_frames": log_frames, "checkpointed_frames": done}

    def doctor(self, *, repair: bool = False, progress: Progress | None = None) -> health.Report:
        """Check the file (SQLite integrity, FTS index and vectors against the memories); with
        `repair`, rebuild what derives from the memories, never their content. See health.py."""
        self._reconcile()
        with translate_errors(self.path):
            return health.run(self._conn, self.path, repair=repair, load_embedder=self._load_embedder,
                              now=self.now, progress=progress)


def _check_follower_schema(conn: apsw.Connection, path: Path) -> None:
    """A follower cannot be migrated (Litestream writes it): its schema must be this magray's."""
    version, latest = schema.current_version(conn), schema.latest_version()
    if version < latest:
        raise StoreError(f"{path} is a read-only follower at schema version {version}; this magray needs "
                         f"{latest}: upgrade magray on the primary first (it migrates the file)")
