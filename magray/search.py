"""Hybrid search: BM25 over FTS5 and vector KNN, fused by weighted reciprocal rank, then ranked
with recency and use."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import apsw

from . import records, vectors
from .types import Filters, MemoryRecord, SearchHit

MODES = ("hybrid", "vector", "text")

# Words that carry no meaning of their own in a query. They are dropped from the query (never from
# the index), so "what did I say about the cat" searches for "say" and "cat".
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being
below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't
down during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's
her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it
it's its itself let's me more most mustn't my myself no nor not of off on once only or other ought
our ours ourselves out over own same shan't she she'd she'll she's should shouldn't so some such
than that that's the their theirs them themselves then there there's these they they'd they'll
they're they've this those through to too under until up very was wasn't we we'd we'll we're we've
were weren't what what's when when's where where's which while who who's whom why why's will with
won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
""".split())
_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression for what a user typed: each word becomes a quoted string
    (so quotes, *, -, NEAR, AND, parentheses are searched for, never interpreted), joined by OR
    and ranked by BM25. Stopwords are dropped unless nothing else is left."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return None
    kept = [w for w in words if w not in STOPWORDS] or words
    unique = list(dict.fromkeys(kept))
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in unique)


@dataclass(frozen=True)
class Ranking:
    """How the two result lists are fused and how recency and use adjust the result."""

    rrf_k: float = 60.0
    text_weight: float = 1.0
    vector_weight: float = 1.0
    # Field weights for bm25(): content, title, tags.
    bm25_weights: tuple[float, float, float] = (1.0, 2.0, 2.0)
    recency_weight: float = 0.1
    use_weight: float = 0.05
    # Half-life of the recency bonus per layer, in days.
    half_life_days: tuple[tuple[str, float], ...] = (("interact", 1.0), ("insights", 30.0),
                                                     ("assets", 365.0))


DEFAULT_RANKING = Ranking()


def text_candidates(conn: apsw.Connection, text: str, filters: Filters, now: float, limit: int,
                    ranking: Ranking = DEFAULT_RANKING) -> list[tuple[int, float]]:
    """(memory id, bm25) best first."""
    match = fts_query(text)
    if match is None:
        return []
    w_content, w_title, w_tags = ranking.bm25_weights
    params = records.filter_params(filters, now) | {
        "match": match, "limit": limit, "w_content": w_content, "w_title": w_title, "w_tags": w_tags}
    return [(row[0], row[1]) for row in conn.execute(records.with_filter("search_text"), params)]


def vector_candidates(conn: apsw.Connection, generation: int, query_vec, filters: Filters,
                      now: float, limit: int) -> list[tuple[int, float]]:
    """(memory id, cosine similarity of its best chunk) best first, only memories the filter admits."""
    if filters.tags:
        # Tags are not in the vector index: score every chunk of the memories that carry them.
        ids = filtered_ids(conn, filters, now)
        hits = vectors.exact(conn, generation, query_vec, ids, limit * 4)
        return _best_per_memory(hits, limit)
    candidates = 400
    while True:
        hits = vectors.knn(conn, generation, query_vec, limit * 4, filters, candidates=candidates)
        best = _best_per_memory(hits, None)
        allowed = visible(conn, [m for m, _ in best], filters, now)
        kept = [(m, s) for m, s in best if m in allowed]
        # Chunks of hidden (expired, deleted) memories can crowd the list: widen and try again.
        if len(kept) >= limit or len(hits) < limit * 4 or candidates >= 100_000:
            return kept[:limit]
        candidates *= 4


def _best_per_memory(hits: list[tuple[int, int, float]], limit: int | None) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for _, memory_id, sim in hits:
        if memory_id not in best:
            best[memory_id] = sim
    ranked = list(best.items())
    return ranked if limit is None else ranked[:limit]


def filtered_ids(conn: apsw.Connection, filters: Filters, now: float) -> list[int]:
    sql = "SELECT m.id FROM memories AS m WHERE /*FILTER*/".replace("/*FILTER*/", records.query("filter"))
    return [r[0] for r in conn.execute(sql, records.filter_params(filters, now))]


def visible(conn: apsw.Connection, ids: list[int], filters: Filters, now: float) -> set[int]:
    import json

    sql = ("SELECT m.id FROM memories AS m WHERE m.id IN (SELECT value FROM json_each(:ids)) AND "
           + records.query("filter"))
    return {r[0] for r in conn.execute(sql, records.filter_params(filters, now) | {"ids": json.dumps(ids)})}


def fuse(text: list[tuple[int, float]], vector: list[tuple[int, float]],
         ranking: Ranking = DEFAULT_RANKING) -> dict[int, dict[str, float | int | None]]:
    """Weighted reciprocal rank fusion: each list adds weight / (rrf_k + rank)."""
    parts: dict[int, dict[str, float | int | None]] = {}
    for rank, (memory_id, bm25) in enumerate(text, start=1):
        p = parts.setdefault(memory_id, {"text_rank": None, "bm25": None, "vector_rank": None,
                                         "similarity": None, "fused": 0.0})
        p["text_rank"], p["bm25"] = rank, round(bm25, 6)
        p["fused"] += ranking.text_weight / (ranking.rrf_k + rank)
    for rank, (memory_id, sim) in enumerate(vector, start=1):
        p = parts.setdefault(memory_id, {"text_rank": None, "bm25": None, "vector_rank": None,
                                         "similarity": None, "fused": 0.0})
        p["vector_rank"], p["similarity"] = rank, round(sim, 6)
        p["fused"] += ranking.vector_weight / (ranking.rrf_k + rank)
    return parts


def rank(records_by_id: dict[int, MemoryRecord], parts: dict[int, dict], now: float, k: int,
         ranking: Ranking = DEFAULT_RANKING) -> list[SearchHit]:
    """Fused relevance, lifted a little by recency (per-layer half-life) and by use."""
    half_lives = dict(ranking.half_life_days)
    hits = []
    for memory_id, p in parts.items():
        record = records_by_id.get(memory_id)
        if record is None:
            continue
        age_days = max(0.0, now - record.created_at) / 86400.0
        recency = 0.5 ** (age_days / half_lives.get(record.layer, 30.0))
        use = math.log1p(record.access_count) / math.log1p(100)
        score = p["fused"] * (1 + ranking.recency_weight * recency + ranking.use_weight * min(use, 1.0))
        p = dict(p, fused=round(p["fused"], 6), recency=round(recency, 6), use=round(use, 6))
        hits.append(SearchHit(memory=record, score=score, parts=p))
    hits.sort(key=lambda h: (-h.score, -h.memory.created_at, -h.memory.id))
    return hits[:k]
