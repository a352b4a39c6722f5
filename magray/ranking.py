"""How search ranks: the weights of the fusion, the text side's BM25 and bounds, the context
lift, recency and use, and the relevance floor (one immutable value, so a caller or a benchmark can
try others; see magray/search.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ranking:
    """How the two result lists are fused and how recency and use adjust the result.

    The defaults were tuned on half of a conversational recall benchmark and checked on the other
    half (bench/recall_quality.py, bench/RESULTS.md)."""

    # "convex": text_weight * text evidence (BM25 over the ideal match's, see magray/search.py's
    # docstring) + vector_weight * cosine similarity: both on absolute scales, so a candidate's
    # score does not depend on how weak the other candidates are.
    # "rrf": weighted reciprocal rank fusion, weight / (rrf_k + rank) from each list.
    fusion: str = "convex"
    text_weight: float = 0.5
    vector_weight: float = 0.5
    text_power: float = 2.0
    single_word_share: float = 0.4
    rrf_k: float = 60.0
    # A memory of a conversation is often the answer to the one before it ("who was it?" "Matt"),
    # which alone matches none of the query's words: each memory passes a share of its text score
    # to the next memory of the same project and (non-empty) session, and a share back to the one
    # before. Only the text score spreads: neighbouring turns share a topic, so their vectors are
    # already close, and spreading cosine as well blurs the vector ranking (measured).
    next_weight: float = 0.7
    previous_weight: float = 0.3
    # ...but a memory lifted that way stays below the memory that lifts it: at most this share
    # of its score (math.inf: no limit). The reply is found through the turn it answers, which
    # is the better evidence; without the limit a large share also pushed many a right first
    # hit to second place (R@1 0.41 -> 0.38 at next_weight 0.7, measured).
    context_ceiling: float = 0.9
    # Field weights for bm25(): content, title, tags.
    bm25_weights: tuple[float, float, float] = (1.0, 2.0, 2.0)
    # BM25's term-frequency saturation and length normalisation. FTS5's bm25() fixes k1 = 1.2,
    # b = 0.75 and picks the best `rescore_depth` matches, which TextScorer re-scores with these.
    # A low b suits short texts such as conversation turns: with b = 0.75 a turn is punished
    # for saying one more thing (LoCoMo dev R@5: b 0 / 0.05 / 0.1 / 0.25 gave 0.718 / 0.724 /
    # 0.721 / 0.708, bench/RESULTS.md).
    bm25_k1: float = 1.2
    bm25_b: float = 0.05
    rescore_depth: int = 100
    # How many FTS5 matches a text search ranks one by one (see text_candidates): those of the
    # query's rarest words, up to this many in all. It bounds the work of a query whose words are
    # common in a large file (1.3-2.5 us a match ranked at 1M memories); where all the query's
    # words have fewer matches than this, the search is the same as without the bound. 5,000:
    # at 1M, the top 10 of 30 questions reach the same share of the exact top 10's score as when
    # every match is ranked, in a fifth of the time (bench/RESULTS.md).
    text_budget: int = 5000
    recency_weight: float = 0.1
    use_weight: float = 0.05
    # A vague time word ("recently", "lately") filters nothing; it multiplies recency_weight.
    vague_recency_factor: float = 4.0
    # The relevance floor: a memory whose fused relevance is below it is not returned, so that a
    # question about something never stored returns nothing (min_score=0 in search: everything).
    min_score: float = 0.134
    # Half-life of the recency bonus per layer, in days.
    half_life_days: tuple[tuple[str, float], ...] = (("interact", 1.0), ("insights", 30.0),
                                                     ("assets", 365.0))


DEFAULT_RANKING = Ranking()
