"""The small value types that cross the public API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .timeutil import iso

_TIME_FIELDS = ("created_at", "updated_at", "accessed_at", "expires_at", "deleted_at")


@dataclass(frozen=True)
class Filters:
    """Which memories a list or search may return. Empty fields do not filter."""

    layers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # a memory must carry all of them
    project: str | None = None
    session: str | None = None
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    include_expired: bool = False

    def narrowed(self, since: float | None, until: float | None) -> Filters:
        """These filters with the time window [since, until) intersected into them."""
        if since is not None and (self.since is None or since > self.since):
            self = replace(self, since=since)
        if until is not None and (self.until is None or until < self.until):
            self = replace(self, until=until)
        return self

    def is_empty(self) -> bool:
        return not (self.layers or self.tags or self.project is not None or self.session is not None
                    or self.since is not None or self.until is not None)


@dataclass
class MemoryRecord:
    id: int
    layer: str
    content: str
    content_hash: str
    title: str | None = None
    kind: str | None = None
    source: str | None = None
    project: str = ""
    session: str = ""
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    accessed_at: float | None = None
    access_count: int = 0
    importance: float = 0.5
    expires_at: float | None = None
    deleted_at: float | None = None
    merged_into: int | None = None  # set on a near-duplicate kept as an alias of that memory

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _TIME_FIELDS:
            data[name] = iso(data[name])
        return data


@dataclass
class AddResult:
    id: int
    created: bool  # False when the exact content already existed in that layer and project
    chunks: int = 0
    merged_into: int | None = None  # a near-duplicate, kept as an alias reinforcing that memory

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchHit:
    memory: MemoryRecord
    score: float
    # Each part of the score, for --explain: text rank and bm25, vector rank and similarity,
    # the fused score, and the recency / use factors.
    parts: dict[str, float | int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 6), "parts": self.parts, "memory": self.memory.to_dict()}


@dataclass
class Status:
    path: str
    size_bytes: int
    wal_bytes: int
    schema_version: int
    sqlite_version: str
    sqlite_vec_version: str
    profile: str
    counts: dict[str, int]
    deleted: int
    expired: int
    model: dict[str, Any] | None
    device: str | None
    cache: dict[str, Any]
    counters: dict[str, int]
    # Work queued by plain-SQL writes for the next magray command (see reconcile.py).
    pending: dict[str, int] = field(default_factory=lambda: {"memories": 0, "vector_deletes": 0})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
