-- The newest matches the shared filter admits, read from the newest end of the doclists (FTS5
-- walks them in rowid order, so this stops after :limit matches that pass).
SELECT m.id
FROM memories_fts
JOIN memories AS m ON m.id = memories_fts.rowid
WHERE memories_fts MATCH :match /*SCOPE*/ AND /*FILTER*/
ORDER BY memories_fts.rowid DESC
LIMIT :limit
