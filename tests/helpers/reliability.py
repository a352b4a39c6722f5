"""What the reliability tests share: the model, the environment of subprocesses, and checks of a
memory file that are written independently of magray's own doctor (plain set arithmetic over the
tables), so that the doctor is tested against them rather than with itself."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "procs" / "worker.py"


def model_path() -> Path:
    env = os.environ.get("MAGRAY_TEST_MODEL")
    path = Path(env) if env else ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"
    if not path.is_file():
        raise RuntimeError(f"test model not found at {path}: set MAGRAY_TEST_MODEL to a GGUF embedding model")
    return path


def subprocess_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a magray subprocess: this checkout's package, the test model, one
    llama.cpp thread (many processes share 2 cores), and XDG dirs inside the test's temp dir."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        MAGRAY_MODEL=str(model_path()),
        MAGRAY_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
        XDG_DATA_HOME=str(tmp / "xdg-data"),
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
        XDG_CONFIG_HOME=str(tmp / "xdg-config"),
    )
    for name in ("MAGRAY_DB", "MAGRAY_PROFILE"):
        env.pop(name, None)
    env.update(extra)
    return env


def start_worker(mode: str, db: Path, env: dict[str, str], *args: str, stdin: int | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), mode, "--db", str(db), *args], env=env,
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(db: Path, env: dict[str, str], *args: str, input: str | bytes | None = None,
            preexec_fn: Callable[[], None] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `magray` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "magray", "--db", str(db), *args], input=input,
                          capture_output=True, text=not isinstance(input, bytes), env=env,
                          preexec_fn=preexec_fn, timeout=timeout)


def open_raw(db: Path):
    """A plain connection with sqlite-vec loaded (to read the vec0 tables), no migrations."""
    from magray.db import open_connection

    return open_connection(db, create=False)


def content_digest(db: Path) -> str:
    """sha256 of every memory row and of the tags of each: equal before and after = no memory
    changed (tag rows of memories that no longer exist are not memories, and do not count)."""
    conn = open_raw(db)
    try:
        h = hashlib.sha256()
        for sql in ("SELECT * FROM memories ORDER BY id",
                    "SELECT t.memory_id, t.tag FROM memory_tags AS t JOIN memories AS m ON m.id = t.memory_id "
                    "ORDER BY 1, 2"):
            for row in conn.execute(sql):
                h.update(repr(row).encode("utf-8", "surrogatepass"))
        return h.hexdigest()
    finally:
        conn.close()


def consistency(db: Path) -> tuple[list[str], dict[str, int]]:
    """(problems, counts). Problems: integrity_check, FTS5 integrity-check, and every orphan or gap
    between memories, memory_tags, chunks, the live vec0 table and the FTS index."""
    conn = open_raw(db)
    problems: list[str] = []
    try:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"integrity_check: {integrity[:3]}")
        try:
            conn.execute("INSERT INTO memories_fts (memories_fts, rank) VALUES ('integrity-check', 1)")
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            problems.append(f"fts integrity-check: {exc}")
        conn.execute("BEGIN")
        all_ids = {r[0] for r in conn.execute("SELECT id FROM memories")}
        live = {r[0] for r in conn.execute("SELECT id FROM memories WHERE deleted_at IS NULL")}
        fts = {r[0] for r in conn.execute("SELECT id FROM memories_fts_docsize")}
        tag_owners = {r[0] for r in conn.execute("SELECT memory_id FROM memory_tags")}
        bad_tags_text = [r[0] for r in conn.execute(
            "SELECT m.id FROM memories AS m WHERE m.tags_text != coalesce((SELECT group_concat(tag, ' ') "
            "FROM (SELECT tag FROM memory_tags WHERE memory_id = m.id ORDER BY tag)), '')")]
        binding = conn.execute("SELECT generation FROM model_binding WHERE id = 1").fetchone()
        counts = {"memories": len(live), "all_rows": len(all_ids), "fts_rows": len(fts)}
        if fts - all_ids:
            problems.append(f"FTS rows without memory: {sorted(fts - all_ids)[:10]}")
        if all_ids - fts:
            problems.append(f"memories without FTS row: {sorted(all_ids - fts)[:10]}")
        if tag_owners - all_ids:
            problems.append(f"tags without memory: {sorted(tag_owners - all_ids)[:10]}")
        if bad_tags_text:
            problems.append(f"tags_text disagrees with memory_tags: {bad_tags_text[:10]}")
        if binding is not None:
            generation = binding[0]
            chunks = {cid: mid for cid, mid in conn.execute(
                "SELECT id, memory_id FROM chunks WHERE generation = ?", (generation,))}
            vec = {cid: mid for cid, mid in conn.execute(f"SELECT chunk_id, memory_id FROM vec_chunks_{generation}")}
            counts |= {"chunks": len(chunks), "vectors": len(vec)}
            orphan_vec = [c for c, m in vec.items() if chunks.get(c) != m or m not in live]
            orphan_chunks = [c for c, m in chunks.items() if m not in live]
            no_vector = [c for c in chunks if c not in vec]
            without = live - set(chunks.values())
            if orphan_vec:
                problems.append(f"vectors without live memory: {orphan_vec[:10]}")
            if orphan_chunks:
                problems.append(f"chunks without live memory: {orphan_chunks[:10]}")
            if no_vector:
                problems.append(f"chunks without vector: {no_vector[:10]}")
            if without:
                problems.append(f"live memories without vectors: {sorted(without)[:10]}")
        elif live:
            problems.append("memories but no model binding")
        conn.execute("COMMIT")
        return problems, counts
    finally:
        conn.close()


def memory_complete(conn, memory_id: int, content: str, token: str | None = None) -> list[str]:
    """Problems with one memory a process reported as stored: its content, chunk rows, vector rows
    and FTS entry (found through MATCH on a token unique to it when given)."""
    row = conn.execute("SELECT content FROM memories WHERE id = ? AND deleted_at IS NULL", (memory_id,)).fetchone()
    if row is None:
        return [f"{memory_id}: missing"]
    problems = [] if row[0] == content else [f"{memory_id}: content differs"]
    generation = conn.execute("SELECT generation FROM model_binding WHERE id = 1").fetchone()[0]
    chunk_ids = [r[0] for r in conn.execute(
        "SELECT id FROM chunks WHERE memory_id = ? AND generation = ?", (memory_id, generation))]
    if not chunk_ids:
        problems.append(f"{memory_id}: no chunks")
    for cid in chunk_ids:
        if conn.execute(f"SELECT count(*) FROM vec_chunks_{generation} WHERE chunk_id = ?", (cid,)).fetchone()[0] != 1:
            problems.append(f"{memory_id}: chunk {cid} has no vector")
    if conn.execute("SELECT count(*) FROM memories_fts_docsize WHERE id = ?", (memory_id,)).fetchone()[0] != 1:
        problems.append(f"{memory_id}: no FTS row")
    if token is not None:
        hits = [r[0] for r in conn.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?", (f'"{token}"',))]
        if hits != [memory_id]:
            problems.append(f"{memory_id}: FTS MATCH {token!r} gave {hits}")
    return problems


def run_workers(db: Path, env: dict[str, str], *, writers: int, readers: int, count: int,
                profile: str = "safe") -> dict:
    """Run `writers` writer and `readers` reader processes (tests/procs/worker.py) on one file:
    start them all, wait until each has loaded the model, say go to all at once, collect.
    Returns the wall time from go to the last exit and what each process printed."""
    import time

    procs = [("writer", start_worker("writer", db, env, "--tag", f"w{i}", "--count", str(count),
                                     "--profile", profile, stdin=subprocess.PIPE)) for i in range(writers)]
    procs += [("reader", start_worker("reader", db, env, "--tag", f"r{i}", "--count", str(count),
                                      "--profile", profile, stdin=subprocess.PIPE)) for i in range(readers)]
    for _, proc in procs:
        if proc.stdout.readline() != "ready\n":
            for _, other in procs:
                other.kill()
            raise RuntimeError(f"a worker failed to start: {proc.stderr.read()[-3000:]}")
    started = time.perf_counter()
    for _, proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.close()
    results = []
    for kind, proc in procs:
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
        results.append({"kind": kind, "rc": proc.returncode, "stdout": out.splitlines(), "stderr": err})
    wall = time.perf_counter() - started
    ops = {"writer": 0, "reader": 0}
    for r in results:
        done = [line for line in r["stdout"] if line.startswith("done ")]
        if r["rc"] == 0 and done:
            ops[r["kind"]] += int(done[0].split()[2])
    return {"wall": wall, "results": results, "write_ops": ops["writer"], "read_ops": ops["reader"]}
