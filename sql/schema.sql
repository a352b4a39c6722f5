-- The current magray schema in one file: what migrations/0001..0007 produce on a blank file.
-- tests/test_schema.py checks that the two stay equal. Vector tables (vec_chunks_<generation>) are
-- created when a model is bound: see magray/vectors.py.


CREATE TABLE memories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, also after a purge
    layer        TEXT    NOT NULL DEFAULT 'interact' CHECK (layer IN ('interact', 'insights', 'assets')),
    content      TEXT    NOT NULL CHECK (length(content) > 0),
    content_hash TEXT,                              -- sha256 of content; NULL until magray fills it
    title        TEXT,
    kind         TEXT,
    source       TEXT,
    project      TEXT    NOT NULL DEFAULT '',
    session      TEXT    NOT NULL DEFAULT '',
    tags_text    TEXT    NOT NULL DEFAULT '',   -- derived from memory_tags by triggers; indexed by FTS
    metadata     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    -- unix seconds (UTC), now by default; datetime(created_at, 'unixepoch') or memories_view to read
    created_at   REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    updated_at   REAL    NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    accessed_at  REAL,
    access_count INTEGER NOT NULL DEFAULT 0,
    importance   REAL    NOT NULL DEFAULT 0.5 CHECK (importance BETWEEN 0 AND 1),
    expires_at   REAL,                          -- NULL: never expires
    deleted_at   REAL,                          -- soft-deleted, purged later
    merged_into  INTEGER REFERENCES memories (id) ON DELETE SET NULL  -- a near-duplicate alias of that memory
);

-- Exact duplicates of live memories are refused per layer and project.
CREATE UNIQUE INDEX memories_unique_content ON memories (layer, project, content_hash)
    WHERE deleted_at IS NULL;
CREATE INDEX memories_layer_created ON memories (layer, created_at);
CREATE INDEX memories_scope ON memories (project, session);
CREATE INDEX memories_session ON memories (session);
CREATE INDEX memories_expires ON memories (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX memories_merged ON memories (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE memory_tags (
    memory_id INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    tag       TEXT    NOT NULL CHECK (length(tag) > 0),
    PRIMARY KEY (memory_id, tag)
) WITHOUT ROWID;
CREATE INDEX memory_tags_by_tag ON memory_tags (tag, memory_id);

CREATE TRIGGER memory_tags_after_insert AFTER INSERT ON memory_tags BEGIN
    UPDATE memories SET tags_text = coalesce(
        (SELECT group_concat(tag, ' ') FROM (SELECT tag FROM memory_tags WHERE memory_id = new.memory_id ORDER BY tag)),
        '') WHERE id = new.memory_id;
END;
CREATE TRIGGER memory_tags_after_delete AFTER DELETE ON memory_tags BEGIN
    UPDATE memories SET tags_text = coalesce(
        (SELECT group_concat(tag, ' ') FROM (SELECT tag FROM memory_tags WHERE memory_id = old.memory_id ORDER BY tag)),
        '') WHERE id = old.memory_id;
END;

-- Full-text index with external content: the text lives once, in memories; triggers keep it in sync.
CREATE VIRTUAL TABLE memories_fts USING fts5(
    content, title, tags_text,
    content = 'memories', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER memories_fts_after_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts (rowid, content, title, tags_text)
    VALUES (new.id, new.content, new.title, new.tags_text);
END;
CREATE TRIGGER memories_fts_after_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, title, tags_text)
    VALUES ('delete', old.id, old.content, old.title, old.tags_text);
END;
CREATE TRIGGER memories_fts_after_update AFTER UPDATE OF content, title, tags_text ON memories BEGIN
    INSERT INTO memories_fts (memories_fts, rowid, content, title, tags_text)
    VALUES ('delete', old.id, old.content, old.title, old.tags_text);
    INSERT INTO memories_fts (rowid, content, title, tags_text)
    VALUES (new.id, new.content, new.title, new.tags_text);
END;

-- Embedding models known to this file (paths are local to the machine that added them).
CREATE TABLE models (
    name       TEXT PRIMARY KEY,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    source_url TEXT,
    added_at   REAL NOT NULL
);

-- Which model made the vectors of this file: exactly one row once a model is bound.
CREATE TABLE model_binding (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    model_name   TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    dim          INTEGER NOT NULL CHECK (dim > 0),
    pooling      TEXT    NOT NULL,
    generation   INTEGER NOT NULL,              -- vectors live in vec_chunks_<generation>
    bound_at     REAL    NOT NULL
);

-- The pieces of a memory that were embedded; a memory is found by its best chunk.
-- The rowid of a chunk is the rowid of its vector in vec_chunks_<generation>.
CREATE TABLE chunks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: a vector's id
    memory_id  INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    text_hash  TEXT    NOT NULL,
    UNIQUE (generation, memory_id, seq)
);
CREATE INDEX chunks_by_memory ON chunks (memory_id, generation);
CREATE INDEX chunks_by_text ON chunks (text_hash);

-- The same text is never embedded twice by the same model.
CREATE TABLE embedding_cache (
    model_sha256 TEXT NOT NULL,
    text_hash    TEXT NOT NULL,
    vector       BLOB NOT NULL,               -- float32, little endian, unit length
    created_at   REAL NOT NULL,
    used_at      REAL NOT NULL,
    PRIMARY KEY (model_sha256, text_hash)
) WITHOUT ROWID;
CREATE INDEX embedding_cache_lru ON embedding_cache (used_at);

-- Settings of this file (retention rules, a reindex under way...), as JSON values.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL CHECK (json_valid(value))
) WITHOUT ROWID;

