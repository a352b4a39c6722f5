"""Where things live and the defaults a user can override (paths, layers, durability profiles)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LAYERS: tuple[str, ...] = ("interact", "insights", "assets")

HOUR = 3600.0
DAY = 24 * HOUR

# Default time to live per layer, in seconds; None means the memory never expires.
DEFAULT_TTL: dict[str, float | None] = {
    "interact": 24 * HOUR,
    "insights": 180 * DAY,
    "assets": None,
}

# Layers whose expiry is pushed forward each time a memory is used.
RENEWED_BY_USE: frozenset[str] = frozenset({"insights"})

PROFILES: tuple[str, ...] = ("safe", "balanced", "fast")
DEFAULT_PROFILE = "safe"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "magray"


def cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "magray"


def default_db_path() -> Path:
    """`MAGRAY_DB` if set, else the XDG data dir."""
    env = os.environ.get("MAGRAY_DB")
    return Path(env) if env else data_dir() / "memory.db"


def default_profile() -> str:
    return os.environ.get("MAGRAY_PROFILE", DEFAULT_PROFILE)


def model_cache_dir() -> Path:
    return cache_dir() / "models"


@dataclass(frozen=True)
class Durability:
    """What a profile promises, expressed as the settings that keep the promise."""

    synchronous: str  # PRAGMA synchronous value
    promise: str


DURABILITY: dict[str, Durability] = {
    "safe": Durability("FULL", "every write is on disk when the call returns, even across power loss"),
    "balanced": Durability(
        "NORMAL", "every write survives a crash of the process; the last commits may be lost on power loss"
    ),
    "fast": Durability(
        "NORMAL",
        "bulk imports commit in batches: survives process crashes up to the last batch committed; "
        "power loss may lose the last commits",
    ),
}
