-- Live memories per layer by the month they were created (for the text chart of `magray stats`).
SELECT strftime('%Y-%m', created_at, 'unixepoch') AS month, layer, count(*)
FROM memories
WHERE deleted_at IS NULL AND merged_into IS NULL
GROUP BY month, layer
ORDER BY month
