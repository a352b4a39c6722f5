-- doctor: memories with a stored vector (the float vector of a chunk, re-ranked exactly) that is
-- neither float16 nor float32 of the table's dimension: written by hand or damaged. Every search
-- that reads it fails until it is re-embedded. Reads sqlite-vec's auxiliary table (/*AUX*/)
-- directly: through the virtual table each row costs a seek into a chunk. Returns memory ids.
SELECT DISTINCT c.memory_id
FROM /*AUX*/ AS a
JOIN chunks AS c ON c.id = a.rowid
WHERE length(a.value01) NOT IN (2 * :dim, 4 * :dim)
ORDER BY c.memory_id
