"""Hybrid search: BM25 over FTS5 and vector KNN, fused on an absolute scale of evidence, lifted
by the neighbouring turns of a conversation, then ranked with recency and use.

Fusion. Each side says how strongly a memory answers the query on a scale that does not depend
on the other candidates:
- text evidence = the memory's BM25 / the BM25 of an ideal match, a memory of average length that
  holds every query word once (which is the sum of the words' idf). It is the share of the query
  the memory matches, each word weighted by how rare it is: one common word ("team", "due") is a
  small part of a question's evidence, while the rare, specific words that decide a question are
  most of it. Query words found nowhere keep their (high) idf in the ideal, so a question whose
  decisive words are not in the file gets little text evidence from its common ones.
- vector evidence = the cosine similarity, already on a fixed scale.
The fused relevance is their weighted sum; a relevance floor (`min_score`) drops what no stored
memory answers. The weights and the floor were measured on dev data (bench/search_quality.py,
bench/RESULTS.md)."""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import apsw

from . import lifecycle, records, vectors
from .db import read_snapshot
from .errors import InvalidInput
from .fulltext import ProjectSize, TextHit, TextScorer, query_words, text_candidates
from .ranking import DEFAULT_RANKING, Ranking
from .types import Filters, SearchHit

MODES = ("hybrid", "vector", "text")
FUSIONS = ("convex", "rrf")
def vector_candidates(conn: apsw.Connection, generation: int, query_vec, filters: Filters,
                      now: float, limit: int, sizes: ProjectSize | None = None) -> list[tuple[int, float]]:
    """(memory id, cosine similarity of its best chunk) best first, only memories the filter admits:
    the best `limit` of them whatever the number of chunks per memory and of hidden memories."""
    if filters.tags:
        # Tags are not in the vector index: score every chunk of the memories that carry them.
        return _exact_candidates(conn, generation, query_vec, filters, now, limit)
    few = _few_ids(conn, filters, now)
    if few is not None:
        # A selective scope: scoring its memories' chunks directly is exact and cheaper than
        # probing the index until enough of them turn up.
        return _best_per_memory(vectors.exact(conn, generation, query_vec, few, None), limit)
    # The bit pass ranks only the chunks that pass the filter, so a project's nearest vectors
    # sink no deeper among them than in a file of the project's size: a project of at most
    # CANDIDATES_FLAT_ROWS memories gets the pool of such a file, however large this one is
    # (at 1M, a 1% project: recall@10 0.923 with 256 candidates, 0.927 with 1,024, a quarter of
    # the re-ranking; bench/RESULTS.md).
    candidates = vectors.default_candidates(conn)
    if candidates > vectors.CANDIDATES:  # a file larger than the flat pool's
        held = (sizes or ProjectSize(conn, filters))(vectors.CANDIDATES_FLAT_ROWS)
        if held is not None and held <= vectors.CANDIDATES_FLAT_ROWS:
            candidates = vectors.CANDIDATES
    # Twice the memories asked for, in chunks: a long memory may fill several places.
    k = min(limit * 2, vectors.MAX_K)
    while True:
        hits = vectors.knn(conn, generation, query_vec, k, filters, candidates=candidates)
        best = _best_per_memory(hits, None)
        allowed = records.visible(conn, [m for m, _ in best], filters, now)
        kept = [(m, s) for m, s in best if m in allowed]
        if len(kept) >= limit or len(hits) < k:  # enough, or every chunk that passes was seen
            return kept[:limit]
        if k == vectors.MAX_K:
            # Chunks of hidden (expired, deleted) memories or of long documents still crowd the
            # largest list sqlite-vec gives: score the admitted memories' chunks directly.
            return _exact_candidates(conn, generation, query_vec, filters, now, limit)
        # Chunks of hidden memories or of a long memory crowd the list: widen and try again.
        k = min(k * 4, vectors.MAX_K)


# A project or session filter admitting at most this many memories is searched exactly. At 1,000
# it cost more than the index: 39 ms for a 1% project of 100K memories, 12 ms for the unfiltered
# index scan (bench/RESULTS.md).
EXACT_SCOPE = 200


def _few_ids(conn: apsw.Connection, filters: Filters, now: float) -> list[int] | None:
    """The memories a project or session filter admits, when there are at most EXACT_SCOPE of
    them (an indexed lookup that stops there); else None."""
    if filters.project is None and filters.session is None:
        return None
    ids = records.filtered_ids(conn, filters, now, most=EXACT_SCOPE + 1)
    return ids if len(ids) <= EXACT_SCOPE else None


def _exact_candidates(conn: apsw.Connection, generation: int, query_vec, filters: Filters,
                      now: float, limit: int) -> list[tuple[int, float]]:
    hits = vectors.exact(conn, generation, query_vec, records.filtered_ids(conn, filters, now), None)
    return _best_per_memory(hits, limit)


