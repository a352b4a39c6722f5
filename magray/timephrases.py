"""Time phrases in what people type: "yesterday", "last week", "3 days ago", "in September",
"since October", "before August", "last summer", "on Monday", "October 13, 2023"...

A phrase names a period (a day, a week, a month, a season, a year) or a moment. `find_window`
finds one in a query and turns it into a window on `created_at` (with the phrase taken out of the
query); `resolve_point` reads one given alone, as `--since`, `--until` and `--at` take them.

Finding the phrase is this module's grammar (a regular expression over the words that can name a
time, so that "may" the verb or "second" the ordinal are never read as dates); what a date
expression means is `dateparser`'s job (absolute dates in their many spellings, month and weekday
names, "N units ago", "last week"), resolved against the caller's clock in the user's time zone,
preferring the past: memories are about what was. Seasons, "early/mid/late" and "the last N days"
are ranges that dateparser does not name, composed here from the months and days it resolves.

Conventions (a user of a personal memory would expect them; each is tested):
- weeks run Monday to Sunday; "last week" is the previous calendar week, "this week" the current.
- "in September" is the most recent September that has begun; "in December" asked in November
  is last year's December.
- seasons are meteorological, northern hemisphere: spring March-May, summer June-August, autumn
  September-November, winter December-February. "last summer" is the most recent summer that
  has ended; "this summer" / "in the summer" the most recent that has begun.
- "early" is days 1-10 of a month, "mid" 11-20, "late" and "the end of" 21 to its end.
- "since X" starts at the start of X, "after X" at its end; "before X" ends at its start,
  "until X" at its end.
- "recently", "lately": no window; the caller may prefer newer memories (`Window.vague`).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidInput

_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
           "jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec")
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_NUMBER = (r"\d+|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
           r"a\s+couple\s+of|a\s+few|few|several")
_UNIT = r"minutes?|mins?|hours?|days?|weeks?|fortnights?|months?|years?"
_YEAR = r"(?:19|20)\d\d"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}
_PART_OF_MONTH = {"early": (1, 11), "beginning": (1, 11), "start": (1, 11),
                  "mid": (11, 21), "middle": (11, 21), "late": (21, None), "end": (21, None)}
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                 "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
                 "a couple of": 2, "a few": 3, "few": 3, "several": 3}
_UNIT_DAYS = {"day": 1, "week": 7, "fortnight": 14, "month": 30.4375, "year": 365.25}
_UNIT_SECONDS = {"minute": 60, "min": 60, "hour": 3600}

# The date expressions, most specific first (the regex takes the first alternative that matches).
_CORE = rf"""
    (?P<iso>\d{{4}}-\d{{2}}-\d{{2}}(?:[ T]\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?:Z|[+-]\d{{2}}:?\d{{2}})?)?)
  | (?P<range>(?:the\s+)?(?:last|past|previous)\s+(?P<range_n>{_NUMBER})\s+(?P<range_unit>{_UNIT}))
  | (?P<ago>(?P<ago_n>{_NUMBER})\s+(?P<ago_unit>{_UNIT})\s+ago)
  | (?P<part>(?:(?P<part_word>early|mid|late)[\s-]+|the\s+(?P<part_of>beginning|start|middle|end)\s+of\s+)
        (?P<part_month>(?:{_MONTHS})\.?(?:,?\s+{_YEAR})?))
  | (?P<season>(?:(?P<season_rel>last|this|past|previous)\s+|the\s+)?(?P<season_name>spring|summer|autumn|fall|winter)
        (?:\s+(?:of\s+)?(?P<season_year>{_YEAR}))?)
  | (?P<date>(?:(?:{_MONTHS})\.?\s+{_DAY}(?:,?\s+{_YEAR})?|{_DAY}\s+(?:of\s+)?(?:{_MONTHS})\.?(?:,?\s+{_YEAR})?))
  | (?P<month>(?:last\s+|this\s+)?(?:{_MONTHS})\.?(?:,?\s+(?:of\s+)?{_YEAR})?)
  | (?P<weekday>(?:last\s+|this\s+|past\s+)?(?:{_WEEKDAYS}))
  | (?P<relative>(?:last|this|past|previous)\s+(?:week|weekend|month|year)|today|yesterday|
        the\s+day\s+before\s+yesterday|tonight|last\s+night|this\s+(?:morning|afternoon|evening))
  | (?P<year>{_YEAR})
