SELECT layer,
       sum(deleted_at IS NULL AND (expires_at IS NULL OR expires_at > :now)) AS live,
       sum(deleted_at IS NULL AND expires_at <= :now) AS expired,
       sum(deleted_at IS NOT NULL) AS deleted
FROM memories
GROUP BY layer
