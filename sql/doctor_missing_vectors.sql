-- doctor: live memories whose vectors are missing or incomplete in the live generation: no chunk
-- at all, or a chunk whose vector row is gone. /*VEC*/ is the vec0 table of :generation.
WITH vec AS MATERIALIZED (SELECT chunk_id FROM /*VEC*/)
SELECT m.id
FROM memories AS m
WHERE m.deleted_at IS NULL
  AND (NOT EXISTS (SELECT 1 FROM chunks AS c WHERE c.memory_id = m.id AND c.generation = :generation)
       OR EXISTS (SELECT 1 FROM chunks AS c WHERE c.memory_id = m.id AND c.generation = :generation
                  AND c.id NOT IN (SELECT chunk_id FROM vec)))
ORDER BY m.id
