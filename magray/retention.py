"""Backup retention: the backups a folder holds, the rotation policy that says which to keep
(stored in the file), pruning by it, and the scheduled backup that `magray replicate` and
`magray serve` take."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from . import binding as binding_mod, files
from .backup import BackupReport, create, default_dir, manifest_path, read_manifest
from .db import write_transaction
from .errors import InvalidInput
from .timeutil import iso

if TYPE_CHECKING:
    from .memory import Memory

log = logging.getLogger(__name__)

POLICY_KEY = "backup_policy"
DEFAULT_POLICY: dict[str, int | None] = {"keep_last": None, "keep_daily": 7, "keep_weekly": 4}


def list_backups(folder: Path) -> list[dict[str, Any]]:
    """Backups in `folder` that have a manifest (files magray made), newest first. `verified`
    means the backup was verified when written and its size still matches; `magray backup
    verify FILE` re-reads the whole file."""
    found = []
    for path in Path(folder).glob("*.db"):
        manifest = read_manifest(path)
        if manifest is None:
            continue
        size = path.stat().st_size
        found.append({
            "file": str(path), "created": iso(manifest.get("created_at")), "created_at": manifest.get("created_at"),
            "size_bytes": size, "memories": manifest.get("memories"),
            "schema_version": manifest.get("schema_version"), "kind": manifest.get("kind", "backup"),
            "verified": bool(manifest.get("verified")) and manifest.get("size_bytes") == size,
        })
    return sorted(found, key=lambda b: b["created_at"] or 0, reverse=True)


def check_policy(keep_last: int | None, keep_daily: int | None, keep_weekly: int | None) -> dict[str, int | None]:
    policy = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly}
    for name, value in policy.items():
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InvalidInput(f"{name.replace('_', '-')} must be a whole number, 0 or more")
    if not any(policy.values()):
        raise InvalidInput("a rotation policy must keep something: give --keep N, --keep-daily D "
                           "or --keep-weekly W")
    return policy


def get_policy(conn: apsw.Connection) -> dict[str, int | None]:
    return DEFAULT_POLICY | (binding_mod.get_setting(conn, POLICY_KEY) or {})


def set_policy(mem: Memory, keep_last: int | None, keep_daily: int | None,
               keep_weekly: int | None) -> dict[str, int | None]:
    policy = check_policy(keep_last, keep_daily, keep_weekly)
    with write_transaction(mem.connection):
        binding_mod.set_setting(mem.connection, POLICY_KEY, policy)
    return policy


EVERY_KEY = "backup_every"


def get_every(conn: apsw.Connection) -> float | None:
    """Seconds between the scheduled backups that `magray replicate` and `magray serve` take."""
    return binding_mod.get_setting(conn, EVERY_KEY)


def set_every(mem: Memory, seconds: float) -> float | None:
    if seconds < 0:
        raise InvalidInput("--every must be a span like 1d or 12h (0 turns scheduled backups off)")
    with write_transaction(mem.connection):
        binding_mod.set_setting(mem.connection, EVERY_KEY, seconds or None)
    return seconds or None


def scheduled(mem: Memory) -> BackupReport | None:
    """The scheduled backup: when `every` is set and the newest backup in the default folder is
    older than that (or there is none), take a verified one, then prune by the stored policy."""
    every = get_every(mem.connection)
    if not every:
        return None
    folder = default_dir(mem.path)
    made = [b["created_at"] for b in list_backups(folder) if b["kind"] == "backup" and b["created_at"]]
    if made and mem.now() - max(made) < every:
        return None
    report = create(mem)
    prune(folder, get_policy(mem.connection))
    log.info("scheduled backup %s (%d memories)", report.path, report.memories)
    return report


def select_kept(backups: list[dict[str, Any]], policy: dict[str, int | None]) -> set[str]:
    """Files kept by a policy (backups newest first): the newest `keep_last`, the newest of each of
    the last `keep_daily` days and `keep_weekly` ISO weeks that have backups (UTC). The newest
    backup is always kept."""
    kept = {b["file"] for b in backups[:max(1, policy.get("keep_last") or 0)]}
    for key, bucket in (("keep_daily", lambda d: d.date()), ("keep_weekly", lambda d: d.isocalendar()[:2])):
        limit = policy.get(key) or 0
        seen: set = set()
        for b in backups:
            when = bucket(datetime.fromtimestamp(b["created_at"] or 0, tz=timezone.utc))
            if when in seen:
                continue
            if len(seen) == limit:
                break
            seen.add(when)
            kept.add(b["file"])
    return kept


def prune(folder: Path, policy: dict[str, int | None], *, dry_run: bool = False) -> dict[str, Any]:
    """Remove the backups (and manifests) in `folder` that `policy` does not keep. Files without
    a manifest are never touched."""
    check_policy(policy.get("keep_last"), policy.get("keep_daily"), policy.get("keep_weekly"))
    backups = list_backups(folder)
    kept = select_kept(backups, policy)
    removed = [b["file"] for b in backups if b["file"] not in kept]
    # Left by a backup or a restore that was killed: never a backup, and as big as one.
    stale = files.stale_partials(Path(folder))
    if not dry_run:
        for name in removed:
            Path(name).unlink(missing_ok=True)
            manifest_path(Path(name)).unlink(missing_ok=True)
        for partial in stale:
            files.remove_partial(partial)
    return {"policy": policy, "kept": [b["file"] for b in backups if b["file"] in kept],
            "removed": removed, "unfinished_removed": [str(p) for p in stale], "dry_run": dry_run}
