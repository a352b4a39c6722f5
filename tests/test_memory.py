"""The library on real files: records, layers, dedup, FTS sync, search, promotion, deletion."""

from __future__ import annotations

import pytest

from magray import Filters, InvalidInput, Memory, NotFound
from magray.config import DAY, HOUR
from magray.fulltext import STOPWORDS


def fts_rowids(m: Memory, word: str) -> set[int]:
    return {r[0] for r in m.connection.execute(
        "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?", (f'"{word}"',))}


def test_add_get_and_layer_defaults(db_path, model_path):
    now = 2_000_000_000.0
    mem = Memory.open(db_path, model=str(model_path), clock=lambda: now)
    a = mem.add("short lived chat turn", tags=["chat"], project="p", session="s1", metadata={"k": [1, 2]})
    b = mem.add("distilled knowledge", layer="insights")
    c = mem.add("permanent fact", layer="assets", title="fact", kind="note", source="test")
    ra, rb, rc = mem.get(a.id), mem.get(b.id), mem.get(c.id)
    assert ra.tags == ["chat"] and ra.project == "p" and ra.session == "s1" and ra.metadata == {"k": [1, 2]}
    assert ra.expires_at == now + 24 * HOUR
    assert rb.expires_at == now + 180 * DAY
    assert rc.expires_at is None and rc.title == "fact" and rc.kind == "note"
    assert ra.access_count == 1  # get counts as a use
    mem.close()


def test_exact_duplicate_in_same_layer_and_project_is_stored_once(mem):
    first = mem.add("the same words", project="p")
    again = mem.add("the same words", project="p")
    other_project = mem.add("the same words", project="q")
    other_layer = mem.add("the same words", project="p", layer="assets")
    assert first.created and not again.created and again.id == first.id
    assert other_project.created and other_layer.created
    count = mem.connection.execute("SELECT count(*) FROM memories").fetchone()[0]
    assert count == 3


def test_fts_follows_insert_update_tag_and_delete(mem):
    r = mem.add("the quick brown fox", tags=["animals"])
    assert fts_rowids(mem, "fox") == {r.id}
    mem.update(r.id, content="the lazy dog")
    assert fts_rowids(mem, "fox") == set()
    assert fts_rowids(mem, "dog") == {r.id}
    mem.tag(r.id, add=["pets"], remove=["animals"])
    assert fts_rowids(mem, "pets") == {r.id} and fts_rowids(mem, "animals") == set()
    mem.update(r.id, title="kennel notes")
    assert fts_rowids(mem, "kennel") == {r.id}
    mem.delete(r.id, hard=True)
    assert fts_rowids(mem, "dog") == set()
    # The external-content index is consistent with its table.
    mem.connection.execute("INSERT INTO memories_fts(memories_fts, rank) VALUES ('integrity-check', 1)")


@pytest.mark.parametrize("query", ['"unbalanced', "fox*", "-fox", "NEAR(fox dog)", "fox AND", "(((", "a OR",
                                   "'; DROP TABLE memories; --", "^fox", "col:fox", "\x00fox"])
def test_text_search_treats_syntax_as_words(mem, query):
    mem.add("the quick brown fox jumps")
    hits = mem.search(query, mode="text")
    assert all(h.memory.content == "the quick brown fox jumps" for h in hits)
    if "fox" in query:
        assert hits, query


def test_semantic_recall_finds_paraphrase_sharing_no_words(mem):
    pairs = {
        "The user prefers dark mode in the editor.": "which colour scheme does she like for coding?",
        "Paris is the capital of France.": "main city of the french nation",
        "How do I reset my password?": "forgot login credentials recovery",
        "The stock market fell sharply today.": "equities dropped a lot",
    }
    distractors = ["My cat sleeps on the windowsill every afternoon.", "We ordered pizza for the team lunch.",
                   "The train to Berlin leaves at nine.", "Remember to water the tomatoes."]
    ids = {text: mem.add(text, layer="insights").id for text in list(pairs) + distractors}
    for text, query in pairs.items():
        content_words = lambda t: {w.strip(".?") for w in t.lower().split()} - STOPWORDS
        assert not content_words(query) & content_words(text)
        for mode in ("vector", "hybrid"):
            # min_score=0: the ranking is under test here, not the relevance floor (one of these
            # paraphrases has a cosine of 0.24, below what the floor admits).
            hits = mem.search(query, k=3, mode=mode, touch=False, min_score=0)
            assert hits[0].memory.id == ids[text], (mode, query, [h.memory.content for h in hits])


