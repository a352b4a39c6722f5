-- doctor: live memories whose vectors are missing or incomplete in the live generation: no chunk at
-- all, a chunk whose vector row is gone, a gap in the chunk sequence, or a vector that names the
-- memory but whose chunk row is gone. /*VEC*/ is the vec0 table of :generation.
WITH vec AS MATERIALIZED (SELECT chunk_id, memory_id FROM /*VEC*/),
     lost AS (SELECT DISTINCT memory_id FROM vec
              WHERE chunk_id NOT IN (SELECT id FROM chunks WHERE generation = :generation))
SELECT m.id
FROM memories AS m
WHERE m.deleted_at IS NULL
  AND (NOT EXISTS (SELECT 1 FROM chunks AS c WHERE c.memory_id = m.id AND c.generation = :generation)
       OR EXISTS (SELECT 1 FROM chunks AS c WHERE c.memory_id = m.id AND c.generation = :generation
                  AND c.id NOT IN (SELECT chunk_id FROM vec))
       OR (SELECT count(*) != max(seq) + 1 FROM chunks AS c
           WHERE c.memory_id = m.id AND c.generation = :generation)
       OR m.id IN (SELECT memory_id FROM lost))
ORDER BY m.id
