-- BM25 over content, title and tags (weights: a word in the title or a tag says more than one in
-- the body), restricted by the shared filter; best first (bm25() is lower for better matches).
-- What the query's common words add to the rank is inserted at COMMON (fulltext.text_candidates).
SELECT m.id, bm25(memories_fts, :w_content, :w_title, :w_tags) /*COMMON*/ AS rank
FROM memories_fts
JOIN memories AS m ON m.id = memories_fts.rowid
WHERE memories_fts MATCH :match /*SCOPE*/ AND /*FILTER*/
ORDER BY rank
LIMIT :limit
