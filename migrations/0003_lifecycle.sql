-- Version 3: what the memory lifecycle needs. Near-duplicates are kept as aliases of the memory they
-- reinforce (never dropped: their text stays searchable and `unmerge` restores them); uses are counted
-- per session (promotion to assets asks for use across sessions); activity is counted per day.
ALTER TABLE memories ADD COLUMN merged_into INTEGER REFERENCES memories (id) ON DELETE SET NULL;
CREATE INDEX memories_merged ON memories (merged_into) WHERE merged_into IS NOT NULL;

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
