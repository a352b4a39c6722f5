-- Version 4: a bounded embedding cache. Entries are evicted least recently used first, except the
-- texts of stored memories' chunks (found through the new chunks index), which are never evicted.
CREATE INDEX embedding_cache_lru ON embedding_cache (used_at);
CREATE INDEX chunks_by_text ON chunks (text_hash);
