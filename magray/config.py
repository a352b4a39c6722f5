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
# Items embedded and written per transaction in bulk adds: big enough to batch the model, small
# enough that another process never waits long for the write lock. `fast` commits in bigger batches.
WRITE_BATCH: dict[str, int] = {"safe": 64, "balanced": 64, "fast": 512}
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


# The lifecycle rules, overridable in $XDG_CONFIG_HOME/magray/config.toml (`magray config set`).
LIFECYCLE_DEFAULTS: dict[str, dict[str, object]] = {
    "promotion": {
        # An interact memory used this many times within its TTL moves to insights.
        "interact_min_uses": 3,
        # An insights memory used in this many distinct sessions moves to assets...
        "insights_min_sessions": 3,
        # ...and so does one whose importance is at least this.
        "insights_min_importance": 0.8,
    },
    "dedup": {
        # Layers where a near-duplicate reinforces an existing memory instead of standing alone.
        # Not interact: conversation turns repeat ("thanks!") without being the same memory.
        "layers": ["insights", "assets"],
        # Cosine similarity at or above which two memories count as near-duplicates.
        "min_similarity": 0.95,
    },
    "cache": {
        # Embeddings of texts seen in queries and imports kept at most (about 1.6 KB each at 384
        # dims); least recently used go first. Texts of stored memories are never evicted.
        "max_entries": 50_000,
    },
    "maintenance": {
        # Expired memories purged, at most, after each write (bounded work on normal use).
        "expire_per_write": 20,
        # PRAGMA optimize runs after every this many adds.
        "optimize_every_adds": 1000,
    },
}


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "magray"


def config_path() -> Path:
    return config_dir() / "config.toml"


# What each rule accepts: (type, smallest, largest); None = no bound. Checked when set and when read.
RULE_RANGES: dict[str, tuple[type, float | None, float | None]] = {
    "promotion.interact_min_uses": (int, 1, None),
    "promotion.insights_min_sessions": (int, 1, None),
    "promotion.insights_min_importance": (float, 0.0, 1.0),
    "dedup.min_similarity": (float, 0.0, 1.0),
    "cache.max_entries": (int, 0, 2**63 - 1),
    "maintenance.expire_per_write": (int, 0, 1_000_000),
    "maintenance.optimize_every_adds": (int, 0, 2**63 - 1),
}


def load_rules() -> dict[str, dict[str, object]]:
    """The lifecycle rules: defaults, overridden by the user's config file (each value checked)."""
    import copy
    import tomllib

    from .errors import InvalidInput

    rules = copy.deepcopy(LIFECYCLE_DEFAULTS)
    path = config_path()
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {path}: {exc}") from None
        for section, values in data.items():
            if section in rules and isinstance(values, dict):
                for key, value in values.items():
                    if key in rules[section]:
                        try:
                            rules[section][key] = check_rule(f"{section}.{key}", value)
                        except InvalidInput as exc:
                            raise InvalidInput(f"{path}: {exc} (fix it with `magray config set`)") from None
    return rules


def check_rule(key: str, value: object) -> object:
    """A rule's value if it has the right type and range, else InvalidInput naming what fits."""
    import math

    from .errors import InvalidInput

    if key == "dedup.layers":
        if not isinstance(value, list) or not all(isinstance(v, str) and v in LAYERS for v in value):
            raise InvalidInput(f"{key} must be a list of layers from {', '.join(LAYERS)}")
        return sorted(set(value), key=LAYERS.index)
    kind, low, high = RULE_RANGES[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (kind is int and not (isinstance(value, int) or float(value).is_integer())):
        raise InvalidInput(f"{key} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{key} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"from {low}" + (f" to {high}" if high is not None else " up")
        raise InvalidInput(f"{key} must be {span}, got {value!r}")
    return kind(value)


def set_rule(key: str, raw: str) -> dict[str, dict[str, object]]:
    """Set `section.name` to `raw` (parsed like the default's type, checked against its range)
    and rewrite the config file (private, through a temporary file renamed into place)."""
    import json
    import tempfile

    from .errors import InvalidInput

    section, _, name = key.partition(".")
    if section not in LIFECYCLE_DEFAULTS or name not in LIFECYCLE_DEFAULTS[section]:
        known = ", ".join(f"{s}.{n}" for s, v in LIFECYCLE_DEFAULTS.items() for n in v)
        raise InvalidInput(f"unknown setting {key!r}: use one of {known}")
    if not isinstance(raw, str):
        raise InvalidInput(f"{key}: give the value as text")
    default = LIFECYCLE_DEFAULTS[section][name]
    if isinstance(default, list):
        value: object = [v.strip() for v in raw.split(",") if v.strip()]
    else:
        try:
            value = int(raw) if isinstance(default, int) else float(raw)
        except ValueError:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise InvalidInput(f"{key} must be {kind}, got {raw!r}") from None
    value = check_rule(key, value)
    rules = load_rules()
    rules[section][name] = value
    lines = ["# magray lifecycle rules (see `magray config show`)"]
    for sec, values in rules.items():
        lines.append(f"\n[{sec}]")
        # Checked values only: finite numbers and layer names, which JSON writes as valid TOML.
        lines.extend(f"{k} = {json.dumps(v, allow_nan=False)}" for k, v in values.items())
    path = config_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return rules