def test_filters_apply_to_list_and_search(mem):
    a = mem.add("alpha note about deploys", project="infra", session="s1", tags=["ops", "urgent"])
    b = mem.add("beta note about deploys", project="infra", session="s2", tags=["ops"])
    c = mem.add("gamma note about deploys", project="home", layer="assets")
    listed = lambda **f: {r.id for r in mem.list(Filters(**f))}
    assert listed(project="infra") == {a.id, b.id}
    assert listed(tags=("ops", "urgent")) == {a.id}
    assert listed(layers=("assets",)) == {c.id}
    assert listed(session="s2") == {b.id}
    for mode in ("text", "vector", "hybrid"):
        found = lambda **f: {h.memory.id for h in mem.search("deploys", mode=mode, filters=Filters(**f), touch=False)}
        assert found(project="infra") == {a.id, b.id}, mode
        assert found(tags=("urgent",)) == {a.id}, mode
        assert found(layers=("assets", "insights")) == {c.id}, mode
        assert found(since=mem.now() + 10) == set(), mode


def test_expired_memories_are_hidden(db_path, model_path):
    clock = [1_000_000.0]
    with Memory.open(db_path, model=str(model_path), clock=lambda: clock[0]) as m:
        r = m.add("a fleeting thought about lunch")
        clock[0] += 25 * HOUR
        with pytest.raises(NotFound, match="expired"):
            m.get(r.id)
        assert m.list() == [] and m.search("lunch") == []
        assert [x.id for x in m.list(Filters(include_expired=True))] == [r.id]
        assert m.status().expired == 1


def test_insights_are_renewed_by_use(db_path, model_path):
    clock = [1_000_000.0]
    with Memory.open(db_path, model=str(model_path), clock=lambda: clock[0]) as m:
        r = m.add("knowledge worth keeping", layer="insights")
        first_expiry = m.get(r.id, touch=False).expires_at
        clock[0] += 100 * DAY
        m.get(r.id)
        assert m.get(r.id, touch=False).expires_at == pytest.approx(clock[0] + 180 * DAY)
        assert m.get(r.id, touch=False).expires_at > first_expiry


def test_promote_moves_layer_vectors_and_logs_event(mem):
    r = mem.add("worth keeping forever")
    promoted = mem.promote(r.id, "assets")
    assert promoted.layer == "assets" and promoted.expires_at is None
    hits = mem.search("kept forever", mode="vector", filters=Filters(layers=("assets",)), touch=False)
    assert [h.memory.id for h in hits] == [r.id]
    event = mem.connection.execute("SELECT kind, detail FROM events WHERE memory_id = ?", (r.id,)).fetchone()
    assert event[0] == "promote" and '"to": "assets"' in event[1]


def test_soft_and_hard_delete(mem):
    r = mem.add("to be forgotten")
    mem.delete(r.id)
    with pytest.raises(NotFound):
        mem.get(r.id)
    assert mem.search("forgotten") == []
    assert mem.connection.execute("SELECT count(*) FROM chunks WHERE memory_id = ?", (r.id,)).fetchone()[0] == 0
    again = mem.add("to be forgotten")  # the content can be stored again
    assert again.created and again.id != r.id
    mem.delete(r.id, hard=True)
    assert mem.connection.execute("SELECT count(*) FROM memories WHERE id = ?", (r.id,)).fetchone()[0] == 0


def test_long_text_is_chunked_and_found_by_its_best_chunk(mem):
    filler = " ".join(f"Paragraph {i} talks about gardening, soil, compost and seasonal planting." for i in range(60))
    text = filler + " The spaceship reached orbit around Jupiter after six years of travel."
    r = mem.add(text, layer="assets")
    assert r.chunks > 1
    mem.add("Notes about the weekly grocery list and prices.", layer="assets")
    hits = mem.search("a space probe arriving at a giant planet", mode="vector", k=1, touch=False)
    assert hits[0].memory.id == r.id


def test_bad_input_is_refused_and_changes_nothing(mem):
    mem.add("existing memory")
    before = mem.connection.execute("SELECT count(*), total(access_count) FROM memories").fetchone()
    bad_calls = [
        lambda: mem.add(""), lambda: mem.add("   "), lambda: mem.add("x", layer="nope"),
        lambda: mem.add("x", tags=["has space"]), lambda: mem.add("x", importance=2),
        lambda: mem.add("x", metadata={"f": float("nan")}), lambda: mem.add("x", ttl=-1),
        lambda: mem.add_many([{"content": "ok"}, {"content": ""}]),
        lambda: mem.list(limit=0), lambda: mem.search("x", k=-1), lambda: mem.search("x", mode="fuzzy"),
        lambda: mem.promote(1, "nowhere"), lambda: mem.update(1),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidInput):
            call()
    with pytest.raises(NotFound):
        mem.get(999)
    after = mem.connection.execute("SELECT count(*), total(access_count) FROM memories").fetchone()
    assert after == before


def test_embedding_cache_is_shared_across_processes_and_runs(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as m:
        m.add("cache me once")
        m.search("cache me once", mode="vector")  # same text: a hit
        computed = m.status().counters["embeddings_computed"]
        assert computed == 1
    with Memory.open(db_path) as m:  # the bound model is found again from the file
        m.search("cache me once", mode="vector")
        status = m.status()
        assert status.counters["embeddings_computed"] == 1
        assert status.counters["cache_hits"] == 2 and status.cache["hit_rate"] > 0
