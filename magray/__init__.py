"""magray: a local-first memory for personal AI agents, in one SQLite file.

    from magray import Memory, Filters
    with Memory.open("memory.db") as mem:
        mem.add("The user prefers dark mode", layer="insights")
        hits = mem.search("which theme does the user like?")

The names below are imported on first use, so that `magray --help` and other light commands do not
pay for loading the whole library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Memory": "memory",
    "Filters": "types", "MemoryRecord": "types", "SearchHit": "types", "AddResult": "types", "Status": "types",
    "MagrayError": "errors", "InvalidInput": "errors", "NotFound": "errors", "StoreError": "errors",
    "SchemaTooNew": "errors", "ModelError": "errors", "ModelMismatch": "errors", "Busy": "errors",
    "ReplicaError": "errors",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .errors import (Busy, InvalidInput, MagrayError, ModelError, ModelMismatch, NotFound,
                         ReplicaError, SchemaTooNew, StoreError)
    from .memory import Memory
    from .types import AddResult, Filters, MemoryRecord, SearchHit, Status


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'magray' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
