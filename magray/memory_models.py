"""The model part of the Memory facade: loading the embedder, the binding, registering models
and re-indexing (kept apart from memory.py, which owns reading and writing)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import binding as binding_mod
from . import rebalance, records, vectors
from .embed import cache, prompts
from .errors import Busy, ModelError, ModelMismatch

if TYPE_CHECKING:
    from .memory import Memory, Progress


class ModelsMixin:
    """Methods of `Memory` about its embedding model."""

    def _resolve_model(self: Memory) -> tuple[binding_mod.ModelEntry, binding_mod.Binding | None]:
        """The model to embed with and the file's binding, refusing a mismatch, without loading
        llama.cpp (a query whose vector is cached needs no model)."""
        from .embed import models

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
        return entry, bound

    def _load_embedder(self: Memory):
        """The loaded embedder and the binding it matches, binding the file on first use. A
        long-lived process follows another process's reindex or restore: same model, new
        vector table, it just moves on; another model, it loads that one (or refuses)."""
        if self._embedder is not None:
            live = binding_mod.current(self._conn)
            if live is not None and live.sha256 == self._binding.sha256:
                self._binding = live
                return self._embedder, live
            if not self._shares_model:
                self._embedder.close()
            self._embedder = self._binding = None
            self._shares_model = False
        from .embed.embedder import Embedder

        entry, bound = self._resolve_model()
        embedder = Embedder(Path(entry.path), device=self._device)
        if bound is None:
            with self._write():
                bound = binding_mod.current(self._conn) or binding_mod.bind(
                    self._conn, entry.name, entry.sha256, embedder.dim, embedder.pooling, 1, self.now())
                self._record_prompts(entry, embedder.metadata)
            if bound.sha256 != entry.sha256:
                embedder.close()
                raise ModelMismatch(f"another process bound this file to {bound.model_name} meanwhile")
        elif bound.dim != embedder.dim:
            embedder.close()
            raise ModelMismatch(f"model {entry.name} makes {embedder.dim}-dim vectors, the file holds {bound.dim}")
        self._embedder, self._binding = embedder, bound
        return embedder, bound

    def _prompts(self: Memory, bound: binding_mod.Binding) -> prompts.Prompts:
        """The query and document prompts of the bound model (none for most sentence models)."""
        return binding_mod.prompts_for(self._conn, bound.sha256, bound.model_name)

    def _record_prompts(self: Memory, entry: binding_mod.ModelEntry, metadata: dict[str, str]) -> None:
        """Record the model's prompts, unless the user gave them (inside a write transaction)."""
        if binding_mod.recorded_prompts(self._conn, entry.sha256) is None:
            binding_mod.record_prompts(self._conn, entry.sha256,
                           prompts.resolve(None, metadata, entry.name, Path(entry.path).name))

    @property
    def model_requested(self: Memory) -> str | None:
        """The model asked for by the caller or $MAGRAY_MODEL, if any."""
        return self._model_request

    def load_model(self: Memory) -> binding_mod.Binding:
        """Load the embedding model now (binding a new file to it) rather than on first use."""
        return self._load_embedder()[1]

    def _resolve_request(self: Memory, request: str) -> binding_mod.ModelEntry:
        """A registered model name, or a GGUF path (registered on the fly under its file name)."""
        from .embed import models

        entry = binding_mod.find_model(self._conn, request)
        if entry is not None:
            return entry
        if request.endswith(".gguf") or Path(request).exists():
            path = Path(request).expanduser().resolve()
            known = binding_mod.model_by_sha(self._conn, models.verify(path, None))
            if known is not None and Path(known.path) == path:
                return known  # registered already: no write on every open
            if known is not None and self.read_only:
                # A follower on another machine: the same model, found at this machine's path.
                import dataclasses

                return dataclasses.replace(known, path=str(path))
            return self.add_model(request)
        raise ModelError(f"no model named {request!r} and no such GGUF file")

    def add_model(self: Memory, source: str, *, name: str | None = None, sha256: str | None = None,
                  progress: Callable[[int, int | None], None] | None = None,
                  query_prefix: str | None = None, document_prefix: str | None = None) -> binding_mod.ModelEntry:
        """Register a model from a local GGUF path, a URL (downloaded into the cache dir) or a
        known name like `all-minilm-l6-v2`. The file's sha256 is checked and recorded, and the
        prompts it embeds queries and documents after, when given (else they are read from the
        GGUF metadata or a well-known name's defaults when the model is bound)."""
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
            if query_prefix is not None or document_prefix is not None:
                binding_mod.record_prompts(self._conn, entry.sha256,
                               prompts.Prompts(query_prefix or "", document_prefix or "", "option"))
        return entry

    def models(self: Memory) -> list[dict[str, Any]]:
        bound = binding_mod.current(self._conn)
        return [dict(vars(m), bound=bool(bound and bound.sha256 == m.sha256))
                for m in binding_mod.models(self._conn)]

    def use_model(self: Memory, name: str) -> binding_mod.Binding:
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
        dim, pooling, metadata = probe.dim, probe.pooling, probe.metadata
        probe.close()
        with self._write():
            generation = (bound.generation + 1) if bound else 1
            if bound:
                vectors.drop(self._conn, bound.generation)
            new = binding_mod.bind(self._conn, entry.name, entry.sha256, dim, pooling, generation, self.now())
            self._record_prompts(entry, metadata)
        self._embedder, self._binding = None, None
        return new

    def reindex(self: Memory, model: str, *, progress: Progress | None = None) -> dict[str, Any]:
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
                    self._record_prompts(entry, embedder.metadata)
            generation = pending["generation"]
            document_prompt = binding_mod.prompts_for(self._conn, entry.sha256, entry.name).document
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
                embedded = cache.embed_cached(self._conn, embedder, entry.sha256, texts, prompt=document_prompt)
                with self._write():
                    # Read again under the lock: a memory changed or deleted while the model ran
                    # would get vectors of its old text; it is left for the next round instead.
                    unchanged = records.unchanged(self._conn, {i: found[i].content_hash for i in todo})
                    for memory_id, start, n in spans:
                        m = found[memory_id]
                        if memory_id not in unchanged:
                            continue
                        vectors.insert_chunks(self._conn, generation, memory_id, m.layer, m.project,
                                              m.session, m.created_at, embedded.hashes[start:start + n],
                                              embedded.vectors[start:start + n])
                    self._cache_store(entry.sha256, embedded, self.now())
                    records.bump_counters(self._conn, {"embeddings_computed": len(embedded.new_entries)}, self.now())
                done += len(unchanged)
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
        rebalance.run(self._conn, generation)  # a large file gets its ANN lists now, not on later writes
        return {"model": new.to_dict(), "memories": done}

    def device(self: Memory) -> str | None:
        return self._embedder.device if self._embedder is not None else None
