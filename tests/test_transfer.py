"""Export and import on real files with the real model: every field round-trips, import is
idempotent, exported vectors are reused, Markdown front matter, bad input refused, CLI pipes."""

from __future__ import annotations

import io
import json
import stat
from dataclasses import asdict

import numpy as np
import pytest

from magray import InvalidInput, Memory
from magray import records, transfer, vectors
from magray.config import DAY

FIELDS = ("layer", "content", "content_hash", "title", "kind", "source", "project", "session", "tags",
          "metadata", "created_at", "updated_at", "accessed_at", "access_count", "importance", "expires_at")


def by_content(mem: Memory) -> dict[tuple[str, str, str], dict]:
    """Every live memory, expired ones and aliases included, keyed by what identifies it across
    files; ids (which differ between files) are replaced by the content they point at."""
    ids = [r[0] for r in mem.connection.execute("SELECT id FROM memories WHERE deleted_at IS NULL")]
    found = records.get_many(mem.connection, ids)
    uses: dict[int, list] = {}
    for memory_id, session, n, last_at in mem.connection.execute(
            "SELECT memory_id, session, uses, last_at FROM memory_uses ORDER BY session"):
        uses.setdefault(memory_id, []).append((session, n, last_at))
    out = {}
    for m in found.values():
        data = {k: asdict(m)[k] for k in FIELDS}
        data["merged_into"] = found[m.merged_into].content if m.merged_into else None
        data["uses"] = uses.get(m.id, [])
        out[(m.layer, m.project, m.content)] = data
    return out


def chunk_vectors(mem: Memory) -> dict[tuple[str, int], bytes]:
    gen = mem.load_model().generation
    rows = mem.connection.execute(
        f"SELECT m.content, c.seq, v.embedding FROM chunks c JOIN memories m ON m.id = c.memory_id "
        f"JOIN vec_chunks_{gen} v ON v.chunk_id = c.id WHERE c.generation = ?", (gen,))
    return {(content, seq): blob for content, seq, blob in rows}


@pytest.fixture
def varied(mem):
    """A file with every kind of field set: used memories (per session too), an alias of a
    near-duplicate, an expired memory and a deleted one (not exported)."""
    now = mem.now()
    mem.add("chat turn about the weather", tags=["chat", "smalltalk"], project="home", session="s1",
            metadata={"speaker": "user", "n": [1, 2.5, None]}, created_at=now - 3600)
    ins = mem.add("the user likes green tea more than coffee", layer="insights", title="drinks",
                  kind="preference", source="chat:42", importance=0.9, created_at=now - 10 * DAY)
    alias = mem.add("the user likes green tea more than coffee!", layer="insights")
    assert alias.merged_into == ins.id
    mem.add("passport number is in the blue folder", layer="assets", tags=["docs"], ttl=0)
    mem.add("ünïcödé content — with emoji 🍵 and\nnewlines", project="intl", ttl=30 * DAY)
    gone = mem.add("deleted memory, not exported")
    mem.delete(gone.id)
    mem.add("long " + " ".join(f"word{i}" for i in range(600)), layer="assets")  # several chunks
    # Expired after the last add (an add purges a few expired memories on its way).
    expired = mem.add("a memory that has already expired")
    mem.connection.execute("UPDATE memories SET expires_at = ? WHERE id = ?", (now - 60, expired.id))
    for _ in range(3):
        mem.get(ins.id)  # access_count, accessed_at set, expiry renewed
    mem.touch(ins.id, session="s9")
    return mem


def test_jsonl_export_then_import_round_trips_every_field_and_vector(varied, tmp_path, model_path):
    out = io.StringIO()
    result = transfer.export_jsonl(varied, out, with_vectors=True)
    assert result == {"format": "jsonl", "memories": 7, "vectors": True}
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["format"] == transfer.FORMAT and len(lines) == 8
    with Memory.open(tmp_path / "fresh.db", model=str(model_path)) as fresh:
        imported = transfer.import_jsonl(fresh, io.StringIO(out.getvalue()))
        assert imported["added"] == 7 and imported["existing"] == 0
        assert imported["vectors_reused"] == len(chunk_vectors(varied))
        assert by_content(fresh) == by_content(varied)
        assert chunk_vectors(fresh) == chunk_vectors(varied)
        # Vectors came from the export: the model computed nothing here.
        assert fresh.status().counters.get("embeddings_computed", 0) == 0
        assert fresh.search("which hot drink does the user prefer?", mode="vector", k=1,
                            touch=False)[0].memory.title == "drinks"
        # Importing the same file again adds nothing and changes nothing.
        again = transfer.import_jsonl(fresh, io.StringIO(out.getvalue()))
        assert again["added"] == 0 and again["existing"] == 7
        assert by_content(fresh) == by_content(varied)


