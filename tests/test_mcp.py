"""`magray serve` as an agent sees it: a real subprocess, the official MCP client over stdio, the real
model. Also several servers and a CLI writer on one file, and the WAL under a long-running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

from magray import InvalidInput, Memory  # noqa: E402

from conftest import ROOT  # noqa: E402

TOOLS = {"remember", "recall", "get", "forget", "promote", "list_recent", "stats"}


def server_env(model: Path) -> dict[str, str]:
    # The client passes only a few variables by default; the server needs the test's private XDG
    # dirs, this checkout on PYTHONPATH, and the model.
    env = dict(os.environ, MAGRAY_MODEL=str(model))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@asynccontextmanager
async def serve(db: Path, model: Path, log: Path, *extra: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "magray", "serve", "--db", str(db), *extra],
                                   env=server_env(model), cwd=str(ROOT))
    with open(log, "a", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    data = json.loads(result.content[0].text)
    assert data == result.structured_content
    return data


async def call_error(session: ClientSession, tool: str, arguments: Any) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    text = result.content[0].text
    assert "\n" not in text and text.strip()
    return text


def run(fn, *args):
    return anyio.run(fn, *args)


@pytest.fixture
def log_path(tmp_path) -> Path:
    return tmp_path / "serve.log"


def test_tools_are_listed_with_schemas(db_path, model_path, log_path):
    async def scenario():
        async with serve(db_path, model_path, log_path) as s:
            return (await s.list_tools()).tools

    tools = {t.name: t for t in run(scenario)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 40
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema["additionalProperties"] is False
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description") or prop.get("$ref"), (tool.name, name)
    assert tools["remember"].input_schema["required"] == ["content"]
    assert tools["recall"].input_schema["properties"]["filters"]["properties"]["layers"]
    assert tools["stats"].annotations.read_only_hint and tools["forget"].annotations.destructive_hint


def test_remember_recall_by_paraphrase_get_promote_forget(db_path, model_path, log_path):
    facts = ["The user prefers dark mode in every editor and terminal",
             "Deploys to production happen on Thursday afternoons",
             "The user's daughter is called Lena and plays the cello"]

    async def scenario():
        async with serve(db_path, model_path, log_path) as s:
            ids = [(await call(s, "remember", content=f, layer="insights", tags=["t"], project="home",
                               metadata={"n": i}, ttl="90d"))["id"] for i, f in enumerate(facts)]
            again = await call(s, "remember", content=facts[0], layer="insights", project="home")
            found = await call(s, "recall", query="which colour scheme does the person like?", k=2)
            text = await call(s, "recall", query="cello", mode="text",
                              filters={"layers": ["insights"], "tags": ["t"], "project": "home", "since": "1h"})
            got = await call(s, "get", id=ids[1])
            promoted = await call(s, "promote", id=ids[1], to="assets", reason="stable fact")
            recent = await call(s, "list_recent", limit=10, filters={"layers": ["assets"]})
            forgotten = await call(s, "forget", id=ids[0])
            after = await call(s, "recall", query="which colour scheme does the person like?", k=3)
            missing = await call_error(s, "get", {"id": ids[0]})
            stats = await call(s, "stats")
            return ids, again, found, text, got, promoted, recent, forgotten, after, missing, stats

    ids, again, found, text, got, promoted, recent, forgotten, after, missing, stats = run(scenario)
    assert again == {"id": ids[0], "created": False, "layer": "insights"}
    top = found["results"][0]
    assert top["id"] == ids[0] and top["content"] == facts[0] and top["layer"] == "insights"
    assert top["score"] > 0 and "similarity" in top["scores"]
    assert [r["id"] for r in text["results"]] == [ids[2]]
    assert got["content"] == facts[1] and got["metadata"] == {"n": 1} and got["tags"] == ["t"]
    assert promoted["layer"] == "assets" and promoted.get("expires_at") is None
    assert [m["id"] for m in recent["memories"]] == [ids[1]]
    assert forgotten == {"id": ids[0], "deleted": "soft"}
    assert ids[0] not in [r["id"] for r in after["results"]]
    assert f"no memory with id {ids[0]}" in missing
    assert stats["counts"] == {"interact": 0, "insights": 1, "assets": 1}
    assert stats["model"]["dim"] == 384


BAD_CALLS = [
    ("recall", {"query": 42}, "query: 42 is not of type 'string'"),
    ("recall", {"query": "x", "k": "five"}, "k:"),
    ("recall", {"query": "x", "k": 10**9}, "maximum of 100"),
    ("recall", {"query": "x", "k": 0}, "minimum of 1"),
    ("recall", {"query": "x", "mode": "psychic"}, "mode:"),
    ("recall", {"query": "x", "filters": {"layers": ["attic"]}}, "filters/layers/0"),
    ("recall", {"query": "x", "filters": {"since": "last tuesday-ish"}}, "bad time"),
    ("recall", {"query": "   "}, "the query is empty"),
    ("recall", {}, "'query' is a required property"),
    ("remember", {"content": "x", "layer": "attic"}, "layer: 'attic' is not one of"),
    ("remember", {"content": ["not", "text"]}, "content:"),
    ("remember", {"content": "x", "tags": ["has space"]}, "tags/0"),
    ("remember", {"content": "x", "ttl": -5}, "ttl"),
    ("remember", {"content": "x", "ttl": "soon"}, "bad duration"),
    ("remember", {"content": "x", "colour": "red"}, "'colour' was unexpected"),
    ("get", {"id": "seven"}, "id:"),
    ("get", {"id": 2**70}, "id:"),
    ("forget", {"id": 123456}, "no memory with id 123456"),
    ("promote", {"id": 1, "to": "attic"}, "to:"),
    ("list_recent", {"limit": 5000}, "maximum of 100"),
    ("no_such_tool", {}, "unknown tool"),
]


def test_malformed_arguments_come_back_as_tool_errors(db_path, model_path, log_path):
    async def scenario():
        async with serve(db_path, model_path, log_path) as s:
            messages = [await call_error(s, tool, args) for tool, args, _ in BAD_CALLS]
            # The server is still up and the file untouched by the refused calls.
            return messages, await call(s, "stats")

    messages, stats = run(scenario)
    for (tool, args, expected), message in zip(BAD_CALLS, messages):
        assert expected in message, (tool, args, message)
    assert sum(stats["counts"].values()) == 0


def test_stdout_carries_only_the_mcp_channel(db_path, model_path, tmp_path):
    """Raw JSON-RPC through a pipe: every line the server writes on stdout is a JSON-RPC message,
    from start-up (model loading) to shutdown, and logs go to stderr."""
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "remember", "arguments": {"content": "raw pipe memory"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "recall", "arguments": {"query": 1}}},
    ]
    # The responses are read one by one so that stdin closes only after the last answer.
    proc = subprocess.Popen([sys.executable, "-m", "magray", "serve", "--db", str(db_path)], cwd=ROOT,
                            env=server_env(model_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for request in requests:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            if "id" in request:
                lines.append(proc.stdout.readline())
        proc.stdin.close()
        lines += proc.stdout.readlines()
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    messages = [json.loads(line) for line in lines]
    assert all(m["jsonrpc"] == "2.0" for m in messages)
    assert [m["id"] for m in messages] == [1, 2, 3]
    assert messages[0]["result"]["serverInfo"]["name"] == "magray"
    assert messages[1]["result"]["structuredContent"]["created"] is True
    assert messages[2]["result"]["isError"] is True
    assert "serving" in stderr


def test_two_servers_and_a_cli_writer_share_one_file(db_path, model_path, tmp_path, cli):
    assert cli("init").returncode == 0
    per_writer = 8
    jsonl = tmp_path / "cli.jsonl"
    jsonl.write_text("".join(json.dumps({"content": f"cli note {i} about gardening tomatoes", "tags": ["cli"]}) + "\n"
                             for i in range(per_writer)))
    results: dict[str, Any] = {}

    async def cli_writer() -> None:
        for _ in range(2):  # twice: the second time every line already exists
            proc = await anyio.run_process([sys.executable, "-m", "magray", "add", "--jsonl", str(jsonl), "--json"],
                                           env=dict(cli.env, MAGRAY_DB=str(db_path), MAGRAY_MODEL=str(model_path)),
                                           check=False)
            assert proc.returncode == 0, proc.stderr.decode()
            results.setdefault("cli", []).append(json.loads(proc.stdout)["data"])

    async def scenario():
        async with serve(db_path, model_path, tmp_path / "a.log") as a, \
                serve(db_path, model_path, tmp_path / "b.log") as b:
            async def write(session: ClientSession, name: str) -> None:
                for i in range(per_writer):
                    await call(session, "remember", content=f"{name} note {i} about sailing boats", tags=[name])

            async with anyio.create_task_group() as tg:
                tg.start_soon(write, a, "a")
                tg.start_soon(write, b, "b")
                tg.start_soon(cli_writer)
            # Each server sees what the other server and the CLI wrote.
            seen_by_a = await call(a, "recall", query="sailing", mode="text", k=50, filters={"tags": ["b"]})
            seen_by_b = await call(b, "list_recent", limit=100, filters={"tags": ["cli"]})
            return seen_by_a, seen_by_b, await call(a, "stats")

    seen_by_a, seen_by_b, stats = run(scenario)
    assert seen_by_a["count"] == per_writer
    assert seen_by_b["count"] == per_writer
    assert stats["counts"]["interact"] == 3 * per_writer
    assert results["cli"][0]["added"] == per_writer and results["cli"][1]["existing"] == per_writer
    listed = cli.json("list", "--limit", "100")
    assert len(listed["data"]) == 3 * per_writer


def test_wal_stays_bounded_and_is_emptied(db_path, model_path, log_path):
    """Many writes through a long-running server: the WAL never passes a few MB (periodic PASSIVE
    checkpoints), and with another connection still holding the file, the server leaves it empty
    when idle and when it stops (TRUNCATE)."""
    wal = Path(str(db_path) + "-wal")
    watcher = Memory.open(db_path)  # keeps the file open so that SQLite does not delete the WAL on close
    sizes = []

    async def scenario():
        async with serve(db_path, model_path, log_path, "--checkpoint-every", "5", "--idle-checkpoint", "0.2") as s:
            for i in range(120):
                await call(s, "remember", content=f"bounded wal memory {i} about {i % 7} things")
                sizes.append(wal.stat().st_size)
            # Idle: wait (bounded) for the server's own TRUNCATE, observed through the stats tool.
            with anyio.fail_after(60):
                while (await call(s, "stats"))["wal_bytes"] != 0:
                    await anyio.sleep(0.05)
            await call(s, "remember", content="one more after the idle checkpoint")
            assert wal.stat().st_size > 0

    try:
        run(scenario)
        assert wal.stat().st_size == 0  # emptied at shutdown
        assert max(sizes) < 6 * 2**20, max(sizes)
        assert watcher.status().counts["interact"] == 121
    finally:
        watcher.close()


def test_checkpoint_modes(mem, db_path):
    mem.add("a memory to checkpoint")
    assert mem.checkpoint("truncate")["busy"] == 0
    assert Path(str(db_path) + "-wal").stat().st_size == 0
    assert mem.checkpoint()["busy"] == 0
    with pytest.raises(InvalidInput):
        mem.checkpoint("EVERYTHING; DROP TABLE memories")


def test_serve_without_a_model_fails_at_start_up(db_path, cli):
    proc = cli("serve", model=False)
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert "no embedding model" in proc.stderr


def test_metrics_port_serves_prometheus_beside_mcp(db_path, model_path, cli):
    import re
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    cli("add", "a memory to count", "--layer", "assets")
    proc = subprocess.Popen([sys.executable, "-m", "magray", "serve", "--db", str(db_path), "--metrics-port", "0"],
                            cwd=ROOT, env=server_env(model_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:  # the server says where it listens before it serves MCP
            match = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
            if match:
                url = match.group(1)
                break
        assert url, "the server never reported its metrics address"
        body = urllib.request.urlopen(url, timeout=30).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(body)}
        layers = {s.labels["layer"]: s.value for s in families["magray_memories"].samples}
        assert layers["assets"] == 1.0 and families["magray_adds"].samples[0].value == 1
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read() == ""  # nothing but MCP on stdout, and no MCP was spoken
    finally:
        if proc.poll() is None:
            proc.kill()


def _read_line(proc: subprocess.Popen, timeout: float = 120) -> str:
    """One line from the server (a generous safety timeout turns a hang into a failure)."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise AssertionError(f"the server did not answer in {timeout}s")
    return proc.stdout.readline()