-- Usage counters of this file (searches, adds, cache hits...).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    at        REAL    NOT NULL,
    memory_id INTEGER,                 -- no foreign key: the log outlives purged memories
    kind      TEXT    NOT NULL,        -- 'promote', 'expire', 'purge', 'merge', ...
    detail    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);
CREATE INDEX events_by_memory ON events (memory_id, at);
CREATE INDEX events_by_time ON events (at);

CREATE TABLE memory_uses (
    memory_id INTEGER NOT NULL REFERENCES memories (id) ON DELETE CASCADE,
    session   TEXT    NOT NULL,
    uses      INTEGER NOT NULL DEFAULT 0,
    last_at   REAL    NOT NULL,
    PRIMARY KEY (memory_id, session)
) WITHOUT ROWID;

CREATE TABLE daily_counters (
    day   TEXT    NOT NULL,        -- YYYY-MM-DD, UTC
    name  TEXT    NOT NULL,
    value INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, name)
) WITHOUT ROWID;

-- Memories written with plain SQL (new rows, edited content, moves) that the next magray process
-- hashes, embeds and checks for exact duplicates before it reads or writes anything.
CREATE TABLE pending_memories (
    memory_id INTEGER PRIMARY KEY,
    change    TEXT    NOT NULL,
    queued_at REAL    NOT NULL
);
-- Vectors of chunks removed by plain SQL, dropped by the next magray process (a trigger cannot
-- reach a vec0 table). Chunk ids are never reused, so a late drop cannot hit a newer vector.
CREATE TABLE pending_vector_deletes (
    chunk_id   INTEGER PRIMARY KEY,
    generation INTEGER NOT NULL
);

-- Times are unix seconds; plain SQL may also write them as ISO 8601 text ('2025-01-31',
-- '2025-01-31T08:00:00Z'), turned into seconds here; other text is refused with a clear message.
CREATE TRIGGER memories_times_after_insert AFTER INSERT ON memories
WHEN 'text' IN (typeof(new.created_at), typeof(new.updated_at), typeof(new.accessed_at),
                typeof(new.expires_at), typeof(new.deleted_at)) BEGIN
    SELECT RAISE(ABORT, 'memories: times are unix seconds or ISO 8601 text, e.g. 2025-01-31T08:00:00Z')
    WHERE (typeof(new.created_at) = 'text' AND julianday(new.created_at) IS NULL)
       OR (typeof(new.updated_at) = 'text' AND julianday(new.updated_at) IS NULL)
       OR (typeof(new.accessed_at) = 'text' AND julianday(new.accessed_at) IS NULL)
       OR (typeof(new.expires_at) = 'text' AND julianday(new.expires_at) IS NULL)
       OR (typeof(new.deleted_at) = 'text' AND julianday(new.deleted_at) IS NULL);
    UPDATE memories SET
        created_at = CASE WHEN typeof(created_at) = 'text' THEN round((julianday(created_at) - 2440587.5) * 86400.0, 3) ELSE created_at END,
        updated_at = CASE WHEN typeof(updated_at) = 'text' THEN round((julianday(updated_at) - 2440587.5) * 86400.0, 3) ELSE updated_at END,
        accessed_at = CASE WHEN typeof(accessed_at) = 'text' THEN round((julianday(accessed_at) - 2440587.5) * 86400.0, 3) ELSE accessed_at END,
        expires_at = CASE WHEN typeof(expires_at) = 'text' THEN round((julianday(expires_at) - 2440587.5) * 86400.0, 3) ELSE expires_at END,
        deleted_at = CASE WHEN typeof(deleted_at) = 'text' THEN round((julianday(deleted_at) - 2440587.5) * 86400.0, 3) ELSE deleted_at END
    WHERE id = new.id;
