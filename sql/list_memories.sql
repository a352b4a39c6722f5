SELECT /*COLUMNS*/
FROM memories AS m
WHERE /*FILTER*/
ORDER BY m.created_at DESC, m.id DESC
LIMIT :limit OFFSET :offset
