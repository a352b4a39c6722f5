-- doctor: vectors of the live generation that no chunk of a live memory owns (the memory was purged
-- or soft-deleted without its vectors, the chunk row is gone, or the two disagree on the memory).
-- /*VEC*/ is the vec0 table of :generation. Returns chunk ids (the vec0 rowids).
SELECT v.chunk_id
FROM /*VEC*/ AS v
LEFT JOIN chunks AS c ON c.id = v.chunk_id AND c.generation = :generation
LEFT JOIN memories AS m ON m.id = c.memory_id AND m.deleted_at IS NULL
WHERE m.id IS NULL OR v.memory_id IS NOT c.memory_id
ORDER BY v.chunk_id