END;
CREATE TRIGGER memories_times_after_update AFTER UPDATE OF created_at, updated_at, accessed_at, expires_at, deleted_at ON memories
WHEN 'text' IN (typeof(new.created_at), typeof(new.updated_at), typeof(new.accessed_at),
                typeof(new.expires_at), typeof(new.deleted_at)) BEGIN
    SELECT RAISE(ABORT, 'memories: times are unix seconds or ISO 8601 text, e.g. 2025-01-31T08:00:00Z')
    WHERE (typeof(new.created_at) = 'text' AND julianday(new.created_at) IS NULL)
       OR (typeof(new.updated_at) = 'text' AND julianday(new.updated_at) IS NULL)
       OR (typeof(new.accessed_at) = 'text' AND julianday(new.accessed_at) IS NULL)
       OR (typeof(new.expires_at) = 'text' AND julianday(new.expires_at) IS NULL)
       OR (typeof(new.deleted_at) = 'text' AND julianday(new.deleted_at) IS NULL);
    UPDATE memories SET
        created_at = CASE WHEN typeof(created_at) = 'text' THEN round((julianday(created_at) - 2440587.5) * 86400.0, 3) ELSE created_at END,
        updated_at = CASE WHEN typeof(updated_at) = 'text' THEN round((julianday(updated_at) - 2440587.5) * 86400.0, 3) ELSE updated_at END,
        accessed_at = CASE WHEN typeof(accessed_at) = 'text' THEN round((julianday(accessed_at) - 2440587.5) * 86400.0, 3) ELSE accessed_at END,
        expires_at = CASE WHEN typeof(expires_at) = 'text' THEN round((julianday(expires_at) - 2440587.5) * 86400.0, 3) ELSE expires_at END,
        deleted_at = CASE WHEN typeof(deleted_at) = 'text' THEN round((julianday(deleted_at) - 2440587.5) * 86400.0, 3) ELSE deleted_at END
    WHERE id = new.id;
END;
-- Every new row is queued: magray's own insert takes its row off the queue in the same transaction
-- (it has hashed and embedded it); a row written with plain SQL waits for the next magray process.
CREATE TRIGGER memories_queue_insert AFTER INSERT ON memories BEGIN
    INSERT OR REPLACE INTO pending_memories (memory_id, change, queued_at)
    VALUES (new.id, 'insert', (julianday('now') - 2440587.5) * 86400.0);
END;
-- magray changes content and its hash together; new content under the old hash came from plain SQL.
CREATE TRIGGER memories_queue_content AFTER UPDATE OF content ON memories
WHEN new.content IS NOT old.content AND new.content_hash IS old.content_hash BEGIN
    UPDATE memories SET content_hash = NULL,
        updated_at = CASE WHEN new.updated_at IS old.updated_at
                          THEN (julianday('now') - 2440587.5) * 86400.0 ELSE new.updated_at END
    WHERE id = new.id;
    INSERT OR IGNORE INTO pending_memories (memory_id, change, queued_at)
    VALUES (new.id, 'update', (julianday('now') - 2440587.5) * 86400.0);
END;
-- A move to another layer, project or session, or an undelete, made without touching updated_at
-- (magray sets it on every such change): the vectors are re-filed by the next magray process.
CREATE TRIGGER memories_queue_move AFTER UPDATE OF layer, project, session, deleted_at ON memories
WHEN new.updated_at IS old.updated_at AND new.deleted_at IS NULL
 AND (new.layer IS NOT old.layer OR new.project IS NOT old.project OR new.session IS NOT old.session
      OR old.deleted_at IS NOT NULL) BEGIN
    UPDATE memories SET updated_at = (julianday('now') - 2440587.5) * 86400.0 WHERE id = new.id;
    INSERT OR IGNORE INTO pending_memories (memory_id, change, queued_at)
    VALUES (new.id, 'update', (julianday('now') - 2440587.5) * 86400.0);