def _best_per_memory(hits: list[tuple[int, int, float]], limit: int | None) -> list[tuple[int, float]]:
    """(memory id, similarity of its best chunk) from chunk hits sorted best first."""
    best: dict[int, float] = {}
    for _, memory_id, sim in hits:
        if memory_id not in best:
            best[memory_id] = sim
    ranked = list(best.items())
    return ranked if limit is None else ranked[:limit]


def _part(parts: dict[int, dict], memory_id: int) -> dict:
    return parts.setdefault(memory_id, {"text_rank": None, "bm25": None, "text_evidence": None,
                                        "text_score": None, "vector_rank": None, "similarity": None,
                                        "context": None, "fused": 0.0})


def score(conn: apsw.Connection, text: list[TextHit], vector: list[tuple[int, float]],
          filters: Filters, now: float,
          ranking: Ranking = DEFAULT_RANKING) -> dict[int, dict[str, float | int | None]]:
    """The relevance of each candidate (and of the neighbours they lift)."""
    parts = fuse(text, vector, ranking)
    spread(conn, parts, filters, now, ranking)
    return parts


def fuse(text: list[TextHit], vector: list[tuple[int, float]],
         ranking: Ranking = DEFAULT_RANKING) -> dict[int, dict[str, float | int | None]]:
    """One relevance score per memory from the text and vector lists (see Ranking.fusion)."""
    if ranking.fusion not in FUSIONS:
        raise InvalidInput(f"unknown fusion {ranking.fusion!r}: use {' or '.join(FUSIONS)}")
    convex = ranking.fusion == "convex"
    parts: dict[int, dict[str, float | int | None]] = {}
    for rank, hit in enumerate(text, start=1):
        p = _part(parts, hit.memory_id)
        p["text_rank"], p["bm25"], p["text_evidence"] = rank, round(hit.bm25, 6), round(hit.evidence, 6)
        p["text_score"] = ranking.text_weight * (text_strength(hit, ranking) if convex
                                                 else 1 / (ranking.rrf_k + rank))
        p["fused"] += p["text_score"]
    for rank, (memory_id, sim) in enumerate(vector, start=1):
        p = _part(parts, memory_id)
        p["vector_rank"], p["similarity"] = rank, round(sim, 6)
        p["fused"] += ranking.vector_weight * (max(sim, 0.0) if convex else 1 / (ranking.rrf_k + rank))
    return parts


def text_strength(hit: TextHit, ranking: Ranking = DEFAULT_RANKING) -> float:
    """How much a text match counts in the fusion: its evidence to the power `text_power`, so
    that a partial match counts much less than a full one (a third of the query: a ninth), and
    a share `single_word_share` of that when it holds only one word of a query of several (one
    shared word is as often a coincidence, glass for glasses, as a sign)."""
    strength = hit.evidence ** ranking.text_power
    return strength * ranking.single_word_share if hit.matched == 1 and hit.words > 1 else strength


def spread(conn: apsw.Connection, parts: dict[int, dict], filters: Filters, now: float,
           ranking: Ranking = DEFAULT_RANKING) -> None:
    """Lift each memory by a share of the text score of its neighbours in its conversation (the
    memory stored just before and just after it in the same project and session, among those the
    filter admits), up to `context_ceiling` of the best of them; a neighbour that was no
    candidate joins the results this way."""
    own = {memory_id: p["text_score"] for memory_id, p in parts.items() if p.get("text_score")}
    if not own or not (ranking.next_weight or ranking.previous_weight):
        return
    params = records.filter_params(filters, now) | {"ids": json.dumps(list(own))}
    gains: dict[int, float] = {}
    ceilings: dict[int, float] = {}
    for memory_id, previous, following in conn.execute(records.with_filter("neighbours"), params):
        for neighbour, share in ((following, ranking.next_weight), (previous, ranking.previous_weight)):
            if neighbour is not None and share:
                gains[neighbour] = gains.get(neighbour, 0.0) + share * own[memory_id]
                ceilings[neighbour] = max(ceilings.get(neighbour, 0.0),
                                          ranking.context_ceiling * parts[memory_id]["fused"])
    for memory_id, gain in gains.items():
        p = _part(parts, memory_id)
        lifted = max(p["fused"], min(p["fused"] + gain, ceilings[memory_id]))
        p["context"] = lifted - p["fused"]
        p["fused"] = lifted


