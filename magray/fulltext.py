"""The text side of search: the query's words, FTS5's candidates within a posting budget, and
BM25 evidence on an absolute scale (see TextScorer and text_candidates; magray/search.py fuses it
with the vector side)."""

from __future__ import annotations

import json
import math
import re
import weakref
from typing import NamedTuple

import apsw

from . import records
from .ranking import DEFAULT_RANKING, Ranking
from .schema import query
from .types import Filters

# An FTS5 auxiliary function, registered with the tokenizer on each connection that scores text.
FTS_TOTALS = "magray_fts_totals"
_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

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


def query_words(text: str) -> list[str]:
    """The words of a query that are searched for: lower case, stopwords dropped unless nothing
    else is left, possessives reduced to their noun, each word once."""
    words = [w.lower() for w in _WORD.findall(text.replace("\u2019", "'"))]
    kept = [w for w in words if w not in STOPWORDS] or words
    # "Melanie's" would be the phrase "melanie s" and miss every plain "Melanie".
    kept = [w[:-2] if w.endswith("'s") else w for w in kept]
    return list(dict.fromkeys(kept))


def fts_query(text: str) -> str | None:
    """A safe FTS5 MATCH expression for what a user typed: each word becomes a quoted string
    (so quotes, *, -, NEAR, AND, parentheses are searched for, never interpreted), joined by OR
    and ranked by BM25."""
    return fts_query_of(query_words(text)) or None


def fts_query_of(words: list[str]) -> str:
    """The MATCH expression for `words`, each one a phrase (in this order), any of them."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class TextHit(NamedTuple):
    memory_id: int
    bm25: float  # BM25 with the Ranking's k1, b and field weights (higher is better)
    evidence: float  # bm25 over the ideal match's, at most 1 (see magray/search.py's docstring)
    matched: int = 1  # how many of the query's words the memory holds
    words: int = 1  # how many words the query has


def text_candidates(conn: apsw.Connection, text: str, filters: Filters, now: float, limit: int,
                    ranking: Ranking = DEFAULT_RANKING, scorer: TextScorer | None = None,
                    sizes: ProjectSize | None = None) -> list[TextHit]:
    """The best `limit` text matches, best first: FTS5 picks the best `rescore_depth` from the
    index, which are then re-scored with the Ranking's BM25 and given their evidence.

    Rarest words first. FTS5's bm25() scores every match of every OR-ed word, and at a million
    memories a common word ("library", "files") has hundreds of thousands of them, while the
    rare words that decide a question have a few thousand. So FTS5 ranks the matches of the
    rarest words only, as many as fit in the Ranking's `text_budget` (always at least the
    rarest word found), and each common word a match also holds adds its idf to that rank
    (what it adds to the ideal match), found by a conjunction ("rare AND common") that probes
    the common word's doclist at the rare matches instead of walking it. A memory holding the
    rare words and most common ones thus ranks as it would with every word searched; every
    candidate is then scored on every word (TextScorer). When all the query's words together
    have at most `text_budget` matches, they are all ranked, as without the bound.

    A memory holding only common words holds none of the words that decide the question: it is
    found only when the rare words' matches do not fill the pool (a filter admits few of them),
    and then the newest such matches fill it (a walk of the common doclists from their newest
    end that stops when the pool is full, rather than ranking them all).

    A filter on a project holding at most 1/SCOPE_SHARE of the memories is applied first, as a
    set of ids each match is looked up in (built once, ~40 ns an id), before the join to
    `memories` (~0.4 us a match) and before bm25(), which then ranks the project's matches
    only. A match outside the project costs about a twentieth of a ranked one there (0.1 us
    against 1.3-2.5 us, measured at 1M), so the budget is SCOPED_BUDGET times larger for less
    work than an unfiltered search: a project's few matches of the rare words rarely fill the
    pool, and with the larger budget the words after them are ranked too, rather than taken
    newest first. At 1M, in a 1% project, the top 10 found this way reached 0.991 of the score
    of the top 10 found by ranking every match (first the same in 30 of 30 questions), against
    0.988 unfiltered (27 of 30); 0.998 with 10x, for 1.3x the time (bench/RESULTS.md)."""
    scorer = scorer or TextScorer(conn, query_words(text), ranking)
    if not scorer.words:
        return []
    scoped = _small_scope(sizes or ProjectSize(conn, filters), scorer.rows)
    rare, common = scorer.split(ranking.text_budget * (SCOPED_BUDGET if scoped else 1))
    match = fts_query_of(rare)
    w_content, w_title, w_tags = ranking.bm25_weights
    params = {"w_content": w_content, "w_title": w_title, "w_tags": w_tags, "match": match}
    bonus = ""
    for j, word in enumerate(common):
        bonus += (f" - :idf{j} * (memories_fts.rowid IN "
                  f"(SELECT rowid FROM memories_fts WHERE memories_fts MATCH :both{j}))")
        params |= {f"idf{j}": scorer.idf_of(word), f"both{j}": f"({match}) AND {fts_query_of([word])}"}
    depth = max(limit, int(ranking.rescore_depth))
    found = _from_index(conn, bonus, params, filters, now, depth) if filters.is_empty() else None
    if found is None:
        sql = _scoped(records.with_filter("search_text"), scoped).replace("/*COMMON*/", bonus)
        params |= records.filter_params(filters, now) | {"limit": depth}
        found = [row[0] for row in conn.execute(sql, params)]
    if len(found) < depth and common:
        found += _newest(conn, fts_query_of(common), filters, now, set(found), depth - len(found), scoped)
    if not found:
        return []
    order = {memory_id: i for i, memory_id in enumerate(found)}
    hits = scorer.score(found)
    return sorted(hits, key=lambda h: (-h.bm25, order[h.memory_id]))[:limit]


# A project filter admitting at most 1/SCOPE_SHARE of the memories is applied before the join
# (text_candidates).
SCOPE_SHARE = 20
# ...and its matches are ranked within this many times the budget (see text_candidates).
SCOPED_BUDGET = 5


def _small_scope(sizes: ProjectSize, rows: int) -> bool:
    """Whether the filter names a project (and maybe a session) that holds at most
    1/SCOPE_SHARE of the memories."""
    most = rows // SCOPE_SHARE
    held = sizes(most)
    return held is not None and held <= most


def project_size(conn: apsw.Connection, filters: Filters, most: int) -> int | None:
    """How many memories (live or not) the filter's project and session hold, counted up to
    `most` + 1 along the project's index; None without a project."""
    if filters.project is None:
        return None
    return conn.execute(f"SELECT count(*) FROM ({_PROJECT_MEMORIES} LIMIT :most)",
                        {"project": filters.project, "session": filters.session, "most": most + 1}).fetchone()[0]


