"""Text search with a posting budget: the rarest words are ranked by FTS5, the common ones only
add what they weigh (fulltext.text_candidates, TextScorer). Real files, budgets made small."""

from __future__ import annotations

import dataclasses

import pytest

from magray import Memory, fulltext, search, vectors
from magray.types import Filters

UNBOUNDED = dataclasses.replace(search.DEFAULT_RANKING, text_budget=10**9)

# "zeppelin" in 12 memories, "widget" and "gadget" in 33 or more: with a budget of 15 postings,
# "zeppelin" is the rare word and the other two are common. The other memories hold none of the
# query words, so that the common ones still weigh something (idf 1.6 against 2.7).
OTHER = [{"content": f"entry {i} on another subject" + (" in passing" if i % 2 else ""), "project": "c"}
         for i in range(150)]
FILLER = [{"content": f"widget gadget report number {i}", "project": "a"} for i in range(30)]
LONG = [{"content": f"zeppelin widget gadget: a longer note {i} about the hangar and the mooring mast",
         "project": "a"} for i in range(3)]
SHORT = [{"content": f"zeppelin {i}", "project": "b"} for i in range(9)]
ONLY_COMMON = [{"content": f"the widget of {name}", "project": "b"} for name in ("anna", "ben", "cleo")]
RARE = [{"content": "an albatross and its widget", "project": "b"}]
# A project of at most 1/20 of the memories: applied before the join, with a larger budget.
SMALL = [{"content": text, "project": "d"} for text in
         ("a zeppelin widget in d", "a widget in d", "another widget in d", "a gadget in d")]
ALL = OTHER + FILLER + LONG + SHORT + ONLY_COMMON + RARE + SMALL


@pytest.fixture(scope="module")
def memory(tmp_path_factory, model_path):
    with Memory.open(tmp_path_factory.mktemp("budget") / "m.db", model=str(model_path)) as mem:
        records = mem.add_many([dict(t, layer="assets") for t in ALL])
        mem.ids = {text["content"]: r.id for text, r in zip(ALL, records)}
        yield mem


def candidates(mem, text, ranking, limit=50, filters=Filters()):
    return fulltext.text_candidates(mem.connection, text, filters, 0.0, limit, ranking)


def count(mem, word):
    return mem.connection.execute("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?",
                                  (fulltext.fts_query_of([word]),)).fetchone()[0]


@pytest.mark.parametrize("query", ["zeppelin widget gadget", "albatross widget", "widget",
                                   "report hangar entry", "zeppelin nowhere-to-be-found", "the mooring mast"])
def test_a_small_file_ranks_as_without_the_bound(memory, query):
    """Every word's matches fit in the default budget: the same hits, in the same order."""
    assert candidates(memory, query, search.DEFAULT_RANKING) == candidates(memory, query, UNBOUNDED)


@pytest.mark.parametrize("budget", [0, 5, 15, 5000])
def test_document_frequencies_are_the_counts(memory, budget):
    """Counted up to the budget; above it estimated by strata, which in a file this small hold
    fewer matches each than are read, so the estimate is the count too."""
    words = ["zeppelin", "widget", "gadget", "albatross", "report", "hangar", "nowhere"]
    ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=budget)
    scorer = fulltext.TextScorer(memory.connection, words, ranking)
    assert scorer.frequencies == [count(memory, w) for w in words]


def test_a_frequency_estimated_from_few_matches_per_stratum(memory, monkeypatch):
    """Two matches read per stratum, scaled to the stratum: never below what was counted (the
    budget and one) nor above the number of memories; near the count for a word spread evenly
    ("passing": every other memory of the first 150), while a word packed into a part of a
    stratum is only bounded."""
    monkeypatch.setattr(fulltext, "_PER_STRATUM", 2)
    every = memory.connection.execute("SELECT count(*) FROM memories").fetchone()[0]
    ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=5)
    words = ["passing", "widget", "gadget", "report", "zeppelin"]
    scorer = fulltext.TextScorer(memory.connection, words, ranking)
    assert scorer.frequencies != [count(memory, w) for w in words]  # estimated, not counted
    assert all(6 <= estimate <= every for estimate in scorer.frequencies)
    assert count(memory, "passing") / 1.2 <= scorer.frequencies[0] <= 1.2 * count(memory, "passing")


