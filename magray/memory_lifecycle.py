"""The lifecycle part of the Memory facade: clean, automatic promotion, near-duplicate aliases,
scopes, statistics and maintenance (kept apart from memory.py, which owns reading and writing)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import binding as binding_mod
from . import lifecycle, rebalance, records, vectors
from .errors import InvalidInput, StoreError
from .timeutil import iso
from .types import MemoryRecord

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .memory import Memory


class LifecycleMixin:
    """Methods of `Memory` about how memories age, move and get cleaned up."""

    def clean(self: Memory, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Purge expired and soft-deleted memories (with their FTS entries, vectors and tags).
        With `dry_run`, only list what would go."""
        self._reconcile()
        now = self.now()
        if dry_run:
            return lifecycle.clean_candidates(self._conn, now)
        with self._write():
            items = lifecycle.clean_candidates(self._conn, now)
            lifecycle.purge(self._conn, items, now)
        return items

    def touch(self: Memory, memory_id: int, *, session: str | None = None) -> Any:
        """Reinforce a memory explicitly: one use, as if it had been read (in `session` if given)."""
        now = self.now()
        with self._write():
            records.get(self._conn, memory_id, now)
            records.record_use(self._conn, [memory_id], now, session)
        return records.get(self._conn, memory_id, now)

    def promote_auto(self: Memory, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Apply the promotion rules (see `magray config show`); every move is logged as an event."""
        rules = self.rules["promotion"]
        moves = lifecycle.promotion_candidates(self._conn, self.now(), rules)
        if not dry_run:
            for move in moves:
                try:
                    self.promote(move["id"], move["to"], reason=f"rule: {move['reason']}")
                except InvalidInput as exc:  # e.g. the same text is already in the target layer
                    move["skipped"] = str(exc)
        return moves

    def unmerge(self: Memory, alias_id: int) -> dict[str, Any]:
        """Make a near-duplicate that was merged into another memory a memory of its own again."""
        with self._write():
            survivor = lifecycle.unmerge(self._conn, alias_id, self.now())
        return {"id": alias_id, "was_merged_into": survivor}

    def aliases(self: Memory, memory_id: int) -> list[MemoryRecord]:
        """The near-duplicates merged into a memory (each can be unmerged)."""
        ids = lifecycle.aliases_of(self._conn, memory_id)
        found = records.get_many(self._conn, ids)
        return [found[i] for i in ids if i in found and found[i].deleted_at is None]

    def duplicates(self: Memory) -> list[list[int]]:
        """Groups of near-duplicate memories already stored (same layer and project)."""
        self._reconcile()
        bound = binding_mod.current(self._conn)
        if bound is None:
            return []
        dedup = self.rules["dedup"]
        return lifecycle.duplicate_groups(self._conn, bound, list(dedup["layers"]), float(dedup["min_similarity"]))

    def scopes(self: Memory, kind: str) -> list[dict[str, Any]]:
        """`sessions` or `projects`, with their memory counts."""
        column = {"sessions": "session", "projects": "project"}.get(kind)
        if column is None:
            raise InvalidInput(f"unknown scope {kind!r}: use sessions or projects")
        self._reconcile()
        return [dict(s, last=iso(s["last"])) for s in lifecycle.scopes(self._conn, column, self.now())]

    def tags(self: Memory) -> list[dict[str, Any]]:
        """The tags in use on live memories, with their memory counts, most used first."""
        return lifecycle.tag_counts(self._conn, self.now())

    def forget_scope(self: Memory, *, session: str | None = None, project: str | None = None) -> int:
        """Remove every memory of a session or a project, now and for good."""
        if (session is None) == (project is None):
            raise InvalidInput("name exactly one of a session or a project to forget")
        column, value = ("session", session) if session is not None else ("project", project)
        if not value:
            raise InvalidInput(f"the {column} name is empty")
        now = self.now()
        with self._write():
            ids = lifecycle.scope_ids(self._conn, column, value)
            items = [{"id": i, "layer": None, "reason": f"forget {column} {value}"} for i in ids]
            lifecycle.purge(self._conn, items, now)
        return len(ids)

    def stats(self: Memory, days: int = 14, *, space: bool = False) -> dict[str, Any]:
        """Counters, memories per layer by month, and activity per day; with `space`, also what
        each part of the file costs (it reads every page of the file: ~1 s per GB)."""
        out = {
            "counters": records.counters(self._conn),
            "layers_by_month": [{"month": m, "layer": layer, "count": n}
                                for m, layer, n in lifecycle.layers_by_month(self._conn)],
            "activity_by_day": [{"day": d, "name": name, "value": v}
                                for d, name, v in lifecycle.activity_by_day(self._conn, days)],
        }
        if space:
            out["space"] = lifecycle.file_parts(self._conn)
        return out

    def metrics(self: Memory) -> str:
        """Counters and gauges in the Prometheus text exposition format."""
        from .metrics import exposition

        last_backup = binding_mod.get_setting(self._conn, "last_backup_at")
        return exposition(self.status(), last_backup, self.now())

    def optimize(self: Memory, *, vacuum: bool = False) -> dict[str, int]:
        """Convert the float32 vectors of a file written before to float16, train or finish
        re-balancing the ANN index when due, FTS optimize, planner statistics, WAL checkpoint (and
        VACUUM, which gives the space the conversion freed back): sizes before and after, and what
        was done to the vectors."""
        before = self._file_bytes()
        from .replication import is_replicated

        # A short write transaction per batch (see vectors.to_float16), so writers never wait long.
        converted = 0
        for generation in binding_mod.generations(self._conn):
            while (n := vectors.to_float16(self._conn, generation)) is not None:
                converted += n
        bound = binding_mod.current(self._conn)
        index = rebalance.run(self._conn, bound.generation) if bound is not None else {}
        lifecycle.optimize(self._conn, vacuum, "PASSIVE" if is_replicated(self._conn) else "TRUNCATE")
        return {"bytes_before": before, "bytes_after": self._file_bytes(),
                "vectors_to_float16": converted} | index

    def _file_bytes(self: Memory) -> int:
        total = 0
        for suffix in ("", "-wal"):
            path = self.path.with_name(self.path.name + suffix)
            total += path.stat().st_size if path.exists() else 0
        return total

    def _maintain(self: Memory, adds: int) -> None:
        """Bounded upkeep piggy-backed on writes: purge a few expired memories; run PRAGMA optimize
        each time the add counter crosses a multiple of `optimize_every_adds`."""
        try:
            self._maintain_now(adds)
        except StoreError as exc:  # upkeep is best effort: the write it follows has landed
            log.warning("maintenance skipped: %s", exc)

    def _maintain_now(self: Memory, adds: int) -> None:
        rules = self.rules["maintenance"]
        now = self.now()
        if lifecycle.expired_ids(self._conn, now, 1):
            with self._write():
                ids = lifecycle.expired_ids(self._conn, now, int(rules["expire_per_write"]))
                items = [{"id": i, "layer": None, "reason": "expired"} for i in ids]
                lifecycle.purge(self._conn, items, now)
        every = int(rules["optimize_every_adds"])
        total = records.counters(self._conn).get("adds", 0)
        crossed = bool(adds and every > 0 and total // every != (total - adds) // every)
        if crossed:
            self._conn.execute("PRAGMA optimize")
        bound = binding_mod.current(self._conn)
        if bound is not None:  # the ANN index grows and re-balances with the file (see rebalance.py)
            rebalance.step(self._conn, bound.generation, adds, may_train=crossed)