def test_unreadable_requests_are_answered_not_left_hanging(db_path, model_path):
    """A request the SDK's stdio layer cannot parse (a lone surrogate escape, JSON nested deeper
    than its parser goes) still gets an answer: a JSON-RPC error with the request's id."""
    call = '{"jsonrpc": "2.0", "id": %s, "method": "tools/call", "params": {"name": "recall", "arguments": %s}}'
    unreadable = {
        10: call % (10, '{"query": "\\ud800"}'),
        11: call % (11, '{"query": "x", "filters": ' + "[" * 300 + "]" * 300 + "}"),
        12: call % (12, '{"query": "x", "filters": ' + "[" * 5000 + "]" * 5000 + "}"),
        "thirteen": call % ('"thirteen"', '{"query": "\\udfff and more"}'),
    }
    proc = subprocess.Popen([sys.executable, "-m", "magray", "serve", "--db", str(db_path)], cwd=ROOT,
                            env=server_env(model_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}) + "\n")
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
        proc.stdin.flush()
        assert json.loads(_read_line(proc))["id"] == 1
        for request_id, line in unreadable.items():
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            answer = json.loads(_read_line(proc))
            assert answer["id"] == request_id and answer["error"]["code"] in (-32700, -32600), answer
            assert "\n" not in answer["error"]["message"]
        proc.stdin.write(call % (20, '{"query": "still serving"}') + "\n")  # and the server goes on
        proc.stdin.flush()
        answer = json.loads(_read_line(proc))
        assert answer["id"] == 20 and "result" in answer, answer
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
