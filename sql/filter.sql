-- The WHERE clause shared by list and search: which memories a caller may see. Bound parameters:
-- :now, :include_expired, :layers (JSON array or NULL), :project, :session, :since, :until,
-- :tags (JSON array), :tag_count, :include_aliases.
m.deleted_at IS NULL
AND (:include_aliases OR m.merged_into IS NULL)
AND (:include_expired OR m.expires_at IS NULL OR m.expires_at > :now)
AND (:layers IS NULL OR m.layer IN (SELECT value FROM json_each(:layers)))
AND (:project IS NULL OR m.project = :project)
AND (:session IS NULL OR m.session = :session)
AND (:since IS NULL OR m.created_at >= :since)
AND (:until IS NULL OR m.created_at < :until)
AND (:tag_count = 0 OR m.id IN (
    SELECT memory_id FROM memory_tags
    WHERE tag IN (SELECT value FROM json_each(:tags))
    GROUP BY memory_id HAVING count(*) = :tag_count))