class ProjectSize:
    """`project_size` for one search, counted once for both of its sides (~0.6 ms for a project
    of 10K memories): a count that stopped below its bound is exact for any bound; one that
    reached it answers any smaller bound, and a larger one counts again."""

    def __init__(self, conn: apsw.Connection, filters: Filters) -> None:
        self.conn, self.filters = conn, filters
        self.bound = -1
        self.held: int | None = None

    def __call__(self, most: int) -> int | None:
        if self.filters.project is None:
            return None
        if self.held is not None and self.held <= self.bound:  # exact
            return self.held
        if most > self.bound:
            self.held, self.bound = project_size(self.conn, self.filters, most), most
            return self.held
        return most + 1  # the last count reached a larger bound


# The memories of the filter's project (and session, when it names one), along the project's index.
_PROJECT_MEMORIES = "SELECT id FROM memories WHERE project = :project AND (:session IS NULL OR session = :session)"


def _scoped(sql: str, scoped: bool) -> str:
    """`sql` with the project's ids applied to each match where `scoped` (the unary + keeps the
    planner from looking each id up in FTS5 instead)."""
    scope = f" AND +memories_fts.rowid IN ({_PROJECT_MEMORIES})"
    return sql.replace("/*SCOPE*/", scope if scoped else "")


def _from_index(conn: apsw.Connection, bonus: str, params: dict, filters: Filters, now: float,
                depth: int) -> list[int] | None:
    """With no filter from the caller, the best `depth` matches read from the index alone, then
    the few hidden ones (deleted, expired) dropped; None when too many were hidden to be sure."""
    fetch = depth * 2 + 16
    sql = query("search_text_index").replace("/*COMMON*/", bonus)
    rows = [r[0] for r in conn.execute(sql, params | {"limit": fetch})]
    allowed = records.visible(conn, rows, filters, now)
    found = [memory_id for memory_id in rows if memory_id in allowed]
    return found[:depth] if len(found) >= depth or len(rows) < fetch else None


