"""`magray serve --http [HOST:]PORT`: the MCP tools over the official SDK's streamable HTTP transport
at /mcp, the web page at / and its JSON API under /api/, from one process and one loaded model.

Closed by default: it listens on loopback unless told otherwise, and any other address needs a
bearer token. Every request passes `Guard` first: the Host header must name the loopback address
on a loopback bind (DNS rebinding), a browser's Origin must be this server's own (no CORS), the
token is checked when one is set, and the page's writing requests must carry the CSRF token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from mcp.server.transport_security import (DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware,
                                           TransportSecuritySettings)
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInput
from ..memory import Memory
from . import api
from .mcp_server import CHECKPOINT_EVERY, IDLE_CHECKPOINT_S, MemoryServer
from .pool import MemoryPool

log = logging.getLogger("magray.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Connections in the pool: calls beyond this many wait their turn. Reads run side by side (WAL);
# the model embeds one text at a time whatever the count.
CONNECTIONS = 4
MIN_TOKEN_CHARS = 16
WEB_DIR = Path(__file__).resolve().parent / "web"
AUTH_COOKIE = "magray_auth"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
# The page loads only its own files: no inline script, nothing from elsewhere.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


# -- where to listen, and the token -----------------------------------------------------------------

def parse_listen(value: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPv6]:PORT` -> (host, port)."""
    text = value.strip()
    host, port_text = DEFAULT_HOST, text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            raise InvalidInput(f"--http {value!r}: write an IPv6 address as [ADDR]:PORT")
        host, port_text = text[1:end], text[end + 2:]
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidInput(f"--http {value!r}: the port must be a number, as in 127.0.0.1:{DEFAULT_PORT}") from None
    if not 0 <= port <= 65535:
        raise InvalidInput(f"--http {value!r}: the port must be from 0 to 65535")
    if not host:
        raise InvalidInput(f"--http {value!r}: the host is empty")
    return host, port


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(env_token: str | None, token_file: Path | None) -> tuple[str | None, bool]:
    """The bearer token from $MAGRAY_TOKEN or --token-file, and whether it was just generated
    (a missing token file is created 0600 with a new random token)."""
    if env_token:
        token = env_token.strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise InvalidInput(f"MAGRAY_TOKEN is too short: use at least {MIN_TOKEN_CHARS} characters")
        return token, False
    if token_file is None:
        return None, False
    token_file = Path(token_file).expanduser()
    try:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if token_file.stat().st_mode & 0o077:
            raise InvalidInput(f"{token_file} can be read by other users: chmod 600 it") from None
        token = token_file.read_text(encoding="utf-8").strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise InvalidInput(f"the token in {token_file} is too short: use at least {MIN_TOKEN_CHARS} characters")
        return token, False
    except OSError as exc:
        raise InvalidInput(f"cannot create the token file {token_file}: {exc.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return token, True


# -- the guard in front of every route --------------------------------------------------------------

@dataclass
class Security:
    loopback: bool
    token: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def cookie_value(self) -> str:
        """What the page's cookie holds after it logged in: derived from the token, not the token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"magray page session", hashlib.sha256).hexdigest()

    def bearer_ok(self, headers: Headers) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return (self.token is not None and scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), self.token.encode()))

    def cookie_ok(self, headers: Headers) -> bool:
        if self.token is None:
            return False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no credential
            return False
        morsel = cookie.get(AUTH_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.cookie_value().encode())


# What needs no token: the page's own files (they hold no data), and how the page learns
# whether to ask for the token and hands it over.
OPEN_PATHS = ("/", "/favicon.ico", "/api/session", "/api/login")
WRITING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Guard:
    """ASGI middleware: Host, Origin, token and CSRF checks, then security headers on the answer."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            status, message = refusal
            log.info("refused %s %s: %s", scope["method"], scope["path"], message)
            headers = {"www-authenticate": 'Bearer realm="magray"'} if status == 401 else None
            response = JSONResponse({"error": {"type": "Refused", "message": message}}, status, headers=headers)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    def check(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.security.loopback and not _host_is_loopback(host):
            return 421, f"this server answers only to a loopback host name, not {host!r}"
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
            return 403, "requests from another origin are refused"
        path, method = scope["path"], scope["method"]
        bearer = self.security.bearer_ok(headers)
        if self.security.token is not None and not _is_open(path):
            if not (bearer or (path.startswith("/api/") and self.security.cookie_ok(headers))):
                return 401, "a valid bearer token is required"
        if path.startswith("/api/") and method in WRITING_METHODS and path != "/api/login" and not bearer:
            given = headers.get("x-csrf-token", "")
            if not hmac.compare_digest(given.encode(), self.security.csrf.encode()):
                return 403, "missing or wrong CSRF token"
        return None

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        return wrapped


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


def _host_is_loopback(host: str) -> bool:
    if host.startswith("["):
        name = host[: host.find("]") + 1]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return is_loopback(name)


# -- the application --------------------------------------------------------------------------------

def build_app(pool: MemoryPool, *, host: str, token: str | None,
              checkpoint_every: int = CHECKPOINT_EVERY, idle_checkpoint_s: float = IDLE_CHECKPOINT_S) -> Starlette:
    """The ASGI app: /mcp (the SDK's streamable HTTP transport), / and /static (the page), /api/."""
    security = Security(loopback=is_loopback(host), token=token)
    mcp_server = MemoryServer(pool.primary, checkpoint_every=checkpoint_every,
                              idle_checkpoint_s=idle_checkpoint_s, pool=pool)
    # The SDK's own Host/Origin checks stay on for loopback binds; Guard covers every route.
    names = ["127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host]
    transport_security = TransportSecuritySettings(
        enable_dns_rebinding_protection=security.loopback,
        allowed_hosts=[f"{name}:*" for name in names],
        allowed_origins=[f"http://{name}:*" for name in names],
    )
    mcp_app = mcp_server.server.streamable_http_app(streamable_http_path="/mcp",
                                                    transport_security=transport_security, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp_server.server.session_manager.run(), mcp_server.wal_upkeep():
            yield

    async def index(request: Any) -> Response:
        return Response((WEB_DIR / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"cache-control": "no-store"})

    routes = [
        *mcp_app.routes,
        Route("/", index),
        Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
        *api.routes(pool, security, on_write=mcp_server.after_write),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # The SDK's body limit for /mcp applies to the page's API too (a memory is at most 1M characters).
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=DEFAULT_MAX_REQUEST_BODY_SIZE)
    app.add_middleware(Guard, security=security)  # added last: it runs first
    return app


def run_http(memory: Memory, host: str, port: int, *, token: str | None, connections: int = CONNECTIONS,
             checkpoint_every: int = CHECKPOINT_EVERY, idle_checkpoint_s: float = IDLE_CHECKPOINT_S,
             on_ready: Callable[[str], None] | None = None) -> None:
    """Load the model, then serve until interrupted (SIGINT/SIGTERM). `on_ready` gets the base URL
    once the socket listens (port 0 picks a free port)."""
    import uvicorn

    if not is_loopback(host) and token is None:
        raise InvalidInput(f"listening on {host} needs a token: set MAGRAY_TOKEN or pass --token-file PATH")
    binding = memory.load_model()
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound_port}/"
    pool = MemoryPool.around(memory, connections)
    try:
        app = build_app(pool, host=host, token=token, checkpoint_every=checkpoint_every,
                        idle_checkpoint_s=idle_checkpoint_s)
        log.info("serving %s with model %s on %s at %s (MCP at %smcp)", memory.path, binding.model_name,
                 memory.device(), url, url)

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if on_ready is not None and not self.should_exit:
                    on_ready(url)

            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                # SIGINT / SIGTERM are how a server is asked to stop: once it has, exit 0 rather
                # than have uvicorn raise the signal again.
                self._captured_signals.clear()

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
        pool.close_extra()
    log.info("stopped")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every answer on a kept-alive connection waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
