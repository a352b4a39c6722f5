"""`magray serve`: an MCP server over stdio, built on the official `mcp` SDK's low-level Server.

One `Memory` (and so one loaded embedding model) serves every call for the life of the process.
Calls run one at a time in a worker thread, so the event loop keeps reading the channel while the
model embeds. Every failure of a call comes back as a tool result with isError and a one-line
message; nothing a client sends can stop the server. stdout carries only the MCP channel; logs go
to stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import anyio
import jsonschema
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from .. import __version__
from ..errors import MagrayError
from ..memory import Memory
from .pool import MemoryPool
from .tools import TOOLS, TOOLS_BY_NAME, ToolSpec

log = logging.getLogger("magray.server")

T = TypeVar("T")

# A PASSIVE checkpoint after this many writing calls keeps the WAL near the size of that many writes.
CHECKPOINT_EVERY = 64
# After this many seconds without a writing call, a TRUNCATE checkpoint empties the WAL file (a
# PASSIVE one while the file is replicated: the facade never lets a TRUNCATE stall Litestream's writers).
IDLE_CHECKPOINT_S = 30.0
# How often the server looks whether a scheduled backup (`magray backup policy --every`) is due.
BACKUP_CHECK_S = 60.0
MAX_MESSAGE = 300

INSTRUCTIONS = (
    "magray is the user's long-term memory. Call recall before answering questions that may depend on "
    "what you were told earlier; call remember to keep facts, preferences and decisions worth "
    "knowing later (layer insights), or conversation context (layer interact, expires in a day)."
)


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class ArgumentError(Exception):
    """Arguments that do not match a tool's input schema; `where` names the argument."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where or "(arguments)"


def check_arguments(spec: ToolSpec, arguments: Any, validators: Mapping[str, Any]) -> dict[str, Any]:
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ArgumentError("arguments must be a JSON object")
    error = jsonschema.exceptions.best_match(validators[spec.name].iter_errors(arguments))
    if error is not None:
        raise ArgumentError(error.message, "/".join(str(p) for p in error.absolute_path))
    return arguments


class MemoryServer:
    """The MCP server around one open `Memory`."""

    def __init__(self, memory: Memory, *, checkpoint_every: int = CHECKPOINT_EVERY,
                 idle_checkpoint_s: float = IDLE_CHECKPOINT_S, pool: MemoryPool | None = None) -> None:
        self.memory = memory
        # stdio serves one client: one connection, one call at a time. HTTP passes a larger pool.
        self.pool = pool or MemoryPool([memory])
        self.checkpoint_every = checkpoint_every
        self.idle_checkpoint_s = idle_checkpoint_s
        self._validators = {t.name: jsonschema.Draft202012Validator(t.input_schema) for t in TOOLS}
        self._writes_since_checkpoint = 0
        self._dirty = False  # written since the last TRUNCATE
        self._last_write = time.monotonic()
        self.server: Server[Any] = Server(
            "magray", version=__version__, title="magray memory", instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
        )

    # -- MCP handlers ------------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=t.name, title=t.title, description=t.description, input_schema=t.input_schema,
                       annotations=types.ToolAnnotations(title=t.title, read_only_hint=t.read_only,
                                                         destructive_hint=t.destructive,
                                                         idempotent_hint=t.name != "remember" and not t.destructive,
                                                         open_world_hint=False))
            for t in TOOLS])

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = TOOLS_BY_NAME.get(params.name)
        if spec is None:
            return _error(f"unknown tool {params.name!r}: use one of {', '.join(TOOLS_BY_NAME)}")
        try:
            arguments = check_arguments(spec, params.arguments, self._validators)
            data = await self._in_worker(lambda mem: spec.run(mem, arguments))
        # The log names the failure, never the caller's values: they may be private memories.
        except ArgumentError as exc:
            log.info("%s: rejected argument %s", spec.name, exc.where)
            return _error(f"invalid arguments for {spec.name}: {exc}")
        except MagrayError as exc:
            log.info("%s: %s", spec.name, type(exc).__name__)
            return _error(f"{spec.name} failed: {exc}")
        except Exception as exc:  # a bug must not take the server (and the user's agent) down
            log.exception("%s: unexpected error", spec.name)
            return _error(f"{spec.name} failed: internal error ({type(exc).__name__}: {exc})")
        if spec.writes:
            await self._after_write()
        return types.CallToolResult(content=[types.TextContent(text=json.dumps(data, ensure_ascii=False))],
                                    structured_content=data)

    # -- the WAL -------------------------------------------------------------------------------

    async def _after_write(self) -> None:
        self._dirty, self._last_write = True, time.monotonic()
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint >= self.checkpoint_every:
            self._writes_since_checkpoint = 0
            await self._checkpoint("PASSIVE")

    async def _checkpoint(self, mode: str) -> None:
        try:
            result = await self._in_worker(lambda mem: mem.checkpoint(mode))
        except MagrayError as exc:  # another process holds the file: the next checkpoint catches up
            log.info("checkpoint %s skipped: %s", mode, exc)
            return
        log.debug("checkpoint %s (asked %s): %s", result["mode"], mode, result)
        if mode == "TRUNCATE" and not result["busy"]:
            self._dirty = False

    async def _scheduled_backups(self) -> None:
        """Take the backups of `magray backup policy --every` while serving."""
        while True:
            try:
                report = await self._in_worker(lambda mem: mem.backup_if_due())
            except MagrayError as exc:  # retried at the next check
                log.warning("scheduled backup failed: %s", exc)
            else:
                if report is not None:
                    log.info("scheduled backup written: %s", report.path)
            await anyio.sleep(BACKUP_CHECK_S)

    async def _idle_checkpoints(self) -> None:
        """Empty the WAL file once no call has written for a while (reads do not delay it)."""
        while True:
            idle = time.monotonic() - self._last_write
            if self._dirty and idle >= self.idle_checkpoint_s:
                await self._checkpoint("TRUNCATE")
                idle = 0.0
            await anyio.sleep(max(self.idle_checkpoint_s - idle, 0.05))

    async def after_write(self) -> None:
        """A write made beside MCP (the web page's API) counts toward the checkpoints too."""
        await self._after_write()

    @contextlib.asynccontextmanager
    async def wal_upkeep(self) -> AsyncIterator[None]:
        """While open, empty the WAL when writes pause; on exit, leave it empty if possible
        (for transports whose clients come and go, such as streamable HTTP)."""
        async with anyio.create_task_group() as tg:
            if self.idle_checkpoint_s > 0:
                tg.start_soon(self._idle_checkpoints)
            yield
            tg.cancel_scope.cancel()
        if self._dirty:
            await self._checkpoint("TRUNCATE")

    # -- running -------------------------------------------------------------------------------

    async def _in_worker(self, fn: Callable[[Memory], T]) -> T:
        return await self.pool.run(fn)

    async def serve(self, read_stream: Any, write_stream: Any) -> None:
        """Serve one client until it closes the channel, then leave the WAL empty if possible."""
        async with anyio.create_task_group() as tg:
            if self.idle_checkpoint_s > 0 and not self.memory.read_only:
                tg.start_soon(self._idle_checkpoints)
            if not self.memory.read_only:
                tg.start_soon(self._scheduled_backups)
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())
            tg.cancel_scope.cancel()
        if self._dirty and not self.memory.read_only:
            await self._checkpoint("TRUNCATE")

    async def serve_stdio(self) -> None:
        async with stdio_server() as (read_stream, write_stream):
            await self.serve(AnswerUnreadable(read_stream, write_stream), write_stream)


