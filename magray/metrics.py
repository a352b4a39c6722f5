"""The file's counters and gauges in the Prometheus text exposition format (for node_exporter's
textfile collector, or `magray serve --metrics-port`)."""

from __future__ import annotations

from typing import Any

from .types import Status

# Counters kept in the file, with their help text.
COUNTERS = {
    "adds": "Memories added.",
    "searches": "Searches run.",
    "embeddings_computed": "Texts embedded by the model (cache misses that were computed).",
    "cache_hits": "Embedding cache hits.",
    "cache_misses": "Embedding cache misses.",
    "cache_evictions": "Embedding cache entries evicted (least recently used).",
    "promotions": "Memories promoted to a higher layer.",
    "expirations": "Expired memories purged.",
    "purges": "Deleted memories purged.",
    "merges": "Near-duplicates merged into an existing memory as aliases.",
    "plain_sql_synced": "Memories written with plain SQL, then hashed and embedded by magray.",
    "plain_sql_duplicates": "Memories written with plain SQL that repeated one already stored.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(status: Status, last_backup_at: float | None, now: float) -> str:
    """Every metric with HELP and TYPE lines, labelled with the memory file's path."""
    file_label = f'file="{_escape(status.path)}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(x for x in (file_label, labels) if x)
            lines.append(f"{name}{{{label_text}}} {float(value):g}")

    metric("magray_memories", "gauge", "Live memories per layer.",
           [(f'layer="{layer}"', n) for layer, n in status.counts.items()])
    metric("magray_memories_expired", "gauge", "Memories past their expiry, not yet purged.", [("", status.expired)])
    metric("magray_memories_deleted", "gauge", "Soft-deleted memories, not yet purged.", [("", status.deleted)])
    metric("magray_file_bytes", "gauge", "Size of the memory file.", [("", status.size_bytes)])
    metric("magray_wal_bytes", "gauge", "Size of the write-ahead log beside the file.", [("", status.wal_bytes)])
    metric("magray_embedding_cache_entries", "gauge", "Entries in the embedding cache.", [("", status.cache["entries"])])
    metric("magray_embedding_cache_bytes", "gauge", "Vector bytes in the embedding cache.", [("", status.cache["bytes"])])
    metric("magray_pending_plain_sql", "gauge", "Plain-SQL writes queued for the next magray command.",
           [(f'kind="{kind}"', n) for kind, n in status.pending.items()])
    metric("magray_schema_version", "gauge", "Schema version of the file.", [("", status.schema_version)])
    for name, help_text in COUNTERS.items():
        metric(f"magray_{name}_total", "counter", help_text, [("", status.counters.get(name, 0))])
    if last_backup_at is not None:
        metric("magray_last_backup_age_seconds", "gauge", "Seconds since the last verified backup.",
               [("", max(0.0, now - last_backup_at))])
    return "\n".join(lines) + "\n"