END;
-- A soft delete: the memory's vectors go (magray removes them itself before it sets deleted_at).
CREATE TRIGGER memories_soft_delete AFTER UPDATE OF deleted_at ON memories
WHEN old.deleted_at IS NULL AND new.deleted_at IS NOT NULL BEGIN
    INSERT OR IGNORE INTO pending_vector_deletes (chunk_id, generation)
        SELECT id, generation FROM chunks WHERE memory_id = new.id;
    DELETE FROM chunks WHERE memory_id = new.id;
END;
-- A delete takes everything that belongs to the memory, with or without PRAGMA foreign_keys. The
-- chunks are read BEFORE the delete: with foreign keys on, the cascade removes them first.
CREATE TRIGGER memories_before_delete BEFORE DELETE ON memories BEGIN
    INSERT OR IGNORE INTO pending_vector_deletes (chunk_id, generation)
        SELECT id, generation FROM chunks WHERE memory_id = old.id;
    DELETE FROM chunks WHERE memory_id = old.id;
END;
CREATE TRIGGER memories_after_delete AFTER DELETE ON memories BEGIN
    DELETE FROM memory_tags WHERE memory_id = old.id;
    DELETE FROM memory_uses WHERE memory_id = old.id;
    DELETE FROM pending_memories WHERE memory_id = old.id;
    UPDATE memories SET merged_into = NULL WHERE merged_into = old.id;
END;

-- For people (sqlite3 -box, Datasette): times in ISO 8601 (UTC), tags joined, state spelled out.
CREATE VIEW memories_view AS
SELECT m.id,
       m.layer,
       m.project,
       m.session,
       m.content,
       (SELECT group_concat(tag, ', ') FROM (SELECT tag FROM memory_tags WHERE memory_id = m.id ORDER BY tag)) AS tags,
       m.title,
       m.kind,
       m.source,
       CASE WHEN m.deleted_at IS NOT NULL THEN 'deleted'
            WHEN m.expires_at <= (julianday('now') - 2440587.5) * 86400.0 THEN 'expired'
            WHEN m.merged_into IS NOT NULL THEN 'alias'
            ELSE 'live' END AS state,
       m.merged_into AS alias_of,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.created_at, 'unixepoch') AS created,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.updated_at, 'unixepoch') AS updated,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.accessed_at, 'unixepoch') AS last_used,
       m.access_count AS uses,
       m.importance,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.expires_at, 'unixepoch') AS expires,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.deleted_at, 'unixepoch') AS deleted,
       m.metadata,
       m.id IN (SELECT memory_id FROM pending_memories) AS pending
FROM memories AS m;

CREATE VIEW counters_view AS
SELECT c.name,
       c.value AS total,
       coalesce((SELECT value FROM daily_counters WHERE name = c.name AND day = date('now')), 0) AS today,
       coalesce((SELECT sum(value) FROM daily_counters WHERE name = c.name AND day > date('now', '-7 days')), 0) AS last_7_days,
       (SELECT max(day) FROM daily_counters WHERE name = c.name) AS last_day
FROM counters AS c;

CREATE VIEW events_view AS
SELECT e.id,
       strftime('%Y-%m-%dT%H:%M:%SZ', e.at, 'unixepoch') AS at,
       e.kind,
       e.memory_id,
       (SELECT substr(content, 1, 80) FROM memories WHERE id = e.memory_id) AS memory,
       e.detail
FROM events AS e;

CREATE VIEW layers_view AS
SELECT layer,
       sum(deleted_at IS NULL AND (expires_at IS NULL OR expires_at > (julianday('now') - 2440587.5) * 86400.0)) AS live,
       sum(deleted_at IS NULL AND expires_at IS NOT NULL
           AND expires_at <= (julianday('now') - 2440587.5) * 86400.0) AS expired,
       sum(deleted_at IS NOT NULL) AS deleted,
       strftime('%Y-%m-%dT%H:%M:%SZ', max(created_at), 'unixepoch') AS newest
FROM memories
GROUP BY layer;
