"""The web page's JSON API under /api/: search, browse, a memory's details, edit, move, forget,
unmerge, statistics and status. Every route is one call of the `Memory` facade in a worker thread,
and results are rendered by the same functions as the MCP tools (tools.memory_data, hit_data), so
the page, an agent and the CLI see the same memory the same way.

Reading from the page does not count as a use of a memory: a person inspecting is not an agent
relying on it (searches pass touch=False, details are read with touch=False).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..config import LAYERS
from ..errors import Busy, InvalidInput, MagrayError, ModelError, NotFound, StoreError
from ..memory import Memory
from ..timeutil import iso
from .pool import MemoryPool
from .tools import MAX_ID, MAX_K, filters_from, hit_data, memory_data

if TYPE_CHECKING:
    from .http import Security

log = logging.getLogger("magray.server")

PAGE_SIZE = 25
MAX_PAGE = 200
STATS_DAYS = 30

_STATUS = ((NotFound, 404), (InvalidInput, 400), (Busy, 503), (ModelError, 503), (StoreError, 500))


def error_response(exc: MagrayError) -> JSONResponse:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    message = " ".join(str(exc).split())
    return JSONResponse({"error": {"type": type(exc).__name__, "message": message}}, status)


# -- reading requests --------------------------------------------------------------------------------

def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be from {low} to {high}")
    return value


def _filter_fields(request: Request) -> dict[str, Any]:
    """The query string's filters, in the shape of the MCP tools' `filters` argument."""
    q = request.query_params
    raw: dict[str, Any] = {}
    layers = [layer for layer in q.getlist("layer") if layer]
    for layer in layers:
        if layer not in LAYERS:
            raise InvalidInput(f"unknown layer {layer!r}: use one of {', '.join(LAYERS)}")
    if layers:
        raw["layers"] = layers
    tags = [tag.strip() for tag in q.getlist("tag") if tag.strip()]
    if tags:
        raw["tags"] = tags
    for name in ("project", "session", "since", "until"):
        if q.get(name, "").strip():
            raw[name] = q[name].strip()
    if q.get("include_expired") in ("1", "true", "on"):
        raw["include_expired"] = True
    return raw


def _applied(raw: dict[str, Any], mem: Memory) -> dict[str, Any]:
    """The filters as applied: times resolved to the instants they meant at this moment."""
    filters = filters_from(raw, mem)
    applied = dict(raw)
    if filters.since is not None:
        applied["since"] = iso(filters.since)
    if filters.until is not None:
        applied["until"] = iso(filters.until)
    return applied


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()  # at most 4 MiB: http.py puts the SDK's body limit in front
    if not raw:
        return {}
    if not request.headers.get("content-type", "").lower().startswith("application/json"):
        raise InvalidInput("send the body as application/json")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def _memory_id(request: Request) -> int:
    memory_id = int(request.path_params["memory_id"])
    if not 1 <= memory_id <= MAX_ID:
        raise NotFound(f"no memory with id {memory_id}")
    return memory_id


# -- the handlers (each runs in a worker thread with its own connection) ----------------------------

def search(mem: Memory, request: Request) -> dict[str, Any]:
    q = request.query_params
    query = q.get("q", "")
    raw = _filter_fields(request)
    k = _int(q, "k", 10, 1, MAX_K)
    mode = q.get("mode") or "hybrid"
    every = q.get("all", "") in ("1", "true", "on")
    hits = mem.search(query, k=k, mode=mode, filters=filters_from(raw, mem), touch=False,
                      min_score=0.0 if every else None)
    return {"query": query, "mode": mode, "k": k, "filters": _applied(raw, mem),
            "window": hits[0].parts.get("window") if hits else None, "all": every,
            "results": [hit_data(h) for h in hits], "count": len(hits)}


def browse(mem: Memory, request: Request) -> dict[str, Any]:
    q = request.query_params
    raw = _filter_fields(request)
    limit = _int(q, "limit", PAGE_SIZE, 1, MAX_PAGE)
    offset = _int(q, "offset", 0, 0, 2**31)
    found = mem.list(filters_from(raw, mem), limit=limit + 1, offset=offset)
    return {"memories": [memory_data(m) for m in found[:limit]], "count": min(len(found), limit),
            "offset": offset, "limit": limit, "more": len(found) > limit, "filters": _applied(raw, mem)}


def details(mem: Memory, memory_id: int) -> dict[str, Any]:
    record = mem.get(memory_id, touch=False, include_expired=True)
    data = memory_data(record)
    data["aliases"] = [memory_data(a) for a in mem.aliases(memory_id)]
    return data


def edit(mem: Memory, memory_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Tags first: a bad tag (the likelier mistake) is refused before the content is touched."""
    unknown = set(body) - {"content", "importance", "tags"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
    changes = {name: body[name] for name in ("content", "importance") if body.get(name) is not None}
    if "tags" not in body and not changes:
        raise InvalidInput("nothing to change: send content, importance or tags")
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidInput("tags must be a list of strings")
        current = mem.get(memory_id, touch=False, include_expired=True).tags
        wanted = [t.strip() for t in tags if t.strip()]
        mem.tag(memory_id, add=[t for t in wanted if t not in current],
                remove=[t for t in current if t not in wanted])
    if changes:
        mem.update(memory_id, **changes)
    return details(mem, memory_id)


def move(mem: Memory, memory_id: int, body: dict[str, Any]) -> dict[str, Any]:
    to = body.get("to")
    if not isinstance(to, str):
        raise InvalidInput("name the layer to move to: {\"to\": \"insights\"}")
    mem.promote(memory_id, to, reason="moved on the web page")
    return details(mem, memory_id)


def forget(mem: Memory, memory_id: int, hard: bool) -> dict[str, Any]:
    mem.delete(memory_id, hard=hard)
    return {"id": memory_id, "deleted": "purged" if hard else "soft"}


def unmerge(mem: Memory, memory_id: int) -> dict[str, Any]:
    result = mem.unmerge(memory_id)
    return result | {"memory": details(mem, memory_id)}


def scopes(mem: Memory) -> dict[str, Any]:
    return {"projects": mem.scopes("projects"), "sessions": mem.scopes("sessions"), "tags": mem.tags(),
            "layers": list(LAYERS)}


def stats(mem: Memory, days: int) -> dict[str, Any]:
    status = mem.status()
    return mem.stats(days) | {"cache": status.cache, "size_bytes": status.size_bytes,
                              "wal_bytes": status.wal_bytes, "counts": status.counts}


def status(mem: Memory) -> dict[str, Any]:
    return mem.status().to_dict() | {"durability": mem.durability(), "version": __version__}


# -- routes ------------------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def routes(pool: MemoryPool, security: Security, on_write: Callable[[], Awaitable[None]]) -> list[Route]:
    def endpoint(fn: Callable[[Memory, Request, dict[str, Any]], dict[str, Any]], *, writes: bool = False) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                body = await _body(request) if request.method in ("POST", "PATCH", "PUT") else {}
                data = await pool.run(lambda mem: fn(mem, request, body))
            except MagrayError as exc:
                return error_response(exc)
            except Exception as exc:  # a bug answers 500 with one line; the server goes on
                log.exception("%s %s: unexpected error", request.method, request.url.path)
                return JSONResponse({"error": {"type": type(exc).__name__, "message": "internal error"}}, 500)
            if writes:
                await on_write()
            return JSONResponse(data)

        return handle

    async def session(request: Request) -> Response:
        authenticated = security.token is None or security.bearer_ok(request.headers) \
            or security.cookie_ok(request.headers)
        return JSONResponse({"auth_required": security.token is not None, "authenticated": authenticated,
                             "csrf": security.csrf if authenticated else None, "version": __version__})

    async def login(request: Request) -> Response:
        try:
            body = await _body(request)
        except MagrayError as exc:
            return error_response(exc)
        given = body.get("token")
        if security.token is None:
            return JSONResponse({"ok": True})
        if not isinstance(given, str) or not hmac.compare_digest(given.strip().encode(), security.token.encode()):
            return JSONResponse({"error": {"type": "Refused", "message": "wrong token"}}, 401)
        response = JSONResponse({"ok": True, "csrf": security.csrf})
        response.set_cookie("magray_auth", security.cookie_value(), httponly=True, samesite="strict",
                            path="/api/")
        return response

    one = "/api/memories/{memory_id:int}"
    return [
        Route("/api/session", session),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/search", endpoint(lambda mem, req, body: search(mem, req))),
        Route("/api/memories", endpoint(lambda mem, req, body: browse(mem, req))),
        Route(one, endpoint(lambda mem, req, body: details(mem, _memory_id(req)))),
        Route(one, endpoint(lambda mem, req, body: edit(mem, _memory_id(req), body), writes=True), methods=["PATCH"]),
        Route(one, endpoint(lambda mem, req, body: forget(mem, _memory_id(req), req.query_params.get("hard") == "1"),
                            writes=True), methods=["DELETE"]),
        Route(one + "/move", endpoint(lambda mem, req, body: move(mem, _memory_id(req), body), writes=True),
              methods=["POST"]),
        Route(one + "/unmerge", endpoint(lambda mem, req, body: unmerge(mem, _memory_id(req)), writes=True),
              methods=["POST"]),
        Route("/api/scopes", endpoint(lambda mem, req, body: scopes(mem))),
        Route("/api/stats", endpoint(lambda mem, req, body: stats(mem, _int(req.query_params, "days", STATS_DAYS, 1, 366)))),
        Route("/api/status", endpoint(lambda mem, req, body: status(mem))),
    ]
