"""Defects found in review, each pinned by a test on real files with the real model."""

from __future__ import annotations

import shutil

import pytest

from magray import Filters, InvalidInput, Memory
from magray.config import DAY, HOUR


def test_a_deleted_memory_is_not_found_through_its_aliases(mem):
    first = mem.add("The user prefers dark mode in the editor", layer="insights")
    alias = mem.add("The user prefers dark mode in the editor.", layer="insights")
    assert alias.merged_into == first.id
    mem.delete(first.id)
    for mode in ("text", "vector", "hybrid"):
        assert mem.search("dark mode editor", mode=mode, touch=False) == [], mode
    again = mem.add("The user prefers dark mode in the editor!", layer="insights")
    assert again.merged_into is None  # never merged into a deleted memory
    assert [h.memory.id for h in mem.search("dark mode editor", touch=False)] == [again.id]


def test_aliases_do_not_smuggle_their_survivor_past_the_filter(db_path, model_path):
    clock = [1_800_000_000.0]
    with Memory.open(db_path, model=str(model_path), clock=lambda: clock[0]) as m:
        first = m.add("Deploys go out on Fridays after review", layer="insights", session="s1")
        clock[0] += 10 * DAY
        alias = m.add("Deploys go out on Fridays after review.", layer="insights", session="s2")
        assert alias.merged_into == first.id
        for mode in ("text", "hybrid"):
            assert m.search("deploys fridays", mode=mode, filters=Filters(session="s2"), touch=False) == []
            assert m.search("deploys fridays", mode=mode, filters=Filters(since=clock[0] - HOUR),
                            touch=False) == []
            hits = m.search("deploys fridays", mode=mode, touch=False)
            assert [h.memory.id for h in hits] == [first.id]  # the alias is never a hit of its own


def test_writes_during_an_interrupted_reindex_are_kept_in_step(db_path, model_path):
    other = model_path.with_name("all-MiniLM-L6-v2-f16.gguf")
    with Memory.open(db_path, model=str(model_path)) as m:
        m.add_many([{"content": f"note number {i} about nothing much", "layer": "assets"} for i in range(300)])

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop()

    with Memory.open(db_path) as m:
        with pytest.raises(Stop):
            m.reindex(str(other), progress=stop)
        m.update(1, content="Quantum chromodynamics describes how quarks bind")
        m.promote(2, "insights")
        m.delete(3, hard=True)
        m.delete(4)
        m.reindex(str(other))
        hits = m.search("quarks and the strong interaction", mode="vector", k=1, touch=False)
        assert hits[0].memory.id == 1
        assert [h.memory.id for h in m.search("note number 1 about nothing much", mode="vector",
                                              filters=Filters(layers=("insights",)), touch=False)] == [2]
        report = m.doctor()
        assert report.healthy, report


def test_a_long_lived_process_follows_another_processes_reindex(db_path, model_path):
    other = model_path.with_name("all-MiniLM-L6-v2-f16.gguf")
    with Memory.open(db_path, model=str(model_path)) as m:
        m.add("the office plants need water on Mondays", layer="assets")
    with Memory.open(db_path) as server:  # like `magray serve` on a bound file
        assert server.search("watering plants", mode="vector", touch=False)
        with Memory.open(db_path) as other_process:
            other_process.reindex(str(other))
        # The server's connection now sees a new vector table made by another model: it loads
        # that model and goes on, instead of failing on the dropped table.
        hits = server.search("watering plants", mode="vector", touch=False)
        assert hits and hits[0].memory.content.startswith("the office plants")
        assert server.status().model["model_name"] == "all-minilm-l6-v2-f16"


def test_promote_auto_skips_a_conflict_and_goes_on(mem):
    dup_low = mem.add("Deploy on Fridays")
    mem.add("Deploy on Fridays", layer="insights")
    other = mem.add("Standups are at nine")
    for _ in range(3):
        mem.touch(dup_low.id)
        mem.touch(other.id)
    moves = {m["id"]: m for m in mem.promote_auto()}
    assert "already holds that content" in moves[dup_low.id]["skipped"]
    assert mem.get(other.id, touch=False).layer == "insights"


@pytest.mark.parametrize("item, message", [
    ({"content": "x", "created_at": 1e300}, "between 1970 and 9999"),
    ({"content": "x", "created_at": -5}, "between 1970 and 9999"),
    ({"content": "x", "ttl": 1e300}, "ttl is too long"),
    ({"content": "x", "project": "bad \udcff"}, "not valid unicode"),
    ({"content": "x", "title": "nul \x00 inside"}, "NUL"),
    ({"content": "x", "tags": 5}, "tags must be a list"),
    ({"content": "x", "metadata": {"k": "\udcff"}}, "not valid unicode"),
])
def test_bad_fields_are_one_line_errors(mem, item, message):
    with pytest.raises(InvalidInput, match=message):
        mem.add_many([item])
    assert mem.list() == []


def test_a_query_longer_than_the_model_window_still_searches(mem):
    mem.add("Tomatoes want full sun and deep watering", layer="assets")
    long_query = "how should I grow tomatoes in my garden " * 120
    for mode in ("vector", "hybrid"):
        hits = mem.search(long_query, mode=mode, touch=False, min_score=0)
        assert hits[0].memory.content.startswith("Tomatoes")


def test_restore_works_over_a_file_with_damaged_vectors(db_path, model_path, tmp_path):
    with Memory.open(db_path, model=str(model_path)) as m:
        m.add("kept in the backup", layer="assets")
        backup = m.backup(tmp_path / "good.db").path
        m.add("added after the backup", layer="assets")
        # Damage derived data: a vector without its chunk row.
        m.connection.execute("DELETE FROM chunks WHERE memory_id = 2")
        assert m.backup(tmp_path / "also.db")  # a backup is still possible
        m.restore(backup)
        assert [r.content for r in m.list()] == ["kept in the backup"]


def test_config_needs_no_memory_file(cli, tmp_path):
    missing = tmp_path / "never-created.db"
    proc = cli("--db", str(missing), "config", "show", "--json")
    assert proc.returncode == 0 and '"rules"' in proc.stdout
    assert not missing.exists()


def test_copy_of_model_file_keeps_working(tmp_path, model_path, db_path):
    # The model registered by path keeps its entry: opening again does not re-register it.
    copy = tmp_path / "m.gguf"
    shutil.copy(model_path, copy)
    with Memory.open(db_path, model=str(copy)) as m:
        m.add("first")
        added = m.models()[0]["added_at"]
    with Memory.open(db_path, model=str(copy)) as m:
        m.add("second")
        assert m.models()[0]["added_at"] == added


def test_text_search_skips_many_hidden_matches(mem):
    """Text search reads the best matches from the FTS index and drops hidden ones; when more are
    hidden than it read, it must fall back to filtering inside the query, not return too few."""
    hidden = mem.add_many([{"content": f"apple pie recipe number {i}", "layer": "assets"} for i in range(240)])
    for r in hidden:
        mem.delete(r.id)
    live = [mem.add(f"an apple a day, said note {i}", layer="assets").id for i in range(3)]
    hits = mem.search("apple", mode="text", k=10, touch=False)
    assert sorted(h.memory.id for h in hits) == sorted(live)
