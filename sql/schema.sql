-- The current magray schema in one file: what migrations/0001..0004 produce on a blank file.
-- tests/test_schema.py checks that the two stay equal. Vector tables (vec_chunks_<generation>) are
-- created when a model is bound: see magray/vectors.py.


CREATE TABLE memories (
    id           INTEGER PRIMARY KEY,
    layer        TEXT    NOT NULL CHECK (layer IN ('interact', 'insights', 'assets')),
    content      TEXT    NOT NULL CHECK (length(content) > 0),
    content_hash TEXT    NOT NULL,
    title        TEXT,
    kind         TEXT,
    source       TEXT,
    project      TEXT    NOT NULL DEFAULT '',
    session      TEXT    NOT NULL DEFAULT '',
    tags_text    TEXT    NOT NULL DEFAULT '',   -- derived from memory_tags by triggers; indexed by FTS
    metadata     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at   REAL    NOT NULL,              -- unix seconds (UTC); datetime(created_at, 'unixepoch')
    updated_at   REAL    NOT NULL,
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
    id         INTEGER PRIMARY KEY,
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
