"""Times as users type them (ISO dates, '2h', '3d') and as magray stores them (unix seconds, UTC)."""

from __future__ import annotations

import re
from datetime import datetime, timezone, tzinfo

from . import timephrases
from .errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '24h', '7d', '2w' -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise InvalidInput(f"bad duration {text!r}: use a number and a unit, like 30m, 24h, 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def parse_when(text: str, now: float, tz: tzinfo | str | None = None, *, end: bool = False) -> float:
    """An ISO date or date-time (UTC unless it says otherwise), a span meaning 'that long ago'
    ('7d'), or a time phrase ('yesterday', 'last week', '10 minutes ago') read in the zone `tz`
    (default: the local one): the start of the period it names, or its end when `end`."""
    text = str(text).strip()
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        point = timephrases.resolve_point(text, now, timephrases.zone(tz), end=end) if text else None
        if point is None:
            raise InvalidInput(f"bad time {text!r}: use an ISO date like 2026-05-01, a span like 7d, "
                               "or a phrase like 'last week'") from None
        return point
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        when = datetime.fromtimestamp(ts, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(ts)  # a time no calendar can show is still shown, never a crash
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")
