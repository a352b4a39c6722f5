INSERT INTO memories (layer, content, content_hash, title, kind, source, project, session, metadata,
                      created_at, updated_at, importance, expires_at)
VALUES (:layer, :content, :content_hash, :title, :kind, :source, :project, :session, :metadata,
        :created_at, :created_at, :importance, :expires_at)
RETURNING id