def _newest(conn: apsw.Connection, match: str, filters: Filters, now: float, skip: set[int],
            room: int, scoped: bool) -> list[int]:
    """Up to `room` memories matching `match` that the filter admits and `skip` does not hold,
    newest first."""
    params = records.filter_params(filters, now) | {"match": match, "limit": room + len(skip)}
    sql = _scoped(records.with_filter("search_text_newest"), scoped)
    newest = [r[0] for r in conn.execute(sql, params)]
    return [memory_id for memory_id in newest if memory_id not in skip][:room]


class TextScorer:
    """BM25 of one query's words with the Ranking's k1, b and field weights, for any memory, and
    its text evidence.

    FTS5's bm25() formula (length = tokens in all columns, column weights multiply term
    frequency) with Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5)), which stays positive: with
    FTS5's, a word held by half the memories or more weighs nothing, so in a small file a memory
    matching the query's words could have no text evidence at all. Computed from the memories'
    text: asking FTS5 for each memory's statistics would re-run the full-text query once per
    memory (~0.1 ms each, measured), while tokenising a short text with FTS5's own tokenizer
    costs a few microseconds.

    The ideal match holds each word once and has the average length, so each word adds
    idf * (k1 + 1) / (1 + k1) = idf to its score: the ideal is the sum of the idfs.

    Document frequencies: FTS5 stores none, so each is counted by walking the word's doclist
    (an fts5vocab table walks it too, measured), ~50 ns a posting: 25 ms for a word held by half
    of a million memories. A word is counted up to the Ranking's `text_budget` matches, exactly;
    the frequency of a more common word is estimated from a fixed number of matches read in
    each of `_STRATA` equal ranges of rowids (an error of a few percent, measured, i.e. a few
    hundredths on an idf that only common words have), so that its cost does not grow with the
    file. The words that decide a question are rare, and always counted."""

    def __init__(self, conn: apsw.Connection, words: list[str], ranking: Ranking) -> None:
        self.conn, self.ranking = conn, ranking
        self.tokenize = _tokenizer(conn)
        phrases = [self.tokenize(w.encode("utf-8"), apsw.FTS5_TOKENIZE_QUERY, None, include_offsets=False,
                                 include_colocated=False) for w in words]
        self.words = [w for w, phrase in zip(words, phrases) if phrase]
        self.phrases = [phrase for phrase in phrases if phrase]
        self.idfs: list[float] = []
        self.frequencies: list[float] = []
        self.average = 0.0
        self.rows = 0
        if not self.words:
            return
        totals = conn.execute(
            f"SELECT {FTS_TOTALS}(memories_fts) FROM memories_fts WHERE memories_fts MATCH ? LIMIT 1",
            (fts_query_of(self.words),)).fetchone()
        # With no match at all, the table's size still sets the words' (high) idf.
        rows, tokens = map(int, totals[0].split()) if totals else (self._row_count(), 0)
        self.rows = rows
        self.average = tokens / max(rows, 1)
        budget = max(int(ranking.text_budget), 0)
        for word in self.words:
            hits = self._frequency(fts_query_of([word]), rows, budget)
            self.frequencies.append(hits)
            self.idfs.append(math.log(1 + (rows - hits + 0.5) / (hits + 0.5)))

    def _row_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM memories_fts").fetchone()[0]

    def _frequency(self, match: str, rows: int, budget: int) -> float:
        """How many memories match `match`: exact up to `budget`, estimated above."""
        counted = self.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM memories_fts WHERE memories_fts MATCH ? LIMIT ?)",
            (match, budget + 1)).fetchone()[0]
        if counted <= budget:
            return counted
        return min(max(self._estimate(match), counted), rows)

    def _estimate(self, match: str) -> float:
        """The matches of `match`, estimated: in each of `_STRATA` equal ranges of rowids, the
        first `_PER_STRATUM` matches, scaled up to the whole range (all of them where there are
        fewer). Equal ranges, rather than one sample, keep a word that is common in one period
        only (a project, a topic) from being counted as common everywhere or nowhere."""
        low, high = self.conn.execute(  # two subqueries: min() and max() each read one end of the index
            "SELECT (SELECT min(id) FROM memories), (SELECT max(id) FROM memories)").fetchone()
        if low is None:
            return 0.0
        span = high - low + 1
        params = {"match": match, "per": _PER_STRATUM}
        for i in range(_STRATA):
            params[f"lo{i}"] = low + span * i // _STRATA
            params[f"hi{i}"] = low + span * (i + 1) // _STRATA - 1
        total = 0.0
        for first, last, found, reached in self.conn.execute(_ESTIMATE, params):
            total += found if found < _PER_STRATUM else found * (last - first + 1) / (reached - first + 1)
        return total

    def split(self, budget: float | None = None) -> tuple[list[str], list[str]]:
        """The words FTS5 ranks every match of, in the query's order: the rarest, as long as
        their matches together stay within the Ranking's `text_budget` (at least the rarest word
        found; all words when they all fit); and the others, the common words, rarest first."""
        budget = self.ranking.text_budget if budget is None else budget
        if sum(self.frequencies) <= budget:
            return list(self.words), []
        ranked = sorted((i for i, hits in enumerate(self.frequencies) if hits),
                        key=lambda i: self.frequencies[i])
        rare: set[int] = set()
        total = 0.0
        for i in ranked:
            if rare and total + self.frequencies[i] > budget:
                break
            rare.add(i)
            total += self.frequencies[i]
        return ([w for i, w in enumerate(self.words) if i in rare],
                [self.words[i] for i in ranked if i not in rare])

    def idf_of(self, word: str) -> float:
        return self.idfs[self.words.index(word)]

    @property
    def ideal(self) -> float:
        return sum(self.idfs)

    def score(self, memory_ids: list[int]) -> list[TextHit]:
        """The BM25 and evidence of each memory (0 for one that holds none of the words)."""
        if not self.idfs or not memory_ids:
            return [TextHit(m, 0.0, 0.0, 0, len(self.phrases)) for m in memory_ids]
        k1, b = self.ranking.bm25_k1, self.ranking.bm25_b
        weights = self.ranking.bm25_weights
        # Most columns hold none of the query's tokens: one set test skips them.
        wanted = {token for phrase in self.phrases for token in phrase}
        scored = []
        for memory_id, *columns in self.conn.execute(
                "SELECT id, content, coalesce(title, ''), tags_text FROM memories "
                "WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(memory_ids),)):
            length = 0
            freqs = [0.0] * len(self.phrases)
            for weight, text in zip(weights, columns):
                if not text:
                    continue
                tokens = self.tokenize(text.encode("utf-8"), apsw.FTS5_TOKENIZE_DOCUMENT, None,
                                       include_offsets=False, include_colocated=False)
                length += len(tokens)
                if wanted.isdisjoint(tokens):
                    continue
                for i, phrase in enumerate(self.phrases):
                    count = tokens.count(phrase[0]) if len(phrase) == 1 else _occurrences(phrase, tokens)
                    if count:
                        freqs[i] += weight * count
            norm = k1 * (1 - b + b * length / self.average) if self.average else k1
            total, matched = 0.0, 0
            for freq, idf in zip(freqs, self.idfs):
                if freq:
                    total += idf * freq * (k1 + 1) / (freq + norm)
                    matched += 1
            scored.append(TextHit(memory_id, total, min(total / self.ideal, 1.0), matched, len(self.phrases)))
        return scored


# The estimate of a common word's document frequency (TextScorer._estimate): this many ranges of
# rowids, this many matches read in each. 8 x 256 matched every frequency above 5,000 of 30
# questions' words within 5.3% at 100K and 1M memories, in ~1 ms a word (bench/RESULTS.md).
_STRATA, _PER_STRATUM = 8, 256
_ESTIMATE = " UNION ALL ".join(
    f"SELECT :lo{i}, :hi{i}, count(*), max(rowid) FROM (SELECT rowid FROM memories_fts "
    f"WHERE memories_fts MATCH :match AND rowid BETWEEN :lo{i} AND :hi{i} LIMIT :per)"
    for i in range(_STRATA))


def _occurrences(phrase: list[str], tokens: list[str]) -> int:
    """How many times the token sequence `phrase` appears in `tokens` (as FTS5 counts a phrase)."""
    if not phrase:
        return 0
    n = len(phrase)
    if n == 1:
        return tokens.count(phrase[0])
    return sum(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


def _tokenizer(conn: apsw.Connection):
    """FTS5's tokenizer as memories_fts uses it (read from its declaration), once per connection."""
    if conn not in _tokenizers:
        sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'memories_fts'").fetchone()[0]
        name, *args = re.search(r"tokenize\s*=\s*'([^']*)'", sql).group(1).split()
        _tokenizers[conn] = conn.fts5_tokenizer(name, args)
        conn.register_fts5_function(FTS_TOTALS, _totals)
    return _tokenizers[conn]


def _totals(api: apsw.FTS5ExtensionApi) -> str:
    """'rows tokens': the number of rows of the table and of tokens in all its columns."""
    return f"{api.row_count} {api.column_total_size(-1)}"
