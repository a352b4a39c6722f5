-- Version 7: an index on the session alone. A search within a session of any project decides
-- between exact and indexed vector search by counting the session's memories; memories_scope
-- (project, session) cannot serve a session without its project, so that count scanned every
-- memory (~2 s at 1M when the session matched nothing).
CREATE INDEX IF NOT EXISTS memories_session ON memories (session);
