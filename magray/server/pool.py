"""Connections to one memory file for a server's worker threads: each call borrows one `Memory`
for the length of the call, so calls run side by side (SQLite readers never block each other in
WAL mode; writers take turns on the file lock) while all of them share one loaded model."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from ..memory import Memory

T = TypeVar("T")


class MemoryPool:
    """A fixed set of open `Memory` objects on one file; the first one owns the loaded model."""

    def __init__(self, members: list[Memory]) -> None:
        if not members:
            raise ValueError("a pool needs at least one Memory")
        self.members = list(members)
        self._free = list(reversed(members))
        self._limiter = anyio.CapacityLimiter(len(members))

    @classmethod
    def around(cls, memory: Memory, size: int) -> MemoryPool:
        """`memory` plus size - 1 more connections sharing its model (load the model first)."""
        return cls([memory] + [memory.another() for _ in range(max(1, size) - 1)])

    @property
    def primary(self) -> Memory:
        return self.members[0]

    async def run(self, fn: Callable[[Memory], T]) -> T:
        """Call fn(memory) in a worker thread with a connection nobody else is using."""
        async with self._limiter:
            memory = self._free.pop()
            try:
                # Not abandoned on cancel: the connection goes back only once its call is over.
                return await anyio.to_thread.run_sync(fn, memory)
            finally:
                self._free.append(memory)

    def close_extra(self) -> None:
        """Close every connection but the primary one (its owner closes it)."""
        for memory in self.members[1:]:
            memory.close()
        del self.members[1:]
