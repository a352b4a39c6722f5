-- doctor: chunk rows that belong to nothing live: chunks of the live generation whose memory is gone
-- or soft-deleted, and chunks of a generation that is neither live nor being re-indexed (:pending).
SELECT c.id
FROM chunks AS c
LEFT JOIN memories AS m ON m.id = c.memory_id AND m.deleted_at IS NULL
WHERE (c.generation = :generation AND m.id IS NULL)
   OR c.generation NOT IN (:generation, coalesce(:pending, :generation))
ORDER BY c.id
