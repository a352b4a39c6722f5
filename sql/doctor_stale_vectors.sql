-- doctor: live memories embedded as one chunk whose text is not their content (the content changed
-- after the vectors were made, e.g. by an update racing a reindex). A one-chunk memory was embedded
-- whole, so its chunk's text hash equals its content hash. Memories of several chunks are checked
-- against the model's chunking in health.py. Returns memory ids.
SELECT m.id
FROM memories AS m
JOIN chunks AS c ON c.memory_id = m.id AND c.generation = :generation
WHERE m.deleted_at IS NULL
GROUP BY m.id
HAVING count(*) = 1 AND max(c.seq) = 0 AND max(c.text_hash) != m.content_hash
ORDER BY m.id
