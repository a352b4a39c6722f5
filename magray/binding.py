"""Which models this file knows, and which one made its vectors (the binding)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import apsw

from . import vectors
from .embed.prompts import Prompts, by_name
from .db import get_setting, set_setting
from .errors import NotFound

# Settings key: the query and document prompts of each model the file knows, by sha256.
PROMPTS = "prompts"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str
    sha256: str
    source_url: str | None
    added_at: float


@dataclass(frozen=True)
class Binding:
    model_name: str
    sha256: str
    dim: int
    pooling: str
    generation: int
    bound_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def models(conn: apsw.Connection) -> list[ModelEntry]:
    rows = conn.execute("SELECT name, path, sha256, source_url, added_at FROM models ORDER BY name")
    return [ModelEntry(*row) for row in rows]


def find_model(conn: apsw.Connection, name: str) -> ModelEntry | None:
    row = conn.execute("SELECT name, path, sha256, source_url, added_at FROM models WHERE name = ?",
                       (name,)).fetchone()
    return ModelEntry(*row) if row else None


def model_by_sha(conn: apsw.Connection, sha256: str) -> ModelEntry | None:
    row = conn.execute("SELECT name, path, sha256, source_url, added_at FROM models WHERE sha256 = ? "
                       "ORDER BY added_at LIMIT 1", (sha256,)).fetchone()
    return ModelEntry(*row) if row else None


def register(conn: apsw.Connection, entry: ModelEntry) -> None:
    conn.execute(
        "INSERT INTO models (name, path, sha256, source_url, added_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET path = excluded.path, sha256 = excluded.sha256, "
        "source_url = excluded.source_url",
        (entry.name, entry.path, entry.sha256, entry.source_url, entry.added_at))


def require_model(conn: apsw.Connection, name: str) -> ModelEntry:
    entry = find_model(conn, name)
    if entry is None:
        raise NotFound(f"no model named {name!r} (see `magray model list`)")
    return entry


def current(conn: apsw.Connection) -> Binding | None:
    row = conn.execute("SELECT model_name, sha256, dim, pooling, generation, bound_at "
                       "FROM model_binding WHERE id = 1").fetchone()
    return Binding(*row) if row else None


def bind(conn: apsw.Connection, model_name: str, sha256: str, dim: int, pooling: str,
         generation: int, now: float) -> Binding:
    """Make `generation` the live vectors of this file (inside the caller's transaction)."""
    vectors.create(conn, generation, dim)
    conn.execute(
        "INSERT INTO model_binding (id, model_name, sha256, dim, pooling, generation, bound_at) "
        "VALUES (1, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET model_name = excluded.model_name, "
        "sha256 = excluded.sha256, dim = excluded.dim, pooling = excluded.pooling, "
        "generation = excluded.generation, bound_at = excluded.bound_at",
        (model_name, sha256, dim, pooling, generation, now))
    return Binding(model_name, sha256, dim, pooling, generation, now)


def generations(conn: apsw.Connection) -> list[int]:
    """Every vector generation that writes must keep in step: the bound one, and the one a
    reindex is filling (so that a memory updated, moved or deleted meanwhile is not left stale
    there; an updated memory loses its pending vectors and the reindex embeds it again)."""
    bound = current(conn)
    out = [bound.generation] if bound else []
    pending = get_setting(conn, "reindex")
    if pending and pending["generation"] not in out:
        out.append(pending["generation"])
    return out


def recorded_prompts(conn: apsw.Connection, sha256: str) -> Prompts | None:
    entry = (get_setting(conn, PROMPTS) or {}).get(sha256)
    return Prompts(**entry) if entry else None


def record_prompts(conn: apsw.Connection, sha256: str, prompts: Prompts) -> None:
    """Inside the caller's write transaction."""
    table = dict(get_setting(conn, PROMPTS) or {})
    table[sha256] = prompts.to_dict()
    set_setting(conn, PROMPTS, table)


def prompts_for(conn: apsw.Connection, sha256: str, *names: str) -> Prompts:
    """The prompts to embed with for the model `sha256`: recorded, else a well-known name's."""
    return recorded_prompts(conn, sha256) or by_name(*names)