def find(conn: apsw.Connection, text: str, query_vec, generation: int | None, filters: Filters,
         now: float, k: int, mode: str, ranking: Ranking = DEFAULT_RANKING,
         min_score: float = 0.0) -> list[SearchHit]:
    """The best `k` memories for `text` (and its vector, None for none), in one read snapshot."""
    pool = max(k * 5, 50)
    text_hits: list[TextHit] = []
    vector_hits: list[tuple[int, float]] = []
    with read_snapshot(conn):
        sizes = ProjectSize(conn, filters)
        if mode in ("text", "hybrid"):
            scorer = TextScorer(conn, query_words(text), ranking)
            text_hits = text_candidates(conn, text, filters, now, pool, ranking, scorer, sizes)
        if query_vec is not None and generation is not None:
            vector_hits = vector_candidates(conn, generation, query_vec, filters, now, pool, sizes)
        if mode == "hybrid" and vector_hits:
            text_hits, vector_hits = _complete(conn, generation, query_vec, scorer, text_hits, vector_hits)
        parts = score(conn, text_hits, vector_hits, filters, now, ranking)
        # A near-duplicate alias stands for the memory it was merged into, which must itself
        # pass the filter (live, unexpired, in scope) to be returned.
        parts = lifecycle.fold_parts(conn, parts)
        ranked = rank(standing(conn, list(parts), filters, now), parts, now, k, ranking, min_score)
        # Whole records (content, metadata) only for the memories returned.
        found = records.get_many(conn, [memory_id for memory_id, _, _ in ranked])
    return [SearchHit(memory=found[memory_id], score=score, parts=p) for memory_id, score, p in ranked
            if memory_id in found]


def _complete(conn: apsw.Connection, generation: int, query_vec, scorer: TextScorer,
              text_hits: list[TextHit], vector_hits: list[tuple[int, float]]
              ) -> tuple[list[TextHit], list[tuple[int, float]]]:
    """Both kinds of evidence for every candidate: the cosine of each text match that was not
    among the nearest vectors, the text evidence of each vector match that was not among the
    best text matches. Otherwise a memory found by one side would score 0 on the other, however
    close it is, only because the other's list was cut (a hybrid would lose to its own parts)."""
    in_text = {h.memory_id for h in text_hits}
    in_vector = {memory_id for memory_id, _ in vector_hits}
    no_cosine = [h.memory_id for h in text_hits if h.memory_id not in in_vector]
    no_text = [memory_id for memory_id, _ in vector_hits if memory_id not in in_text]
    if no_cosine:
        rows = vectors.exact(conn, generation, query_vec, no_cosine, None)
        vector_hits = sorted(vector_hits + _best_per_memory(rows, None), key=lambda h: -h[1])
    if no_text:
        found = [h for h in scorer.score(no_text) if h.bm25 > 0]
        text_hits = sorted(text_hits + found, key=lambda h: -h.bm25)
    return text_hits, vector_hits


class Standing(NamedTuple):
    """What ranking needs of a memory besides its relevance."""
    layer: str
    created_at: float
    access_count: int


def standing(conn: apsw.Connection, ids: list[int], filters: Filters, now: float) -> dict[int, Standing]:
    """The layer, age and use of each memory of `ids` that the filter admits (live, unexpired,
    in scope)."""
    sql = ("SELECT m.id, m.layer, m.created_at, m.access_count FROM memories AS m "
           "WHERE m.id IN (SELECT value FROM json_each(:ids)) AND " + records.query("filter"))
    params = records.filter_params(filters, now) | {"ids": json.dumps(ids)}
    return {row[0]: Standing(*row[1:]) for row in conn.execute(sql, params)}


def rank(standings: dict[int, Standing], parts: dict[int, dict], now: float, k: int,
         ranking: Ranking = DEFAULT_RANKING, min_score: float = 0.0) -> list[tuple[int, float, dict]]:
    """(memory id, score, parts) of the best `k`: fused relevance, lifted a little by recency
    (per-layer half-life) and by use; memories whose relevance is below `min_score` are left out
    (none when it is 0), and so are those without a standing (not admitted)."""
    half_lives = dict(ranking.half_life_days)
    ranked = []
    for memory_id, p in parts.items():
        record = standings.get(memory_id)
        if record is None or (min_score > 0 and p["fused"] < min_score):
            continue
        age_days = max(0.0, now - record.created_at) / 86400.0
        recency = 0.5 ** (age_days / half_lives.get(record.layer, 30.0))
        use = math.log1p(record.access_count) / math.log1p(100)
        score = p["fused"] * (1 + ranking.recency_weight * recency + ranking.use_weight * min(use, 1.0))
        ranked.append((memory_id, score, record.created_at, p, recency, use))
    ranked.sort(key=lambda r: (-r[1], -r[2], -r[0]))
    return [(memory_id, score, dict(p, recency=round(recency, 6), use=round(use, 6),
                                    **{name: round(p[name], 6) for name in ("fused", "text_score", "context")
                                       if p.get(name) is not None}))
            for memory_id, score, _, p, recency, use in ranked[:k]]
