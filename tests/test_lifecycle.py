"""The lifecycle with an injected clock (no sleeping): expiry, clean, automatic promotion, renewal,
near-duplicate aliases, scopes, stats, and maintenance while another process writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from magray import Filters, InvalidInput, Memory
from magray.config import DAY, HOUR


@pytest.fixture
def clocked(db_path, model_path):
    clock = [1_800_000_000.0]
    with Memory.open(db_path, model=str(model_path), clock=lambda: clock[0]) as m:
        yield m, clock


def count(m: Memory, sql: str, *params) -> int:
    return m.connection.execute(sql, params).fetchone()[0]


def test_clean_purges_expired_memories_with_everything_they_own(clocked):
    m, clock = clocked
    gone = m.add("a passing remark about the weather", tags=["chat"], ttl=HOUR).id
    kept = m.add("a lasting fact about the weather", layer="assets").id
    deleted = m.add("something the user asked to forget", layer="assets").id
    m.delete(deleted)
    clock[0] += 2 * HOUR
    preview = m.clean(dry_run=True)
    assert {(p["id"], p["reason"]) for p in preview} == {(gone, "expired"), (deleted, "deleted")}
    assert count(m, "SELECT count(*) FROM memories") == 3  # a dry run changes nothing
    m.clean()
    assert [r[0] for r in m.connection.execute("SELECT id FROM memories")] == [kept]
    assert count(m, "SELECT count(*) FROM memory_tags WHERE memory_id = ?", gone) == 0
    assert count(m, "SELECT count(*) FROM chunks WHERE memory_id = ?", gone) == 0
    assert count(m, "SELECT count(*) FROM vec_chunks_1 WHERE memory_id = ?", gone) == 0
    assert count(m, "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'remark'") == 0
    kinds = {r[0]: r[1] for r in m.connection.execute("SELECT memory_id, kind FROM events")}
    assert kinds == {gone: "expire", deleted: "purge"}
    assert m.stats()["counters"]["expirations"] == 1


def test_expiry_runs_on_its_own_during_writes(clocked):
    m, clock = clocked
    old = [m.add(f"chat turn number {i}").id for i in range(3)]
    clock[0] += 25 * HOUR
    m.add("a new turn, a day later")
    assert count(m, "SELECT count(*) FROM memories WHERE id IN (?, ?, ?)", *old) == 0
    assert m.stats()["counters"]["expirations"] == 3


def test_automatic_promotion_by_use_and_across_sessions(clocked):
    m, clock = clocked
    hot = m.add("the user's dog is called Pixel").id
    cold = m.add("small talk about nothing").id
    for _ in range(3):
        clock[0] += HOUR
        m.touch(hot)
    assert m.promote_auto(dry_run=True) == [{"id": hot, "to": "insights", "reason": "used 3 times"}]
    assert m.get(hot, touch=False).layer == "interact"
    m.promote_auto()
    assert m.get(hot, touch=False).layer == "insights"
    assert m.get(cold, touch=False).layer == "interact"
    for session in ("s1", "s2", "s3"):
        m.touch(hot, session=session)
    m.promote_auto()
    promoted = m.get(hot, touch=False)
    assert promoted.layer == "assets" and promoted.expires_at is None
    events = [(r[0], r[1]) for r in m.connection.execute("SELECT kind, json_extract(detail, '$.reason') FROM events")]
    assert events == [("promote", "rule: used 3 times"), ("promote", "rule: used in 3 sessions")]
    assert m.stats()["counters"]["promotions"] == 2


def test_important_insights_become_assets(clocked):
    m, _ = clocked
    r = m.add("never deploy on a Friday", layer="insights", importance=0.9)
    assert m.promote_auto() == [{"id": r.id, "to": "assets", "reason": "importance 0.9"}]


def test_near_duplicates_become_aliases_that_lose_no_text(clocked):
    m, clock = clocked
    first = m.add("The user prefers dark mode in the editor", layer="insights", tags=["ui"])
    clock[0] += HOUR
    second = m.add("The user prefers dark mode in the editor.", layer="insights", tags=["prefs"])
    assert second.created and second.merged_into == first.id
    survivor = m.get(first.id, touch=False)
    assert survivor.tags == ["prefs", "ui"] and survivor.access_count == 1
    assert [r.id for r in m.list()] == [first.id]  # the alias is not listed on its own...
    alias = m.get(second.id, touch=False)  # ...but it is kept, with its own text
    assert alias.merged_into == first.id and alias.content.endswith("editor.")
    hits = m.search("dark mode editor", touch=False)
    assert [h.memory.id for h in hits] == [first.id]
    assert m.duplicates() == []  # merged already
    m.unmerge(second.id)
    assert {r.id for r in m.list()} == {first.id, second.id}
    assert m.duplicates() == [[first.id, second.id]]
    kinds = [r[0] for r in m.connection.execute("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["merge", "unmerge"]


def test_conversation_turns_are_never_merged(clocked):
    m, _ = clocked
    a = m.add("thanks!", session="s1")
    b = m.add("thanks!!", session="s1")
    c = m.add("thanks!", session="s2", project="other")
    assert a.merged_into is b.merged_into is c.merged_into is None
    assert len({a.id, b.id, c.id}) == 3
    facts = [m.add(f"Alice is {age} years old", layer="assets") for age in (30, 31)]
    assert facts[1].merged_into is None  # different numbers: different facts
    off = m.add("The user likes tea", layer="assets")
    again = m.add("The user likes tea.", layer="assets", dedup=False)
    assert again.merged_into is None and again.id != off.id


def test_sessions_projects_and_forget(clocked):
    m, _ = clocked
    for i in range(3):
        m.add(f"turn {i} of chat one", session="chat-1", project="acme")
    m.add("turn of chat two", session="chat-2", project="acme")
    m.add("note elsewhere", project="home", layer="assets")
    assert {s["name"]: s["memories"] for s in m.scopes("sessions")} == {"chat-1": 3, "chat-2": 1}
    assert {p["name"]: p["memories"] for p in m.scopes("projects")} == {"acme": 4, "home": 1}
    assert m.forget_scope(session="chat-1") == 3
    assert [r.content for r in m.list(Filters(project="acme"))] == ["turn of chat two"]
    assert m.forget_scope(project="acme") == 1
    with pytest.raises(InvalidInput):
        m.forget_scope()
    assert count(m, "SELECT count(*) FROM chunks") == 1


def test_stats_count_activity_per_day(clocked):
    m, clock = clocked
    m.add("first day")
    clock[0] += DAY
    m.add("second day")
    m.search("day", mode="text")
    stats = m.stats(days=100000)
    assert stats["counters"]["adds"] == 2 and stats["counters"]["searches"] == 1
    days = {(d["day"], d["name"]): d["value"] for d in stats["activity_by_day"]}
    assert days[("2027-01-15", "adds")] == 1 and days[("2027-01-16", "adds")] == 1
    assert days[("2027-01-16", "searches")] == 1


def test_clean_and_optimize_while_another_process_writes(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as m:
        m.add("expires quickly", ttl=0.001)
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from magray import Memory
        with Memory.open({str(db_path)!r}, model={str(model_path)!r}) as m:
            for i in range(40):
                print(m.add(f"written while cleaning, number {{i}}", layer="assets").id, flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    first = writer.stdout.readline()
    assert first.strip().isdigit()
    runs = 0
    with Memory.open(db_path) as m:
        while writer.poll() is None:
            m.clean()
            m.optimize()
            runs += 1
        rest = writer.stdout.read().split()
        assert writer.wait() == 0
        acknowledged = [int(first)] + [int(x) for x in rest]
        assert len(acknowledged) == 40 and runs >= 1
        live = {r.id for r in m.list(limit=1000)}
        assert set(acknowledged) <= live
        assert m.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
