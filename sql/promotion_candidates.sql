-- Memories that the promotion rules move up a layer, with the reason.
SELECT m.id, 'insights' AS target, 'used ' || m.access_count || ' times' AS reason
FROM memories AS m
WHERE m.layer = 'interact' AND m.deleted_at IS NULL AND m.merged_into IS NULL
  AND (m.expires_at IS NULL OR m.expires_at > :now)
  AND m.access_count >= :interact_min_uses
UNION ALL
SELECT m.id, 'assets',
       CASE WHEN m.importance >= :insights_min_importance THEN 'importance ' || m.importance
            ELSE 'used in ' || (SELECT count(*) FROM memory_uses AS u WHERE u.memory_id = m.id) || ' sessions' END
FROM memories AS m
WHERE m.layer = 'insights' AND m.deleted_at IS NULL AND m.merged_into IS NULL
  AND (m.expires_at IS NULL OR m.expires_at > :now)
  AND (m.importance >= :insights_min_importance
       OR (SELECT count(*) FROM memory_uses AS u WHERE u.memory_id = m.id) >= :insights_min_sessions)
ORDER BY 1