def test_common_words_rank_the_rare_matches(memory):
    """"zeppelin" alone: FTS5 ranks its short memories first, and they would fill a pool of 5.
    The memories that also hold the two common words are the best answers, and come first, as
    when every match is scored."""
    conn = memory.connection
    by_zeppelin = [r[0] for r in conn.execute(
        "SELECT rowid FROM memories_fts WHERE memories_fts MATCH 'zeppelin' "
        "ORDER BY bm25(memories_fts) LIMIT 5")]
    long_ids = {memory.ids[t["content"]] for t in LONG}
    assert not long_ids & set(by_zeppelin)
    ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=15, rescore_depth=5)
    scorer = fulltext.TextScorer(conn, fulltext.query_words("zeppelin widget gadget"), ranking)
    assert scorer.split() == (["zeppelin"], ["gadget", "widget"])  # rarest first
    hits = candidates(memory, "zeppelin widget gadget", ranking, limit=5)
    assert {h.memory_id for h in hits[:3]} == long_ids and all(h.matched == 3 for h in hits[:3])
    every = candidates(memory, "zeppelin widget gadget", UNBOUNDED)  # every match re-scored
    assert [(h.memory_id, h.bm25) for h in hits[:3]] == [(h.memory_id, h.bm25) for h in every[:3]]


def test_the_rare_word_first_and_common_matches_fill_the_pool(memory):
    """"widget" is over the budget, "albatross" in one memory: that memory comes first, and the
    pool, not full, takes the memories that hold only "widget", each scored as without the bound."""
    ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=15)
    scorer = fulltext.TextScorer(memory.connection, ["albatross", "widget"], ranking)
    assert scorer.split() == (["albatross"], ["widget"])
    hits = candidates(memory, "albatross widget", ranking)
    assert hits[0].memory_id == memory.ids[RARE[0]["content"]] and hits[0].matched == 2
    only_common = {memory.ids[t["content"]] for t in ONLY_COMMON}
    assert only_common <= {h.memory_id for h in hits}
    unbounded = {h.memory_id: h.bm25 for h in candidates(memory, "albatross widget", UNBOUNDED)}
    assert {h.memory_id: h.bm25 for h in hits} == pytest.approx(unbounded)


def test_a_full_pool_of_rare_matches_leaves_the_common_only_ones_out(memory):
    ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=15, rescore_depth=5)
    hits = candidates(memory, "zeppelin widget", ranking, limit=5)
    assert len(hits) == 5 and all(h.matched >= 1 for h in hits)
    zeppelin = {memory.ids[t["content"]] for t in ALL if "zeppelin" in t["content"]}
    assert {h.memory_id for h in hits} <= zeppelin


def test_a_filter_with_the_bound(memory):
    """Under a project filter the rare word's matches in the project come first, and the common
    word's fill the rest: the same hits as without the bound. Project "d" is small enough to be
    applied before the join, "a" and "b" are not."""
    rows = memory.connection.execute("SELECT count(*) FROM memories").fetchone()[0]
    small = [fulltext._small_scope(fulltext.ProjectSize(memory.connection, Filters(project=p)), rows) for p in "abd"]
    assert small == [False, False, True]
    ranking = dataclasses.replace(search.DEFAULT_RANKING, text_budget=15)
    for project in ("a", "b", "d"):
        hits = candidates(memory, "zeppelin widget", ranking, filters=Filters(project=project))
        unbounded = candidates(memory, "zeppelin widget", UNBOUNDED, filters=Filters(project=project))
        assert {h.memory_id: h.bm25 for h in hits} == pytest.approx({h.memory_id: h.bm25 for h in unbounded})
        assert [h.bm25 for h in hits] == sorted((h.bm25 for h in hits), reverse=True)
        assert {memory.get(h.memory_id, touch=False).project for h in hits} == {project}


def test_a_search_counts_its_project_once(memory, monkeypatch):
    """Both sides of a search ask how large the filter's project is; the count is made once,
    and again only for a larger bound than one it reached."""
    counted = []
    real = fulltext.project_size

    def counting(conn, filters, most):
        counted.append(most)
        return real(conn, filters, most)

    monkeypatch.setattr(fulltext, "project_size", counting)
    sizes = fulltext.ProjectSize(memory.connection, Filters(project="c"))  # 150 memories
    assert sizes(10) == 11 and sizes(5) == 6 and counted == [10]  # capped: more than the bound
    assert sizes(1000) == 150 and counted == [10, 1000]  # a larger bound: counted again, exact
    assert sizes(20_000) == 150 and sizes(3) == 150 and counted == [10, 1000]
    assert fulltext.ProjectSize(memory.connection, Filters())(10) is None
    # A search in a small project of a file large enough for the vector side to ask as well
    # (and a project too large to be searched exactly).
    monkeypatch.setattr(vectors, "default_candidates", lambda conn: vectors.CANDIDATES * 2)
    monkeypatch.setattr(search, "EXACT_SCOPE", 2)
    counted.clear()
    assert memory.search("zeppelin widget", filters=Filters(project="d"), touch=False)
    assert len(counted) == 1
