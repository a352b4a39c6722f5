-- Version 2: a log of what happened to memories on their own (promotions, expiries, merges), so that
-- every automatic move can be explained and, where possible, undone.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    at        REAL    NOT NULL,
    memory_id INTEGER,                 -- no foreign key: the log outlives purged memories
    kind      TEXT    NOT NULL,        -- 'promote', 'expire', 'purge', 'merge', ...
    detail    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
);
CREATE INDEX events_by_memory ON events (memory_id, at);
CREATE INDEX events_by_time ON events (at);
