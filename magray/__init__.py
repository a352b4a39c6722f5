"""magray: a local-first memory for personal AI agents, in one SQLite file."""

from .errors import (Busy, InvalidInput, MagrayError, ModelError, ModelMismatch, NotFound,
                     SchemaTooNew, StoreError)
from .memory import Memory
from .types import AddResult, Filters, MemoryRecord, SearchHit, Status

__version__ = "0.1.0"
__all__ = ["Memory", "Filters", "MemoryRecord", "SearchHit", "AddResult", "Status", "MagrayError",
           "InvalidInput", "NotFound", "StoreError", "SchemaTooNew", "ModelError", "ModelMismatch", "Busy"]
