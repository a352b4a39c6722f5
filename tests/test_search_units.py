"""Unit tests of the pure parts of search: query building and score fusion."""

from __future__ import annotations

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from magray import fulltext, search
from magray.errors import InvalidInput
from magray.types import Filters

HOSTILE = [
    'say "hello', '"', '""', "*", "pre*", "-cat", "- -", "NEAR(a b)", "a AND b", "a OR", "NOT x",
    "(", ")", "((a)", "a:b", "content:cat", "^start", "{content title}: x", "'", "it's", "’s",
    "a + b", "\\", ";", "NEAR", "AND", "OR NOT AND", "col : *", "\x00", "日本語のテキスト", "🙂 emoji",
]


@pytest.fixture(scope="module")
def fts() -> apsw.Connection:
    """An FTS5 table built like the real one (same tokenizer, same columns)."""
    conn = apsw.Connection(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(content, title, tags_text, "
                 "tokenize = 'porter unicode61 remove_diacritics 2')")
    conn.execute("INSERT INTO t (content, title, tags_text) VALUES "
                 "('Melanie: I play the clarinet', '', ''), ('say hello NEAR the cat', '', '')")
    return conn


def run(conn: apsw.Connection, text: str) -> list[int]:
    match = fulltext.fts_query(text)
    if match is None:
        return []
    return [r[0] for r in conn.execute(
        "SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t, 1.0, 2.0, 2.0)", (match,))]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_query_text_never_raises(fts, text):
    run(fts, text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_query_text_is_a_valid_match_expression(fts, text):
    run(fts, text)


def test_operators_are_searched_for_as_words(fts):
    assert run(fts, "NEAR") == [2]
    assert run(fts, "cat AND dog") == [2]  # OR of the words: "and" is a stopword, "cat" matches


def test_possessive_finds_the_plain_word(fts):
    assert fulltext.query_words("What does Melanie's band play?") == ["melanie", "band", "play"]
    assert run(fts, "Melanie’s") == [1]


def test_only_stopwords_are_kept_when_nothing_else_is_left():
    assert fulltext.query_words("what is it") == ["what", "is", "it"]
    assert fulltext.fts_query("!!! ...") is None


def hit(memory_id: int, evidence: float) -> fulltext.TextHit:
    return fulltext.TextHit(memory_id, evidence * 10, evidence)


def test_convex_fusion_adds_text_evidence_and_cosine_on_their_own_scales():
    text = [hit(1, 0.9), hit(2, 0.5), hit(3, 0.1)]
    vector = [(2, 0.8), (4, 0.4)]
    ranking = search.Ranking(fusion="convex", text_weight=0.5, vector_weight=0.5, text_power=1.0)
    parts = search.fuse(text, vector, ranking)
    assert parts[1]["fused"] == pytest.approx(0.5 * 0.9)
    assert parts[2]["fused"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.8)
    assert parts[3]["fused"] == pytest.approx(0.5 * 0.1)
    assert parts[4]["fused"] == pytest.approx(0.5 * 0.4)
    # A weak match alone stays weak: its score does not depend on the other candidates.
    assert search.fuse([hit(7, 0.1)], [], ranking)[7]["fused"] == pytest.approx(0.05)


def test_one_common_word_never_outweighs_a_strong_meaning_match():
    # One query word of five, and a common one: a small share of the query's evidence.
    common_word = hit(1, 0.2)
    parts = search.fuse([common_word], [(1, 0.25), (2, 0.55)])
    assert parts[2]["fused"] > parts[1]["fused"]


def test_a_match_on_the_rare_words_of_a_question_still_wins():
    rare_words = hit(1, 0.8)
    parts = search.fuse([rare_words], [(1, 0.35), (2, 0.55)])
    assert parts[1]["fused"] > parts[2]["fused"]


def test_rrf_fusion_is_still_available():
    ranking = search.Ranking(fusion="rrf", rrf_k=60.0, text_weight=1.0, vector_weight=1.0)
    parts = search.fuse([hit(1, 0.2)], [(1, 0.5)], ranking)
    assert parts[1]["fused"] == pytest.approx(2 / 61)
    with pytest.raises(InvalidInput):
        search.fuse([], [], search.Ranking(fusion="mean"))


def test_the_reply_to_a_matching_turn_is_found_through_its_context(tmp_path):
    import os
    from pathlib import Path

    from magray import Memory
    from magray.types import Filters

    root = Path(__file__).resolve().parent.parent
    model = os.environ.get("MAGRAY_TEST_MODEL") or str(root.parent / "shared" / "models"
                                                        / "all-MiniLM-L6-v2-q8_0.gguf")
    turns = ["Caroline: who sang at the concert last night?", "Melanie: Matt Patterson, so talented!",
             "Caroline: I adopted a puppy."]
    with Memory.open(tmp_path / "m.db", model=model) as memory:
        ids = [r.id for r in memory.add_many(
            [{"content": t, "project": "p", "session": "s1", "layer": "assets"} for t in turns])]
        other = memory.add("Melanie: a concert ticket", project="p", session="s2", layer="assets").id
        hits = memory.search("concert", mode="text", filters=Filters(project="p"), touch=False)
        by_id = {h.memory.id: h for h in hits}
        assert ids[1] in by_id and by_id[ids[1]].parts["context"] > 0
        assert by_id[ids[1]].score < by_id[ids[0]].score  # below the turn it answers
        assert ids[2] not in by_id  # two turns away: no lift
        unlimited = search.Ranking(next_weight=2.0, context_ceiling=float("inf"))
        hits = memory.search("concert", mode="text", filters=Filters(project="p"), touch=False,
                             ranking=unlimited)
        assert hits[0].memory.id == ids[1]
        assert by_id[other].parts["context"] is None  # no neighbour in its session
        plain = search.Ranking(next_weight=0.0, previous_weight=0.0)
        hits = memory.search("concert", mode="text", filters=Filters(project="p"), touch=False,
                             ranking=plain)
        assert ids[1] not in {h.memory.id for h in hits}


BM25_TEXTS = [
    {"content": "Melanie: it's my e-mail about the café, the café downtown", "title": "Café notes",
     "tags": ["cafe", "email"]},
    {"content": "Caroline: I went to the cafe. It's lovely, and the cake was lovely too."},
    {"content": "Melanie: a long turn that says one thing about the cafe and then goes on and on about "
                "painting, pottery, running, camping with the family and the kids at the beach"},
    {"content": "John: the cafe cafe cafe, again and again", "tags": ["lovely"]},
    {"content": "Tim: nothing to see here, says O'Brien to Brien O'Neil"},
]


@pytest.fixture
def bm25_memory(mem):
    mem.ids = [r.id for r in mem.add_many([dict(t, layer="assets") for t in BM25_TEXTS])]
    return mem


@pytest.mark.parametrize("query", ["cafe", "café e-mail", "it's lovely", "lovely cake Melanie",
                                   "notes email", "downtown", "O'Brien cafe"])
def test_text_scores_rank_like_fts5_bm25_on_its_matches(bm25_memory, query):
    """The Python BM25 (own tokenising, column weights, multi-token phrases) scores exactly the
    memories FTS5 matches, all of them above 0."""
    conn = bm25_memory.connection
    in_c = {r[0] for r in conn.execute("SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?",
                                       (fulltext.fts_query(query),))}
    found = fulltext.text_candidates(conn, query, Filters(), 0.0, 50)
    assert {h.memory_id for h in found} == in_c and all(h.bm25 > 0 for h in found)
    assert [h.bm25 for h in found] == sorted((h.bm25 for h in found), reverse=True)


def test_bm25_by_hand_on_a_tiny_file(mem):
    """Two memories; "cafe" in one: idf = log(1 + (2 - 1 + 0.5) / (1 + 0.5)) = log 2, and with
    b = 0 a single occurrence scores idf * (k1 + 1) / (1 + k1) = idf."""
    import math

    first = mem.add("the cafe", layer="assets").id
    mem.add("a bakery", layer="assets")
    flat = search.Ranking(bm25_b=0.0)
    (hit,) = fulltext.text_candidates(mem.connection, "cafe", Filters(), 0.0, 10, flat)
    assert hit.memory_id == first and hit.bm25 == pytest.approx(math.log(2)) and hit.evidence == pytest.approx(1.0)


def test_text_evidence_is_the_share_of_the_ideal_match(bm25_memory):
    """A memory holding every query word once, at the average length, scores the sum of the
    words' idf: evidence 1. One word of two is about half, whatever the other candidates."""
    conn = bm25_memory.connection
    flat = search.Ranking(bm25_b=0.0, bm25_weights=(1.0, 1.0, 1.0))
    both = {h.memory_id: h for h in fulltext.text_candidates(conn, "painting pottery", Filters(), 0.0, 50, flat)}
    assert both[bm25_memory.ids[2]].evidence == pytest.approx(1.0)
    one = {h.memory_id: h for h in fulltext.text_candidates(conn, "pottery zeppelin", Filters(), 0.0, 50, flat)}
    # "zeppelin" is in no memory: it keeps its full (higher) idf in the ideal, so "pottery" alone
    # is less than half of the query's evidence.
    import math

    rows = len(BM25_TEXTS)
    pottery, zeppelin = math.log(1 + (rows - 1 + 0.5) / 1.5), math.log(1 + (rows + 0.5) / 0.5)
    assert one[bm25_memory.ids[2]].evidence == pytest.approx(pottery / (pottery + zeppelin))
    assert one[bm25_memory.ids[2]].evidence < 0.5
    assert all(0.0 < h.evidence <= 1.0 for h in both.values())


def test_b_sets_how_much_a_longer_text_is_punished(bm25_memory):
    short, long = bm25_memory.ids[1], bm25_memory.ids[2]  # "cafe" once in each

    def scores(b: float) -> dict[int, float]:
        return {h.memory_id: h.bm25 for h in fulltext.text_candidates(
            bm25_memory.connection, "cafe", Filters(), 0.0, 50, search.Ranking(bm25_b=b))}

    full = scores(0.75)
    assert full[short] > full[long]  # higher is better
    none = scores(0.0)
    assert none[short] == pytest.approx(none[long])
    # Then only frequency counts (a title or tag hit counting twice): 2 + 2 + 2, then 3.
    assert list(none)[:2] == [bm25_memory.ids[0], bm25_memory.ids[3]]