class AnswerUnreadable:
    """The transport's read stream, minus the lines it could not read. The SDK's stdio layer
    passes on a line that is not a JSON-RPC message (a lone surrogate, JSON nested deeper than
    its parser goes) as an exception, which the server only logs: the client would wait forever
    for its answer. Here each such line is answered with a JSON-RPC error carrying its id."""

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self._inner, self._write = inner, write_stream

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item
            await self._answer(item)

    def __aiter__(self) -> AnswerUnreadable:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> AnswerUnreadable:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _answer(self, exc: Exception) -> None:
        from mcp.shared.message import SessionMessage

        line, problem = unreadable_line(exc)
        code = types.PARSE_ERROR if problem.startswith("Invalid JSON") else types.INVALID_REQUEST
        request_id = top_level_id(line) if line is not None else None
        log.info("answered an unreadable message (id %r) with error %d", request_id, code)
        error = types.JSONRPCError(jsonrpc="2.0", id=request_id,
                                   error=types.ErrorData(code=code, message=one_line(problem)))
        await self._write.send(SessionMessage(error))


def unreadable_line(exc: Exception) -> tuple[str | None, str]:
    """The raw line a transport could not read (when the error carries it) and what was wrong."""
    errors = getattr(exc, "errors", None)
    try:
        first = errors()[0] if callable(errors) else None
    except Exception:  # noqa: BLE001 - any error object without details
        first = None
    if not first:
        return None, f"unreadable message: {type(exc).__name__}"
    line = first.get("input") if isinstance(first.get("input"), str) else None
    message = str(first.get("msg") or type(exc).__name__)
    return line, message if message.startswith("Invalid JSON") else f"not a JSON-RPC message: {message}"


def top_level_id(line: str) -> str | int | None:
    """The "id" member of a JSON object on one line, found without parsing the rest: walked
    without recursion (so any nesting is fine) and tolerant of text JSON parsers refuse (lone
    surrogate escapes). None when there is none, or when it is not a string or an integer."""
    decoder = json.JSONDecoder()
    depth, i, n = 0, 0, len(line)
    while i < n:
        ch = line[i]
        if ch == '"':
            try:
                text, end = decoder.raw_decode(line, i)
            except ValueError:
                return None
            j = end
            while j < n and line[j] in " \t\r\n":
                j += 1
            if depth == 1 and text == "id" and j < n and line[j] == ":":
                j += 1
                while j < n and line[j] in " \t\r\n":
                    j += 1
                if j >= n or line[j] in "{[":
                    return None
                try:
                    value, _ = decoder.raw_decode(line, j)
                except ValueError:
                    return None
                return value if isinstance(value, (str, int)) and not isinstance(value, bool) else None
            i = end
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        i += 1
    return None


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=one_line(message))], is_error=True)


def run_stdio(memory: Memory, *, checkpoint_every: int = CHECKPOINT_EVERY,
              idle_checkpoint_s: float = IDLE_CHECKPOINT_S) -> None:
    """Load the model, then serve MCP on stdin/stdout until the client closes the channel.
    Logs go where the CLI configured them (stderr or --log-file): stdout is the MCP channel."""
    binding = memory.load_model()
    log.info("serving %s with model %s on %s", memory.path, binding.model_name, memory.device())
    server = MemoryServer(memory, checkpoint_every=checkpoint_every, idle_checkpoint_s=idle_checkpoint_s)
    anyio.run(server.serve_stdio)
    log.info("client closed the channel; stopping")