def test_import_without_vectors_embeds_the_text(varied, tmp_path, model_path):
    out = io.StringIO()
    assert transfer.export_jsonl(varied, out)["vectors"] is False
    assert "chunks" not in out.getvalue()
    with Memory.open(tmp_path / "fresh.db", model=str(model_path)) as fresh:
        assert transfer.import_jsonl(fresh, io.StringIO(out.getvalue()))["vectors_reused"] == 0
        assert by_content(fresh) == by_content(varied)
        mine, theirs = chunk_vectors(fresh), chunk_vectors(varied)
        assert mine.keys() == theirs.keys()
        for key in mine:  # the same model on the same text: the same vector
            a, b = vectors.decode([mine[key], theirs[key]], fresh.load_model().dim)
            # up to flash attention's f16 rounding: an import embeds in batches, an add alone
            # (tests/test_embed_bulk.py)
            assert float(a @ b) > 0.9995


def test_import_is_checked_before_anything_is_written(mem, tmp_path):
    mem.add("already here")
    out = io.StringIO()
    transfer.export_jsonl(mem, out)
    header, record = out.getvalue().splitlines()
    edited = json.loads(record) | {"content": "edited by hand"}

    def with_vector(values):
        line = json.loads(record) | {"chunks": [{"seq": 0, "text_hash": "h", "vector": values}]}
        return header + "\n" + json.dumps(line) + "\n"

    dim = 384
    bad_inputs = {
        "not a magray JSONL export": '{"content": "plain add --jsonl line"}\n',
        "is empty": "\n",
        "not valid JSON": header + "\n{oops\n",
        "does not match its content_hash": header + "\n" + json.dumps(edited) + "\n",
        "newer|upgrade magray": json.dumps(json.loads(header) | {"version": 99}) + "\n",
        "access_count": header + "\n" + json.dumps(json.loads(record) | {"access_count": -1}) + "\n",
        "not finite": with_vector([float("nan")] * dim),
        "zero": with_vector([0.0] * dim),
    }
    with Memory.open(tmp_path / "target.db") as target:
        for message, text in bad_inputs.items():
            with pytest.raises(InvalidInput, match=message.split("|")[-1]):
                transfer.import_jsonl(target, io.StringIO(text))
        assert target.connection.execute("SELECT count(*) FROM memories").fetchone()[0] == 0


def front_matter(text: str) -> dict:
    head = text.split("---\n")[1]
    return {k: json.loads(v) for k, v in (line.split(": ", 1) for line in head.splitlines())}


def test_markdown_export_per_memory_and_per_layer(varied, tmp_path):
    per_memory = transfer.export_markdown(varied, tmp_path / "md")
    assert per_memory["memories"] == 7
    files = sorted((tmp_path / "md").rglob("*.md"))
    assert len(files) == 7 and {f.parent.name for f in files} == {"interact", "insights", "assets"}
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    drinks = next(f for f in files if "drinks" in f.name)
    meta = front_matter(drinks.read_text())
    assert meta["layer"] == "insights" and meta["kind"] == "preference" and meta["access_count"] == 5
    alias = next(f for f in files if "green-tea" in f.name and f != drinks)
    assert front_matter(alias.read_text())["merged_into"] == meta["id"]
    assert drinks.read_text().rstrip().endswith("the user likes green tea more than coffee")
    transfer.export_markdown(varied, tmp_path / "layers", per="layer")
    assets = (tmp_path / "layers" / "assets.md").read_text()
    assert assets.count("\nlayer: \"assets\"\n") == 2 and "passport number" in assets
    with pytest.raises(InvalidInput, match="not an empty folder"):
        transfer.export_markdown(varied, tmp_path / "md")


def test_cli_export_and_import(cli, tmp_path, db_path):
    for text in ("first memory for the cli", "second memory for the cli"):
        assert cli("add", text, "--tag", "cli").returncode == 0
    out_file = tmp_path / "all.jsonl"
    exported = cli.json("export", "--vectors", "-o", str(out_file))
    assert exported["data"]["memories"] == 2 and stat.S_IMODE(out_file.stat().st_mode) == 0o600
    piped = cli("export")
    assert piped.returncode == 0
    assert [json.loads(l)["content"] for l in piped.stdout.splitlines()[1:] if l.strip()] == \
        ["first memory for the cli", "second memory for the cli"]
    other = type(cli)(tmp_path / "other.db", cli.model, cli.env)
    first = other.json("import", str(out_file))
    assert first["data"]["added"] == 2 and first["data"]["vectors_reused"] == 2
    second = other("import", "-", input=piped.stdout)
    assert second.returncode == 0 and "existing: 2" in second.stdout
    assert cli("--json", "export").returncode == 2  # the envelope and the export cannot share stdout
    md = cli.json("export", "--format", "markdown", "--per", "layer", "-o", str(tmp_path / "md"))
    assert md["ok"] and (tmp_path / "md" / "interact.md").exists()
