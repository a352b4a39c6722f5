-- A memory that was read counts as used; insights live on while they are used.
UPDATE memories
SET access_count = access_count + 1,
    accessed_at = :now,
    expires_at = CASE
        WHEN layer IN (SELECT value FROM json_each(:renewed_layers)) AND expires_at IS NOT NULL
        THEN max(expires_at, :now + (SELECT value FROM json_each(:ttls) WHERE key = layer))
        ELSE expires_at END
WHERE id IN (SELECT value FROM json_each(:ids))
