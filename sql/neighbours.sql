-- For each memory of :ids that belongs to a conversation (a non-empty session), the memories
-- stored just before and just after it in the same project and session, among those the shared
-- filter admits. The scope index (project, session, rowid) makes each lookup one index seek.
SELECT g.id,
       (SELECT max(m.id) FROM memories AS m
        WHERE m.project = g.project AND m.session = g.session AND m.id < g.id AND /*FILTER*/),
       (SELECT min(m.id) FROM memories AS m
        WHERE m.project = g.project AND m.session = g.session AND m.id > g.id AND /*FILTER*/)
FROM memories AS g
WHERE g.id IN (SELECT value FROM json_each(:ids)) AND g.session != ''
