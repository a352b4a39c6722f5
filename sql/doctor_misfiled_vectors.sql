-- doctor: vectors filed under another layer, project or session than their memory (a search with
-- that filter would miss them). /*VEC*/ is the vec0 table of :generation. Returns memory ids.
SELECT DISTINCT m.id
FROM /*VEC*/ AS v
JOIN chunks AS c ON c.id = v.chunk_id AND c.generation = :generation
JOIN memories AS m ON m.id = c.memory_id AND m.deleted_at IS NULL
WHERE v.layer IS NOT m.layer OR v.project IS NOT m.project OR v.session IS NOT m.session
ORDER BY m.id
