"""Metrics in the Prometheus format, logging, and the bounded embedding cache."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from magray import Memory
from magray.config import set_rule


def test_prometheus_output_parses_and_counts(cli):
    cli("add", "first memory", "--layer", "assets")
    cli("add", "second memory")
    cli("search", "memory")
    proc = cli("stats", "--format", "prometheus")
    assert proc.returncode == 0, proc.stderr
    families = {f.name: f for f in text_string_to_metric_families(proc.stdout)}
    layers = {s.labels["layer"]: s.value for s in families["magray_memories"].samples}
    assert layers == {"interact": 1.0, "insights": 0.0, "assets": 1.0}
    assert families["magray_adds"].type == "counter"
    assert families["magray_adds"].samples[0].value == 2
    assert families["magray_searches"].samples[0].value == 1
    assert families["magray_file_bytes"].samples[0].value > 0
    assert "magray_last_backup_age_seconds" not in families
    assert cli("backup").returncode == 0
    after = {f.name: f for f in text_string_to_metric_families(cli("stats", "--format", "prometheus").stdout)}
    assert 0 <= after["magray_last_backup_age_seconds"].samples[0].value < 3600
    proc = cli("stats", "--format", "prometheus")
    # the same output under --json: it is already a format for machines
    as_json = cli("stats", "--format", "prometheus", "--json").stdout
    assert as_json.startswith("# HELP magray_memories ")
    assert {f.name for f in text_string_to_metric_families(as_json)} == set(after)


def test_logging_goes_to_stderr_or_a_file_never_stdout(cli, tmp_path):
    proc = cli("-v", "add", "logged memory", "--json")
    assert "applied migration 0001_init.sql" in proc.stderr and "loaded" in proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith('{"ok": true')
    log = tmp_path / "magray.log"
    proc = cli("-v", "--log-file", str(log), "add", "another memory", "--layer", "assets")
    assert proc.stderr == "" and "loaded" in log.read_text()
    assert cli("-q", "status").stderr == ""


def test_embedding_cache_stays_bounded_and_keeps_stored_memories(db_path, model_path):
    set_rule("cache.max_entries", "10")
    with Memory.open(db_path, model=str(model_path)) as m:
        stored = [m.add(f"stored memory about topic {i}").id for i in range(5)]
        for i in range(30):
            m.search(f"query number {i} about something", mode="vector", touch=False)
        status = m.status()
        assert status.cache["entries"] <= 10
        assert status.counters["cache_evictions"] >= 25
        # the texts of stored memories are never evicted: re-adding them embeds nothing
        computed = status.counters["embeddings_computed"]
        for i in range(5):
            m.add(f"stored memory about topic {i}", layer="assets")
        assert m.status().counters["embeddings_computed"] == computed
        # a recent query is still cached (least recently used go first)
        m.search("query number 29 about something", mode="vector", touch=False)
        assert m.status().counters["embeddings_computed"] == computed
    assert len(stored) == 5


@pytest.mark.parametrize("key, value", [("cache.nope", "1"), ("cache.max_entries", "many")])
def test_bad_config_values_are_refused(key, value):
    from magray import InvalidInput

    with pytest.raises(InvalidInput):
        set_rule(key, value)
