"""Imports from other tools, each from real files in that tool's own format: mem0's JSON export,
a basic-memory folder, plain Markdown, and a database written by simonw/llm itself."""

from __future__ import annotations

import json

import pytest

from magray import Filters, InvalidInput


def test_mem0_export_round_trip(mem, tmp_path):
    export = tmp_path / "mem0.json"
    export.write_text(json.dumps({"results": [
        {"id": "f1b6-1", "memory": "Likes to play cricket on weekends", "hash": "a1", "metadata": {"source": "chat"},
         "categories": ["hobbies", "sports and fitness"], "created_at": "2024-07-25T01:51:36.125149-07:00",
         "updated_at": None, "user_id": "alice"},
        {"id": "f1b6-2", "memory": "Is allergic to peanuts", "hash": "a2", "metadata": None,
         "created_at": "2024-07-26T10:00:00Z", "user_id": "alice", "run_id": "trip-planning"},
        {"id": "f1b6-3", "memory": "", "user_id": "alice"},
    ]}))
    preview = mem.import_from("mem0", str(export), dry_run=True)
    assert preview["would_add"] == 2 and preview["skipped"] == ["entry 3: no memory text"]
    assert mem.list() == []
    report = mem.import_from("mem0", str(export))
    assert report["added"] == 2
    assert mem.import_from("mem0", str(export))["added"] == 0  # idempotent
    cricket = mem.search("which sport does she play?", k=1, filters=Filters(project="alice"))[0].memory
    assert cricket.content == "Likes to play cricket on weekends" and cricket.layer == "insights"
    assert cricket.tags == ["hobbies", "sports-and-fitness"] and cricket.metadata["mem0_id"] == "f1b6-1"
    assert cricket.metadata["source"] == "chat" and cricket.created_at == 1721897496.125149
    peanuts = mem.list(Filters(session="trip-planning"))
    assert [p.content for p in peanuts] == ["Is allergic to peanuts"]


def test_basic_memory_folder(mem, tmp_path):
    notes = tmp_path / "basic-memory"
    (notes / "coffee").mkdir(parents=True)
    (notes / ".obsidian").mkdir()
    (notes / ".obsidian" / "workspace.md").write_text("not a note")
    (notes / "coffee" / "coffee-brewing-methods.md").write_text(
        "---\ntitle: Coffee Brewing Methods\ntype: note\npermalink: coffee/coffee-brewing-methods\n"
        "tags:\n- coffee\n- brewing\n---\n\n# Coffee Brewing Methods\n\n## Observations\n"
        "- [method] Pour over provides more clarity and highlights subtle flavors #brewing\n"
        "- [technique] Water temperature at 205°F extracts optimal compounds\n\n"
        "## Relations\n- relates_to [[Coffee Bean Origins]]\n")
    (notes / "tea.md").write_text("---\ntitle: Tea\ntype: note\ntags: [tea]\n---\nGreen tea needs cooler water, about 80°C.\n")
    report = mem.import_from("basic-memory", str(notes), layer="assets", project="kb")
    assert report["added"] == 2 and report["skipped"] == []
    coffee = mem.search("how hot should the water be for coffee?", k=1, filters=Filters(project="kb"))[0].memory
    assert coffee.title == "Coffee Brewing Methods" and coffee.kind == "note"
    assert coffee.tags == ["brewing", "coffee"] and coffee.source == "basic-memory:coffee/coffee-brewing-methods.md"
    assert coffee.metadata["permalink"] == "coffee/coffee-brewing-methods"
    assert mem.import_from("basic-memory", str(notes), layer="assets", project="kb")["added"] == 0


def test_markdown_folder_split_by_heading(mem, tmp_path):
    doc = tmp_path / "notes"
    doc.mkdir()
    (doc / "runbook.md").write_text("Intro line.\n\n# Deploys\nShip on Thursdays after the review.\n\n"
                                    "## Rollback\nUse the previous image tag.\n\n# Empty\n")
    report = mem.import_from("markdown", str(doc), split="heading", layer="assets")
    assert report["added"] == 3
    titles = sorted(r.title for r in mem.list())
    assert titles == ["runbook", "runbook / Deploys", "runbook / Rollback"]
    hit = mem.search("how do I undo a bad release?", k=1, min_score=0)[0].memory  # the ranking, not the floor
    assert hit.title == "runbook / Rollback"


def test_llm_embeddings_database_written_by_llm_itself(mem, tmp_path):
    import llm
    import sqlite_utils

    class TinyEmbedding(llm.EmbeddingModel):
        """A stand-in embedding model for llm (its vectors are not imported: magray re-embeds)."""
        model_id = "tiny-test"

        def embed_batch(self, texts):
            for text in texts:
                yield [float(len(text)), 1.0, 0.0]

    db = sqlite_utils.Database(tmp_path / "embeddings.db")
    collection = llm.Collection("recipes", db, model=TinyEmbedding())
    collection.embed_multi([("r1", "Pasta needs salted boiling water"), ("r2", "Bread rises overnight in the fridge")],
                           store=True)
    collection.embed("r3", "stored without its content", metadata={"kind": "secret"})
    db.conn.close()
    report = mem.import_from("llm", str(tmp_path / "embeddings.db"), layer="assets")
    assert report["added"] == 2 and report["skipped"] == ["recipes/r3: stored without its content"]
    hit = mem.search("how to cook noodles", k=1, filters=Filters(project="recipes"))[0].memory
    assert hit.content == "Pasta needs salted boiling water" and hit.metadata["llm_id"] == "r1"
    assert mem.import_from("llm", str(tmp_path / "embeddings.db"), layer="assets")["added"] == 0


def test_bad_sources(mem, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(InvalidInput, match="mem0"):
        mem.import_from("mem0", str(junk))
    with pytest.raises(InvalidInput, match="llm embeddings database"):
        mem.import_from("llm", str(junk))
    with pytest.raises(InvalidInput, match="unknown source"):
        mem.import_from("evernote", str(junk))
    assert mem.list() == []


def test_cli_import_from_with_dry_run(cli, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Plants\nWater the ficus weekly.\n")
    preview = cli.json("import", "--from", "markdown", str(notes), "--dry-run")["data"]
    assert preview["would_add"] == 1 and preview["preview"] == ["a"]
    assert cli.json("import", "--from", "markdown", str(notes), "--project", "home")["data"]["added"] == 1
    assert cli.json("import", "--from", "markdown", str(notes), "--project", "home")["data"]["added"] == 0
    assert cli.json("list", "--project", "home")["data"][0]["content"] == "# Plants\nWater the ficus weekly."
