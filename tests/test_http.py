"""`magray serve --http` as agents and scripts see it: a real subprocess, the official MCP SDK's
streamable HTTP client, the real model. Also the closed-by-default rules: a token on any address
but loopback (401 without it), foreign Origins and Host names refused, CSRF on the page's writes."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from helpers import http_server
from helpers.reliability import run_cli, subprocess_env
from test_mcp import TOOLS, call  # one way to call a tool and check its result, stdio or HTTP

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return subprocess_env(tmp_path)


@pytest.fixture
def server(db_path, env):
    srv = http_server.start(db_path, env)
    yield srv
    code, log = srv.stop()
    assert code == 0, log


@asynccontextmanager
async def mcp_session(url: str, token: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # Not a timing assertion: a generous bound so that a stuck server fails the test, not hangs it.
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120)) as client:
        async with streamable_http_client(url + "mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def test_mcp_over_http_lists_tools_remembers_and_recalls(server, db_path):
    facts = ["The user prefers dark mode in every editor and terminal",
             "Deploys to production happen on Thursday afternoons",
             "The user's daughter is called Lena and plays the cello"]

    async def scenario():
        async with mcp_session(server.url) as s:
            tools = (await s.list_tools()).tools
            ids = [(await call(s, "remember", content=f, layer="insights", tags=["t"]))["id"] for f in facts]
            found = await call(s, "recall", query="which colour scheme does the person like?", k=2)
            bad_type = await s.call_tool("recall", {"query": "x", "k": "many"})
            bad_extra = await s.call_tool("remember", {"content": "x", "colour": "red"})
            missing = await s.call_tool("get", {"id": 999999})
            unknown = await s.call_tool("teleport", {})
            stats = await call(s, "stats")
            return tools, ids, found, (bad_type, bad_extra, missing, unknown), stats

    tools, ids, found, errors, stats = anyio.run(scenario)
    assert {t.name for t in tools} == TOOLS
    assert len(set(ids)) == 3
    top = found["results"][0]
    assert top["id"] == ids[0] and top["content"] == facts[0] and "similarity" in top["scores"]
    for result in errors:
        assert result.is_error
        text = result.content[0].text
        assert text.strip() and "\n" not in text
    assert "k" in errors[0].content[0].text and "colour" in errors[1].content[0].text
    assert stats["counts"]["insights"] == 3
    # What the server wrote is in the file, for any other process to read.
    from magray import Memory

    with Memory.open(db_path, create=False) as mem:
        assert mem.get(ids[1], touch=False).content == facts[1]


def test_eight_clients_at_once(server):
    """Eight MCP sessions at once, each remembering its own fact then recalling it by meaning."""
    topics = ["sailing boats", "sourdough bread", "jazz piano", "mountain bikes", "tax forms",
              "orchid care", "chess openings", "rust lifetimes"]
    results: dict[int, tuple[int, list[int]]] = {}

    async def client(i: int) -> None:
        async with mcp_session(server.url) as s:
            added = await call(s, "remember", content=f"Client {i} keeps notes about {topics[i]}", layer="insights",
                               project=f"client-{i}")
            found = await call(s, "recall", query=f"notes on {topics[i]}", k=3, filters={"project": f"client-{i}"})
            results[i] = (added["id"], [r["id"] for r in found["results"]])

    async def scenario():
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(client, i)

    anyio.run(scenario)
    assert len(results) == 8
    assert len({added for added, _ in results.values()}) == 8
    for added, found in results.values():
        assert found == [added]


def test_a_non_loopback_bind_needs_the_token(db_path, env, tmp_path):
    env = dict(env, MAGRAY_TOKEN=TOKEN)
    srv = http_server.start(db_path, env, "0.0.0.0:0")
    try:
        base = f"http://127.0.0.1:{srv.port}/"
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "0"}}}
        headers = {"Accept": "application/json, text/event-stream"}
        with httpx2.Client() as http:
            no_token = http.post(base + "mcp", json=init, headers=headers)
            wrong = http.post(base + "mcp", json=init, headers=headers | {"Authorization": "Bearer wrong-token-123456789"})
            api_no_token = http.get(base + "api/status")
            page = http.get(base)
            session = http.get(base + "api/session").json()
            bad_login = http.post(base + "api/login", json={"token": "nope"})
            login = http.post(base + "api/login", json={"token": TOKEN})
            with_cookie = http.get(base + "api/status")  # the client keeps the cookie

        async def scenario():
            async with mcp_session(base, TOKEN) as s:
                return await call(s, "remember", content="reachable with the token", layer="insights")

        added = anyio.run(scenario)
    finally:
        code, log = srv.stop()
    assert no_token.status_code == 401 and wrong.status_code == 401
    assert no_token.headers["www-authenticate"].lower().startswith("bearer")
    assert api_no_token.status_code == 401
    assert page.status_code == 200 and "magray" in page.text  # the page itself holds no data
    assert session == {"auth_required": True, "authenticated": False, "csrf": None, "version": session["version"]}
    assert bad_login.status_code == 401 and login.status_code == 200
    assert "httponly" in login.headers["set-cookie"].lower() and TOKEN not in login.headers["set-cookie"]
    assert with_cookie.status_code == 200 and with_cookie.json()["counts"]
    assert added["created"] is True
    assert code == 0, log
    assert TOKEN not in log


def test_non_loopback_without_a_token_is_refused(db_path, env):
    proc = run_cli(db_path, env, "serve", "--http", "0.0.0.0:0")
    assert proc.returncode == 2
    assert "needs a token" in proc.stderr and "MAGRAY_TOKEN" in proc.stderr


def test_a_token_file_is_generated_private_and_printed_once(db_path, env, tmp_path):
    token_file = tmp_path / "token"
    first = http_server.start(db_path, env, "0.0.0.0:0", "--token-file", str(token_file))
    first.stop()
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token) >= 32 and any(token in line for line in first.lines)
    second = http_server.start(db_path, env, "0.0.0.0:0", "--token-file", str(token_file))
    try:
        with httpx2.Client() as http:
            ok = http.get(f"http://127.0.0.1:{second.port}/api/status", headers={"Authorization": f"Bearer {token}"})
    finally:
        second.stop()
    assert not any(token in line for line in second.lines)
    assert ok.status_code == 200
    os.chmod(token_file, 0o644)
    proc = run_cli(db_path, env, "serve", "--http", "0.0.0.0:0", "--token-file", str(token_file))
    assert proc.returncode == 2 and "chmod 600" in proc.stderr


def test_foreign_origins_and_host_names_are_refused(server):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx2.Client() as http:
        mcp_foreign = http.post(server.url + "mcp", json=init, headers=headers | {"Origin": "http://evil.example"})
        api_foreign = http.get(server.url + "api/status", headers={"Origin": "http://evil.example"})
        page_foreign = http.get(server.url, headers={"Origin": "null"})
        rebound = http.get(server.url + "api/status", headers={"Host": f"evil.example:{server.port}"})
        same_origin = http.get(server.url + "api/status", headers={"Origin": server.url.rstrip("/")})
        page = http.get(server.url)
    assert mcp_foreign.status_code == 403 and api_foreign.status_code == 403 and page_foreign.status_code == 403
    assert rebound.status_code == 421
    assert same_origin.status_code == 200
    assert "access-control-allow-origin" not in {k.lower() for k in same_origin.headers}
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_the_api_edits_only_with_the_csrf_token(server, db_path):
    from magray import Memory

    with httpx2.Client(base_url=server.url) as http:
        csrf = http.get("/api/session").json()["csrf"]
        with Memory.open(db_path, create=False) as mem:
            memory_id = mem.add("The office wifi password is on the fridge", layer="insights", dedup=False).id
        without = http.patch(f"/api/memories/{memory_id}", json={"content": "changed"})
        wrong = http.patch(f"/api/memories/{memory_id}", json={"content": "changed"}, headers={"X-CSRF-Token": "x"})
        edited = http.patch(f"/api/memories/{memory_id}", json={"content": "The wifi password is in the drawer",
                                                                 "tags": ["home", "wifi"], "importance": 0.9},
                            headers={"X-CSRF-Token": csrf})
        with Memory.open(db_path, create=False) as mem:
            in_file = mem.get(memory_id, touch=False)
        moved = http.post(f"/api/memories/{memory_id}/move", json={"to": "assets"}, headers={"X-CSRF-Token": csrf})
        bad = http.patch(f"/api/memories/{memory_id}", json={"importance": 7}, headers={"X-CSRF-Token": csrf})
        search = http.get("/api/search", params={"q": "where is the wifi password?", "since": "1h"}).json()
        browse = http.get("/api/memories", params={"layer": "assets", "tag": "wifi", "limit": 1}).json()
        stats = http.get("/api/stats").json()
        scopes = http.get("/api/scopes").json()
        forgotten = http.delete(f"/api/memories/{memory_id}", headers={"X-CSRF-Token": csrf})
        gone = http.get(f"/api/memories/{memory_id}")
    assert without.status_code == 403 and wrong.status_code == 403
    assert edited.status_code == 200, edited.text
    assert edited.json()["tags"] == ["home", "wifi"] and edited.json()["importance"] == 0.9
    assert moved.json()["layer"] == "assets"
    assert bad.status_code == 400 and "importance" in bad.json()["error"]["message"]
    assert search["results"][0]["id"] == memory_id and search["filters"]["since"].endswith("Z")
    assert [m["id"] for m in browse["memories"]] == [memory_id]
    assert forgotten.status_code == 200 and gone.status_code == 404
    assert in_file.content == "The wifi password is in the drawer" and in_file.tags == ["home", "wifi"]
    assert stats["counters"]["searches"] >= 1 and stats["layers_by_month"]
    assert {t["name"]: t["memories"] for t in scopes["tags"]} == {"home": 1, "wifi": 1}


@pytest.mark.parametrize("text, expected", [
    ("8765", ("127.0.0.1", 8765)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("localhost:0", ("localhost", 0)),
    ("[::1]:9000", ("::1", 9000)), ("192.168.1.20:8765", ("192.168.1.20", 8765)),
])
def test_listen_addresses(text, expected):
    from magray.server.http import parse_listen

    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:http", "70000", "[::1]9000", ":8765"])
def test_bad_listen_addresses_are_one_line_errors(text):
    from magray import InvalidInput
    from magray.server.http import parse_listen

    with pytest.raises(InvalidInput) as error:
        parse_listen(text)
    assert "\n" not in str(error.value)


def test_loopback_names_and_a_short_token():
    from magray import InvalidInput
    from magray.server.http import is_loopback, resolve_token

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.20", "example.com"))
    with pytest.raises(InvalidInput):
        resolve_token("short", None)
    assert resolve_token(TOKEN, None) == (TOKEN, False)


def test_the_listening_socket_is_tcp_so_answers_are_not_delayed():
    """asyncio sets TCP_NODELAY on accepted sockets only when the socket names IPPROTO_TCP;
    without it each answer on a kept-alive connection waited for a delayed ACK."""
    import socket

    from magray.server.http import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_the_api_shows_merged_aliases_and_unmerges_them(server, db_path):
    from magray import Memory

    with Memory.open(db_path, create=False) as mem:
        survivor = mem.add("The user prefers dark mode in the code editor", layer="insights").id
        alias = mem.add("The user prefers dark mode in the code editor.", layer="insights")
    assert alias.merged_into == survivor  # a near-duplicate, kept as an alias
    with httpx2.Client(base_url=server.url) as http:
        csrf = http.get("/api/session").json()["csrf"]
        before = http.get(f"/api/memories/{survivor}").json()
        as_alias = http.get(f"/api/memories/{alias.id}").json()
        unmerged = http.post(f"/api/memories/{alias.id}/unmerge", json={}, headers={"X-CSRF-Token": csrf})
        again = http.post(f"/api/memories/{alias.id}/unmerge", json={}, headers={"X-CSRF-Token": csrf})
        after = http.get(f"/api/memories/{survivor}").json()
    assert [a["id"] for a in before["aliases"]] == [alias.id]
    assert as_alias["merged_into"] == survivor
    assert unmerged.status_code == 200 and unmerged.json()["was_merged_into"] == survivor
    assert "merged_into" not in unmerged.json()["memory"]
    assert again.status_code == 400 and "not merged" in again.json()["error"]["message"]
    assert after["aliases"] == []


def test_bad_api_requests_are_one_line_errors(server):
    with httpx2.Client(base_url=server.url) as http:
        csrf = {"X-CSRF-Token": http.get("/api/session").json()["csrf"]}
        answers = [
            http.patch("/api/memories/1", content=b"{not json", headers=csrf | {"content-type": "application/json"}),
            http.patch("/api/memories/1", json=[1, 2], headers=csrf),
            http.patch("/api/memories/1", json={"colour": "red"}, headers=csrf),
            http.get("/api/search", params={"q": "x", "k": "many"}),
            http.get("/api/search", params={"q": "x", "layer": "attic"}),
            http.get("/api/search", params={"q": "x", "mode": "psychic"}),
            http.get("/api/search", params={"q": "  "}),
            http.get("/api/memories", params={"since": "the day the music died"}),
            http.get(f"/api/memories/{2**70}"),
        ]
    assert [a.status_code for a in answers] == [400] * 8 + [404]
    for answer in answers:
        message = answer.json()["error"]["message"]
        assert message.strip() and "\n" not in message


def test_the_server_leaves_the_wal_empty_when_it_stops(db_path, env):
    """Another process keeps the file open (so closing the server's connections does not clean up
    the WAL by itself): the server empties the WAL on its way out."""
    from magray import Memory

    srv = http_server.start(db_path, env)

    async def scenario():
        async with mcp_session(srv.url) as s:
            for i in range(5):
                await call(s, "remember", content=f"fact number {i} worth keeping", layer="insights")

    with Memory.open(db_path, create=False) as other:
        try:
            anyio.run(scenario)
            wal = db_path.with_name(db_path.name + "-wal")
            written = wal.stat().st_size
        finally:
            code, log = srv.stop()
        assert code == 0, log
        assert written > 0 and wal.stat().st_size == 0
        assert other.status().counts["insights"] == 5


def test_a_token_file_without_http_is_a_usage_error(db_path, env, tmp_path):
    proc = run_cli(db_path, env, "serve", "--token-file", str(tmp_path / "token"))
    assert proc.returncode == 2 and "--token-file goes with --http" in proc.stderr
    assert not (tmp_path / "token").exists()
