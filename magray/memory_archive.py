"""The archive part of the Memory facade: backups (magray.backup), export and import
(magray.transfer) and imports from other tools (magray.importers)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import backup as backup_mod, retention
from . import records, transfer
from .config import WRITE_BATCH
from .embed import cache
from .errors import InvalidInput
from .types import AddResult

if TYPE_CHECKING:
    from .memory import Memory, Progress


class ArchiveMixin:
    """Methods of `Memory` that copy memories in and out."""

    def backup(self: Memory, dest: str | os.PathLike | None = None, *, force: bool = False,
               progress: Progress | None = None) -> backup_mod.BackupReport:
        """Copy this file into one verified, self-contained backup while other processes keep
        writing (default: `backups/` beside the file; an existing DEST file is replaced only with
        `force`); see `magray.backup.create`."""
        return backup_mod.create(self, dest, force=force, progress=progress)

    def restore(self: Memory, path: str | os.PathLike, *, progress: Progress | None = None) -> backup_mod.RestoreReport:
        """Replace this file's content with a verified backup's, keeping a safety copy of the
        current content; other processes see old or new content, never a mix."""
        report = backup_mod.restore(self, path, progress=progress)
        # The restored file may be bound to another model: bind afresh on next use.
        if self._embedder is not None:
            self._embedder.close()
        self._embedder, self._binding = None, None
        return report

    def verify_backup(self: Memory, path: str | os.PathLike) -> backup_mod.BackupReport:
        """Re-check a backup (or any copy of a memory file) without touching this file."""
        return backup_mod.verify(path)

    def list_backups(self: Memory, folder: str | os.PathLike | None = None) -> list[dict[str, Any]]:
        """The backups in `folder` (default: `backups/` beside this file), newest first."""
        return retention.list_backups(Path(folder) if folder else backup_mod.default_dir(self.path))

    def backup_policy(self: Memory, *, keep_last: int | None = None, keep_daily: int | None = None,
                      keep_weekly: int | None = None, every: float | None = None) -> dict[str, Any]:
        """The rotation policy stored in this file, after changing the values given, and `every`:
        the seconds between the backups that a long-running `magray replicate` or `magray serve`
        takes on its own (0 turns them off)."""
        changes = {k: v for k, v in (("keep_last", keep_last), ("keep_daily", keep_daily),
                                     ("keep_weekly", keep_weekly)) if v is not None}
        if every is not None:
            retention.set_every(self, every)
        policy = retention.get_policy(self._conn)
        if changes:
            policy = retention.set_policy(self, **(policy | changes))
        return policy | {"every_seconds": retention.get_every(self._conn)}

    def prune_backups(self: Memory, folder: str | os.PathLike | None = None, *, keep_last: int | None = None,
                      keep_daily: int | None = None, keep_weekly: int | None = None,
                      dry_run: bool = False) -> dict[str, Any]:
        """Remove the backups in `folder` (default: `backups/` beside this file) that the policy
        given, else the one stored in this file, does not keep."""
        given = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly}
        policy = given if any(v is not None for v in given.values()) else retention.get_policy(self._conn)
        folder = Path(folder) if folder else backup_mod.default_dir(self.path)
        return retention.prune(folder, policy, dry_run=dry_run)

    def export(self: Memory, fmt: str = "jsonl", path: str | None = None, *, with_vectors: bool = False,
               per: str = "memory", stdout: Any = None, force: bool = False,
               progress: Progress | None = None) -> dict[str, Any]:
        """Every memory to a new JSONL file (`stdout` when path is None or '-'; an existing file is
        replaced only with `force`) or a new folder of Markdown files; see `magray.transfer`."""
        self._reconcile()
        return transfer.export_to_path(self, fmt, path, with_vectors=with_vectors, per=per, stdout=stdout,
                                       force=force, progress=progress)

    def add_jsonl(self: Memory, stream: Any, *, name: str = "input", progress: Progress | None = None,
                  dedup: bool | None = None) -> dict[str, Any]:
        """Add one memory per JSON object line (the fields of `add`). Every line is checked before
        anything is written, so a bad line adds nothing."""
        items = [item for _, item in transfer.json_objects(stream, name, note=" (nothing was added)")]
        try:
            results = self.add_many(items, progress=progress, dedup=dedup)
        except InvalidInput as exc:
            raise InvalidInput(f"{name}: {exc} (nothing was added)") from None
        return {"added": sum(r.created for r in results), "existing": sum(not r.created for r in results),
                "ids": [r.id for r in results]}

    def import_jsonl(self: Memory, stream: Any, *, name: str = "input", progress: Progress | None = None) -> dict[str, Any]:
        """Add the memories of a JSONL export with their original fields; importing twice adds nothing."""
        return transfer.import_jsonl(self, stream, name=name, progress=progress)

    def import_records(self: Memory, items: Iterable[Mapping[str, Any]], *, vectors_sha256: str | None = None,
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
        # Everything is checked before the first batch is written: an import is all or nothing.
        for number, item in enumerate(items, start=1):
            try:
                p = self._prepare({k: v for k, v in item.items() if k not in _KEPT_FIELDS}, now)
                p.kept = _kept_fields(item, p.fields)
            except InvalidInput as exc:
                raise InvalidInput(f"memory {number}: {exc} (nothing was imported)") from None
            prepared.append(p)
        results: list[AddResult] = []
        for start in range(0, len(prepared), WRITE_BATCH[self.profile]):
            batch = prepared[start:start + WRITE_BATCH[self.profile]]
            if chunk_vectors:
                self._seed_cache(batch, vectors_sha256, chunk_vectors, now)
            results.extend(self._add_batch(batch, dedup=False))
            if progress:
                progress(len(results), len(prepared))
        # Aliases point at their memory by its id in the exported file: map both ids to this file's.
        new_id = {p.kept["id"]: r.id for p, r in zip(prepared, results) if p.kept["id"] is not None}
        links = [(new_id[p.kept["merged_into"]], r.id) for p, r in zip(prepared, results)
                 if p.kept["merged_into"] in new_id and new_id[p.kept["merged_into"]] != r.id]
        if links:
            with self._write():
                # Only onto a memory that is not an alias itself: an edited export cannot make
                # a cycle that would hide its memories from every listing.
                self._conn.executemany(
                    "UPDATE memories SET merged_into = ?1 WHERE id = ?2 AND merged_into IS NULL "
                    "AND (SELECT merged_into FROM memories WHERE id = ?1) IS NULL "
                    "AND NOT EXISTS (SELECT 1 FROM memories WHERE merged_into = ?2)", links)
        return results



    def _seed_cache(self: Memory, batch: list, vectors_sha256: str | None,
                    chunk_vectors: Mapping[str, bytes], now: float) -> None:
        """Put exported vectors into the embedding cache when the model that made them is this
        file's model, so that importing them runs no model (batch by batch, so that a bounded
        cache cannot evict them before use)."""
        import numpy as np

        embedder, bound = self._load_embedder()
        if vectors_sha256 != bound.sha256:
            return
        hashes = [cache.text_hash(c) for p in batch for c in embedder.chunks(p.fields["content"])]
        seed = {h: chunk_vectors[h] for h in hashes if h in chunk_vectors}
        if seed:
            known = cache.Embedded(np.empty((0, bound.dim), np.float32), list(seed), new_entries=seed)
            with self._write():
                cache.store(self._conn, bound.sha256, known, now)

    def import_from(self: Memory, source: str, path: str, *, layer: str = "insights",
                    project: str | None = None, collection: str | None = None, split: str = "file",
                    dry_run: bool = False, progress=None) -> dict[str, Any]:
        """Bring in memories kept by another tool (see importers.py). Idempotent: content already
        stored in the same layer and project is not added again. `dry_run` says what would come in."""
        from . import importers

        records.check_layer(layer)
        plan = importers.read(source, Path(path), layer=layer, project=project, collection=collection, split=split)
        report: dict[str, Any] = {"source": source, "found": len(plan.items) + len(plan.skipped),
                                  "skipped": plan.skipped}
        if dry_run:
            new = [i for i in plan.items if records.find_duplicate(
                self._conn, i["layer"], i.get("project") or "", records.content_hash(i["content"])) is None]
            return report | {"would_add": len(new), "already_stored": len(plan.items) - len(new),
                             "preview": [(i.get("title") or i["content"])[:80] for i in new[:20]]}
        results = self.add_many(plan.items, progress=progress)
        return report | {"added": sum(r.created for r in results),
                         "already_stored": sum(not r.created for r in results)}


# Fields of an exported memory that an import keeps as they were (the others go through _prepare
# like an add): stored times and counts, per-session uses, and the ids that link aliases.
_KEPT_FIELDS = ("updated_at", "accessed_at", "access_count", "expires_at", "uses", "id", "merged_into")


def _kept_fields(item: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    def count(value: Any, name: str) -> int:
        # SQLite stores integers in 64 bits: a bigger one must be refused here, before anything
        # is written, not fail half-way through the import.
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= records.MAX_INTEGER:
            raise InvalidInput(f"{name} must be a whole number from 0 to {records.MAX_INTEGER}, "
                               f"got {_short(value)}")
        return value

    kept: dict[str, Any] = {name: None if item.get(name) is None else records.check_time(item[name], name)
                            for name in ("accessed_at", "expires_at")}
    if "expires_at" not in item:
        kept["expires_at"] = fields["expires_at"]
    updated = item.get("updated_at")
    kept["updated_at"] = fields["created_at"] if updated is None else records.check_time(updated, "updated_at")
    kept["access_count"] = count(item.get("access_count", 0), "access_count")
    kept["id"] = None if item.get("id") is None else count(item["id"], "id")
    kept["merged_into"] = None if item.get("merged_into") is None else count(item["merged_into"], "merged_into")
    uses = item.get("uses") or []
    if not isinstance(uses, list) or not all(isinstance(u, Mapping) for u in uses):
        raise InvalidInput("uses must be a list of {session, uses, last_at} objects")
    kept["uses"] = [{"session": records.optional_text(u.get("session"), "uses.session") or "",
                     "uses": count(u.get("uses", 0), "uses.uses"),
                     "last_at": records.check_time(u.get("last_at"), "uses.last_at")} for u in uses]
    sessions = [u["session"] for u in kept["uses"]]
    if len(set(sessions)) != len(sessions):
        raise InvalidInput("uses names the same session twice")
    return kept


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"
