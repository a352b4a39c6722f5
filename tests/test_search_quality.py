"""Search as a user meets it, with the real model: the relevance floor, time phrases as windows on
created_at, and what happens when a window holds nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from magray import Filters, Memory
from magray.errors import InvalidInput

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc).timestamp()  # a Sunday
DAY = 86400.0
NOTES = [  # (days before NOW, content)
    (81, "Dentist check-up with Dr. Verhoeven: no cavities, floss more around the lower molars."),
    (73, "Back at the dentist for a filling on the upper left side; it cost 85 euros."),
    (10, "Dentist visit: the filling is holding up and my gums look healthier."),
    (40, "Grocery list: flour, butter, apples, cinnamon and cream."),
    (4, "Grocery list: eggs, spinach, chicken thighs, basmati rice and coffee beans."),
    (1, "Grocery list: oat milk, bananas, two avocados, rye bread and dish soap."),
    (20, "The plumber fixed the leaking pipe under the bathroom sink."),
]
UNRELATED = ["Which yoga studio did I sign up with?", "What's the Wi-Fi password at my in-laws' house?",
             "When is the piano recital?"]


@pytest.fixture
def notes(db_path, model_path):
    clock = {"now": NOW}
    with Memory.open(db_path, model=str(model_path), clock=lambda: clock["now"], timezone="UTC") as mem:
        ids = [mem.add(text, layer="assets", created_at=NOW - days * DAY).id for days, text in NOTES]
        yield mem, ids


@pytest.mark.parametrize("query", UNRELATED)
def test_a_question_about_nothing_stored_returns_nothing(notes, query):
    mem, _ = notes
    assert mem.search(query, touch=False) == []
    everything = mem.search(query, touch=False, min_score=0, k=50)
    assert len(everything) == len(NOTES)  # min_score=0 shows every memory, however weak


def test_the_floor_keeps_right_answers(notes):
    mem, ids = notes
    assert mem.search("who repaired the sink?", touch=False)[0].memory.id == ids[6]
    with pytest.raises(InvalidInput, match="min_score"):
        mem.search("sink", min_score=float("nan"))


@pytest.mark.parametrize("query, expected", [
    ("What did the dentist tell me this month?", 2),
    ("What was done at the dentist in September?", 1),
    ("What was on my grocery list yesterday?", 5),
    ("What did I put on the grocery list on Wednesday?", 4),
    ("What was on the grocery list in October?", 3),
])
def test_a_time_phrase_picks_the_memory_told_then(notes, query, expected):
    mem, ids = notes
    hits = mem.search(query, touch=False)
    assert hits[0].memory.id == ids[expected]
    window = hits[0].parts["window"]
    assert window["applied"] is True
    assert all(datetime.fromisoformat(window["since"].replace("Z", "+00:00")).timestamp() <= h.memory.created_at
               for h in hits)


def test_an_empty_window_searches_all_times_and_says_so(notes):
    mem, ids = notes
    hits = mem.search("What did the plumber fix in 2019?", touch=False)
    assert hits and hits[0].memory.id == ids[6]
    assert hits[0].parts["window"]["applied"] is False
    assert hits[0].parts["window"]["phrase"] == "in 2019"


def test_time_phrases_can_be_searched_as_words(notes):
    mem, _ = notes
    hits = mem.search("grocery list yesterday", touch=False, time_phrases=False, min_score=0)
    assert "window" not in hits[0].parts


def test_recently_prefers_newer_memories_and_filters_nothing(notes):
    mem, ids = notes
    plain = mem.search("grocery list", touch=False, k=3)
    recent = mem.search("grocery list recently", touch=False, k=3)
    assert {h.memory.id for h in recent} == {h.memory.id for h in plain}
    assert recent[0].memory.id == ids[5]
    assert recent[0].parts["window"]["vague"] is True
    newest, oldest = recent[0].score / plain[0].score, recent[-1].score / plain[-1].score
    assert newest > oldest


def test_explicit_filters_and_a_phrase_intersect(notes):
    mem, ids = notes
    since = NOW - 5 * DAY
    hits = mem.search("grocery list in November", touch=False, filters=Filters(since=since))
    assert {h.memory.id for h in hits} == {ids[4], ids[5]}


def test_cli_says_no_memory_matches_and_all_lists_everything(cli):
    cli("add", "The boiler was serviced by ThermoFix in March", "--layer", "insights")
    cli("add", "Lena has violin lessons every Wednesday", "--layer", "insights")
    proc = cli("search", "Which yoga studio did I sign up with?")
    assert proc.returncode == 0 and proc.stdout.strip() == "no memory matches"
    assert cli.json("search", "Which yoga studio did I sign up with?")["data"] == []
    everything = cli.json("search", "Which yoga studio did I sign up with?", "--all")["data"]
    assert len(everything) == 2
    found = cli("search", "when is the heating checked", "--explain")
    assert "ThermoFix" in found.stdout and "evidence" in found.stdout


def test_cli_since_and_until_take_phrases(cli):
    cli("add", "a note from today", "--layer", "insights")
    assert [m["content"] for m in cli.json("list", "--since", "yesterday")["data"]] == ["a note from today"]
    assert cli.json("list", "--until", "last week")["data"] == []
    shown = cli("search", "note from last week", "--explain", "--all")
    assert "time: nothing matched in 'last week'" in shown.stdout
    bad = cli("list", "--since", "the day the music died")
    assert bad.returncode == 2 and "bad time" in bad.stderr


def test_mcp_recall_says_when_nothing_matches(db_path, model_path, tmp_path):
    from test_mcp import call, run, serve

    async def scenario():
        async with serve(db_path, model_path, tmp_path / "log") as session:
            await call(session, "remember", content="The boiler was serviced in March", layer="insights")
            none = await call(session, "recall", query="Which yoga studio did I sign up with?")
            weak = await call(session, "recall", query="Which yoga studio did I sign up with?", all=True)
            windowed = await call(session, "recall", query="what was serviced this month?")
            return none, weak, windowed

    none, weak, windowed = run(scenario)
    assert none["count"] == 0 and "no memory matches" in none["message"]
    assert weak["count"] == 1 and "message" not in weak
    assert windowed["results"][0]["scores"]["window"]["phrase"] == "this month"
    json.dumps(windowed)  # the window part is plain JSON
