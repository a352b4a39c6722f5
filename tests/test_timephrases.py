"""Time phrases: every class of phrase becomes the window a person means, in their time zone."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from magray import timephrases
from magray.errors import InvalidInput
from magray.timeutil import parse_when

UTC = timephrases.zone("UTC")
# A Sunday, as in the time-aware recall set: weeks run Monday to Sunday.
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc).timestamp()


def day(text: str) -> str:
    return text + "T00:00:00Z"


def window(query: str, now: float = NOW, tz=UTC) -> tuple[str, str | None, str | None]:
    rest, found = timephrases.find_window(query, now, tz)
    assert found is not None, query
    shown = found.to_dict()
    return rest, shown["since"], shown["until"]


@pytest.mark.parametrize("query, since, until", [
    # days
    ("what did I buy yesterday?", day("2026-11-28"), day("2026-11-29")),
    ("what did I buy today", day("2026-11-29"), day("2026-11-30")),
    ("what happened the day before yesterday", day("2026-11-27"), day("2026-11-28")),
    ("what was wrong 3 days ago", day("2026-11-26"), day("2026-11-27")),
    ("what did I do a couple of days ago", day("2026-11-27"), day("2026-11-28")),
    # weekdays: the most recent one
    ("what did Mom say on Monday", day("2026-11-23"), day("2026-11-24")),
    ("what did I note on Friday?", day("2026-11-27"), day("2026-11-28")),
    # weeks, Monday to Sunday
    ("what did I weigh last week", day("2026-11-16"), day("2026-11-23")),
    ("news this week", day("2026-11-23"), day("2026-11-30")),
    ("grocery list two weeks ago", day("2026-11-09"), day("2026-11-16")),
    ("plans last weekend", day("2026-11-21"), day("2026-11-23")),
    # months: the most recent that has begun
    ("the dentist this month", day("2026-11-01"), day("2026-12-01")),
    ("the vet last month", day("2026-10-01"), day("2026-11-01")),
    ("the dentist in September", day("2026-09-01"), day("2026-10-01")),
    ("the trip in December", day("2025-12-01"), day("2026-01-01")),
    ("a month ago", day("2026-10-01"), day("2026-11-01")),
    ("Mom in early September", day("2026-09-01"), day("2026-09-11")),
    ("Mom in mid-September", day("2026-09-11"), day("2026-09-21")),
    ("the meter at the end of October", day("2026-10-21"), day("2026-11-01")),
    ("painting in July 2023", day("2023-07-01"), day("2023-08-01")),
    # open windows
    ("status since October", day("2026-10-01"), None),
    ("the garage before August", None, day("2026-08-01")),
    ("after September what changed", day("2026-10-01"), None),
    ("notes until yesterday", None, day("2026-11-29")),
    # seasons: meteorological, northern hemisphere
    ("blood pressure last summer", day("2026-06-01"), day("2026-09-01")),
    ("agreed over the summer", day("2026-06-01"), day("2026-09-01")),
    ("the trip in the spring", day("2026-03-01"), day("2026-06-01")),
    ("what we did last winter", day("2025-12-01"), day("2026-03-01")),
    ("holiday in summer 2023", day("2023-06-01"), day("2023-09-01")),
    # absolute dates
    ("the painting on October 13, 2023", day("2023-10-13"), day("2023-10-14")),
    ("the store on 1 February, 2023", day("2023-02-01"), day("2023-02-02")),
    ("the call on 2026-11-02", day("2026-11-02"), day("2026-11-03")),
    ("the beach in 2023", day("2023-01-01"), day("2024-01-01")),
    # ranges between two dates; the first takes the second's year
    ("where was John between August 11 and August 15 2023", day("2023-08-11"), day("2023-08-16")),
    ("what did I do from May to July", day("2026-05-01"), day("2026-08-01")),
    # a stretch before or after a date, the date's own day included
    ("what did John do the week before August 3, 2023", day("2023-07-27"), day("2023-08-04")),
    ("the puppy she got two weeks before August 11, 2023", day("2023-07-28"), day("2023-08-12")),
    ("what happened two days after May 2, 2026", day("2026-05-02"), day("2026-05-05")),
    # ranges back from now
    ("what did I do in the last 3 days", "2026-11-26T12:00:00Z", "2026-11-29T12:00:00Z"),
    ("expenses over the past two weeks", "2026-11-15T12:00:00Z", "2026-11-29T12:00:00Z"),
])
def test_each_phrase_class_names_its_window(query, since, until):
    _, got_since, got_until = window(query)
    assert (got_since, got_until) == (since, until)


def test_the_phrase_is_taken_out_of_the_query():
    assert window("What did the dentist tell me this month?")[0] == "What did the dentist tell me?"
    assert window("What did the garage do on the car before August?")[0] == "What did the garage do on the car?"
    assert window("How was Mom doing in early September?")[0] == "How was Mom doing?"


@pytest.mark.parametrize("query", [
    "May I ask what you remember",  # the verb, not the month
    "did I fall on the stairs",  # the verb, not the season
    "my weight goal is 2023 grams",  # a number, not a year
    "plans for the summer party",  # no preposition that dates it
    "the second time I called",
    "what is my shoe size",
])
def test_words_that_only_look_like_dates_name_no_window(query):
    rest, found = timephrases.find_window(query, NOW, UTC)
    assert found is None and rest == query


@pytest.mark.parametrize("query", ["what did I read recently?", "who have I talked to lately"])
def test_vague_words_prefer_newer_memories_and_filter_nothing(query):
    rest, found = timephrases.find_window(query, NOW, UTC)
    assert found is not None and found.vague and found.since is None and found.until is None
    assert "recent" not in rest and "lately" not in rest


def test_the_users_time_zone_decides_which_day_is_yesterday():
    # 00:30 on Sunday in Amsterdam is still Saturday in UTC.
    now = datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc).timestamp()
    amsterdam = timephrases.zone("Europe/Amsterdam")
    _, found = timephrases.find_window("yesterday", now, amsterdam)
    assert found.since == datetime(2026, 11, 27, 23, 0, tzinfo=timezone.utc).timestamp()  # Sat 00:00 +01
    _, found = timephrases.find_window("yesterday", now, UTC)
    assert found.since == datetime(2026, 11, 27, tzinfo=timezone.utc).timestamp()


def test_an_unknown_time_zone_is_refused():
    with pytest.raises(InvalidInput, match="unknown time zone"):
        timephrases.zone("Mars/Olympus")


def test_since_and_until_take_the_same_phrases():
    assert parse_when("last week", NOW, UTC) == datetime(2026, 11, 16, tzinfo=timezone.utc).timestamp()
    assert parse_when("yesterday", NOW, UTC, end=True) == datetime(2026, 11, 29, tzinfo=timezone.utc).timestamp()
    assert parse_when("10 minutes ago", NOW, UTC) == NOW - 600
    assert parse_when("2026-11-28 14:00", NOW, UTC) == datetime(2026, 11, 28, 14, tzinfo=timezone.utc).timestamp()
    # The spans and ISO times of before still mean what they meant.
    assert parse_when("7d", NOW) == NOW - 7 * 86400
    assert parse_when("2026-05-01", NOW) == datetime(2026, 5, 1, tzinfo=timezone.utc).timestamp()
    with pytest.raises(InvalidInput, match="bad time"):
        parse_when("the day the music died", NOW, UTC)
