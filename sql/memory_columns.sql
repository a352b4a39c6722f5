m.id, m.layer, m.content, m.content_hash, m.title, m.kind, m.source, m.project, m.session,
m.tags_text, m.metadata, m.created_at, m.updated_at, m.accessed_at, m.access_count, m.importance,
m.expires_at, m.deleted_at, m.merged_into