"""
_PREPOSITION = r"(?P<prep>since|after|before|until|till|up\s+to|in|on|during|over|at|of|by)"
_PHRASE = re.compile(rf"(?<![\w-])(?:{_PREPOSITION}\s+)?(?P<core>{_CORE})(?![\w-])", re.IGNORECASE | re.VERBOSE)
# A month or season alone ("may", "march", "fall" are also verbs) and a bare year ("2023 kg") are
# dates only after a preposition or with a day, year or modifier attached.
_NEEDS_PREPOSITION = ("month", "year", "season")
_VAGUE = re.compile(r"(?<![\w-])(?:recently|lately|of\s+late|these\s+days|the\s+other\s+day)(?![\w-])",
                    re.IGNORECASE)
_OPENING = {"since": "from_start", "after": "from_end",
            "before": "to_start", "until": "to_end", "till": "to_end", "up to": "to_end", "by": "to_end"}


@dataclass(frozen=True)
class Window:
    """A time window on `created_at`, [since, until) in unix seconds (None: open on that side)."""

    phrase: str  # the words of the query that named it, as typed
    since: float | None
    until: float | None
    vague: bool = False  # "recently": a preference for newer memories, not a filter

    def to_dict(self) -> dict[str, object]:
        from .timeutil import iso

        return {"phrase": self.phrase, "since": iso(self.since), "until": iso(self.until),
                "vague": self.vague}


def zone(name: str | tzinfo | None = None) -> tzinfo:
    """A time zone by IANA name; when none is given, $MAGRAY_TZ, else the system's local zone
    (which honours TZ)."""
    if isinstance(name, tzinfo):
        return name
    name = name or os.environ.get("MAGRAY_TZ")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidInput(f"unknown time zone {name!r}: use an IANA name like Europe/Amsterdam") from None
    return datetime.now().astimezone().tzinfo


def find_window(query: str, now: float, tz: tzinfo) -> tuple[str, Window | None]:
    """The query with its time phrase taken out, and the window the phrase names (None when it
    names none). A vague phrase ("recently") is taken out and returned as a window with no bounds."""
    matches = [m for m in _PHRASE.finditer(query)
               if not (_kind(m) in _NEEDS_PREPOSITION and not _anchored(m, query))]
    for i, match in enumerate(matches):
        span = _span(match, now, tz)
        if span is None:
            continue
        found = (_between(query, match, matches[i + 1] if i + 1 < len(matches) else None, span, now, tz)
                 or _around(query, match, span, tz))
        if found:
            (start, end), (since, until) = found
        else:
            (start, end), (since, until) = match.span(), _opened(match.group("prep"), span)
        return _without(query, (start, end)), Window(query[start:end].strip(), since, until)
    vague = _VAGUE.search(query)
    if vague:
        return _without(query, vague.span()), Window(vague.group(0), None, None, vague=True)
    return query, None


_BETWEEN_OPENING = re.compile(r"(?:between|from)\s+$", re.IGNORECASE)
_BETWEEN_JOIN = re.compile(r"\s*(?:and|to|till|until|through|-)\s*", re.IGNORECASE)
_DURATION_BEFORE = re.compile(rf"(?:(?:the|a|an)\s+|(?P<n>{_NUMBER})\s+)(?P<unit>{_UNIT})\s+$", re.IGNORECASE)


def _between(query: str, first: re.Match, second: re.Match | None, span: tuple[float, float],
             now: float, tz: tzinfo):
    """"between August 11 and August 15 2023", "from May to July": [start of the first, end of the
    second); the first takes the second's year when it names none. Returns ((start, end) of the
    phrase in the query, (since, until)) or None."""
    opening = _BETWEEN_OPENING.search(query, 0, first.start())
    if second is None or opening is None or first.group("prep") or second.group("prep") \
            or not _BETWEEN_JOIN.fullmatch(query, first.end(), second.start()):
        return None
    last = _span(second, now, tz)
    year = re.search(_YEAR + "$", second.group("core"))
    if year and not re.search(_YEAR, first.group("core")):
        again = _PHRASE.fullmatch(f"{first.group('core')} {year.group(0)}")
        span = _span(again, now, tz) if again else span
    if last is None or span is None or last[1] <= span[0]:
        return None
    return (opening.start(), second.end()), (span[0], last[1])


def _around(query: str, match: re.Match, span: tuple[float, float], tz: tzinfo):
    """"the week before August 3, 2023", "two days after the party on May 2": the stretch that
    long before (after) the date, the date's own day included, since what happened then is
    often told on that day. Returns ((start, end) of the phrase, (since, until)) or None."""
    preposition = (match.group("prep") or "").lower()
    if preposition not in ("before", "after"):
        return None
    duration = _DURATION_BEFORE.search(query, 0, match.start())
    if duration is None:
        return None
    n = _count(duration.group("n")) if duration.group("n") else 1.0
    length = n * _seconds(_unit(duration.group("unit")))
    if preposition == "before":
        return (duration.start(), match.end()), (span[0] - length, span[1])
    return (duration.start(), match.end()), (span[0], span[1] + length)


def _kind(match: re.Match) -> str:
    return next(name for name in _KINDS if match.group(name))


def resolve_point(text: str, now: float, tz: tzinfo, *, end: bool = False) -> float | None:
    """The moment a phrase given alone names: the start of the period it names, or its end when
    `end` ("--until yesterday" includes yesterday). None when the text is no time phrase."""
    match = _PHRASE.fullmatch(text.strip())
    if match is None:
        return None
    span = _span(match, now, tz)
    if span is None:
        return None
    since, until = _opened(match.group("prep"), span)
    if match.group("prep"):
        return since if since is not None else until
    return span[1] if end else span[0]


_KINDS = ("iso", "range", "ago", "part", "season", "date", "month", "weekday", "relative", "year")


_RANGE_WORD = re.compile(r"(?:between|from|and|to|till|until|through)\s+$", re.IGNORECASE)


def _anchored(match: re.Match, query: str) -> bool:
    kind = _kind(match)
    if match.group("prep") or _RANGE_WORD.search(query, 0, match.start()):
        return True
    if kind == "season":
        return bool(match.group("season_rel") or match.group("season_year"))
    if kind == "month":
        return bool(re.match(r"(last|this)\s", match.group("month"), re.IGNORECASE)
                    or re.search(_YEAR + "$", match.group("month")))
    return False


def _opened(preposition: str | None, span: tuple[float, float]) -> tuple[float | None, float | None]:
    """The window a preposition makes of the period `span`."""
    start, end = span
    how = _OPENING.get(re.sub(r"\s+", " ", (preposition or "").lower()))
    if how == "from_start":
        return start, None
    if how == "from_end":
        return end, None
    if how == "to_start":
        return None, start
    if how == "to_end":
        return None, end
    return start, end


def _without(query: str, span: tuple[int, int]) -> str:
    rest = (query[:span[0]] + " " + query[span[1]:]).strip()
    return re.sub(r"\s+([?!.,;:])", r"\1", re.sub(r"\s{2,}", " ", rest))


def _span(match: re.Match, now: float, tz: tzinfo) -> tuple[float, float] | None:
    """[start, end) of the period the core expression names, in unix seconds."""
    here = datetime.fromtimestamp(now, tz).replace(tzinfo=None)
    kind = _kind(match)
    core = re.sub(r"\s+", " ", match.group("core").strip())
    if kind == "range":
        n, unit = _count(match.group("range_n")), _unit(match.group("range_unit"))
        return now - n * _seconds(unit), now
    if kind == "ago":
        return _ago(_count(match.group("ago_n")), _unit(match.group("ago_unit")), here, now, tz)
    if kind == "part":
        month = _parse(match.group("part_month"), here)
        if month is None:
            return None
        first, last = _PART_OF_MONTH[(match.group("part_word") or match.group("part_of")).lower()]
        start = month[0].replace(day=first)
        end = month[1] if last is None else month[0].replace(day=last)
        return _stamp(start, tz), _stamp(end, tz)
    if kind == "season":
        return _season(match, here, tz)
    if kind == "relative" and core.lower() in ("this morning", "this afternoon", "this evening",
                                               "tonight", "last night"):
        day = datetime.combine(here.date(), datetime.min.time())
        if core.lower() == "last night":
            day -= timedelta(days=1)
        return _stamp(day, tz), _stamp(day + timedelta(days=1), tz)
    if kind == "relative" and core.lower().endswith("weekend"):
        monday = here.date() - timedelta(days=here.weekday())
        saturday = monday + timedelta(days=5) - (timedelta(days=7) if core.lower().startswith(("last", "past", "previous")) or here.weekday() < 5 else timedelta())
        start = datetime.combine(saturday, datetime.min.time())
        return _stamp(start, tz), _stamp(start + timedelta(days=2), tz)
    period = _parse(core, here)
    return None if period is None else (_stamp(period[0], tz), _stamp(period[1], tz))


def _ago(n: float, unit: str, here: datetime, now: float, tz: tzinfo) -> tuple[float, float]:
    """The calendar period of `unit` that holds the moment n units ago ("two weeks ago": that
    Monday-to-Sunday week; "3 days ago": that day); minutes and hours name that moment."""
    if unit in _UNIT_SECONDS:
        moment = now - n * _UNIT_SECONDS[unit]
        return moment, moment + _UNIT_SECONDS[unit]
    day = datetime.combine(here.date(), datetime.min.time())
    if unit in ("month", "year"):
        months = int(n) * (12 if unit == "year" else 1)
        start = _add_months(day.replace(day=1), -months)
        if unit == "year":
            start = start.replace(month=1)
        return _stamp(start, tz), _stamp(_add_months(start, 12 if unit == "year" else 1), tz)
    start = day - timedelta(days=n * _UNIT_DAYS[unit])
    if unit == "day":
        return _stamp(start, tz), _stamp(start + timedelta(days=1), tz)
    start -= timedelta(days=start.weekday())
    return _stamp(start, tz), _stamp(start + timedelta(days=_UNIT_DAYS[unit]), tz)


def _season(match: re.Match, here: datetime, tz: tzinfo) -> tuple[float, float]:
    first_month = _SEASONS[match.group("season_name").lower()]
    if match.group("season_year"):
        year = int(match.group("season_year"))
    else:
        # The most recent season of that name that has begun (or, for "last", has ended).
        year = here.year if (here.month, here.day) >= (first_month, 1) else here.year - 1
        ended = _add_months(datetime(year, first_month, 1), 3) <= here
        if (match.group("season_rel") or "").lower() in ("last", "past", "previous") and not ended:
            year -= 1
    start = datetime(year, first_month, 1)
    return _stamp(start, tz), _stamp(_add_months(start, 3), tz)


def _parse(expression: str, here: datetime) -> tuple[datetime, datetime] | None:
    """[start, end) of what dateparser reads in `expression`, as naive local times."""
    data = _parser(here).get_date_data(expression)
    moment, period = data.date_obj, data.period
    if moment is None:
        return None
    if period == "time":
        return moment, moment
    day = datetime.combine(moment.date(), datetime.min.time())
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        return start, _add_months(start, 1)
    if period == "year":
        start = day.replace(month=1, day=1)
        return start, start.replace(year=start.year + 1)
    return day, day + timedelta(days=1)


@functools.lru_cache(maxsize=8)
def _parser(here: datetime):
    # Imported here: dateparser costs ~0.3 s to import and compiles its patterns on first use,
    # which only queries that hold a time phrase should pay.
    from dateparser.date import DateDataParser

    return DateDataParser(languages=["en"], settings={
        "RELATIVE_BASE": here, "PREFER_DATES_FROM": "past", "RETURN_TIME_AS_PERIOD": True,
        "PREFER_DAY_OF_MONTH": "first", "STRICT_PARSING": False})


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    return moment.replace(year=moment.year + total // 12, month=total % 12 + 1)


def _stamp(moment: datetime, tz: tzinfo) -> float:
    return moment.replace(tzinfo=tz).timestamp()


def _count(text: str) -> float:
    text = re.sub(r"\s+", " ", text.lower())
    return float(text) if text.isdigit() else float(_NUMBER_WORDS[text])


def _unit(text: str) -> str:
    text = text.lower().rstrip("s")
    return "min" if text == "min" else text


def _seconds(unit: str) -> float:
    return _UNIT_SECONDS.get(unit) or _UNIT_DAYS[unit] * 86400.0
