"""The replication part of the Memory facade: where the file replicates, running Litestream for it,
the replica's status, point-in-time restores and read-only followers (see magray.replication)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import backup as backup_mod, retention
from . import binding as binding_mod
from . import replication
from .db import write_transaction
from .errors import InvalidInput

if TYPE_CHECKING:
    from .memory import Memory, Progress


class ReplicationMixin:
    """Methods of `Memory` about copies of the file on other machines."""

    def set_replica(self: Memory, url: str | None) -> dict[str, Any]:
        """Record where this file replicates (a folder, file://, s3://, sftp://...; None to stop).
        Only the address is stored in the file: credentials stay in the environment."""
        entry = None if url is None else {"url": replication.normalize_url(url), "set_at": self.now()}
        with self._write():
            binding_mod.set_setting(self._conn, replication.REPLICA_KEY, entry)
        self._limit_wal()
        return self.replica()

    def replica(self: Memory) -> dict[str, Any]:
        url = replication.stored_url(self._conn)
        return {"path": str(self.path), "url": url, "config": str(replication.config_file(self.path)),
                "replicated": replication.is_replicated(self._conn), "follower": self.read_only}

    def replica_status(self: Memory, url: str | None = None) -> replication.ReplicaStatus:
        """The replica's newest transaction and its time, how far it is behind this file, the
        snapshots it keeps, and whether a `magray replicate` runs for this file."""
        return replication.status(self.path, replication.require_url(self._conn, url), self.now())

    def replicate(self: Memory, stop: threading.Event, *, sync_interval: str = replication.DEFAULT_SYNC_INTERVAL,
                  log_to: IO[str] | None = None, backup_check_s: float = replication.BACKUP_CHECK_S) -> int:
        """Run Litestream for this file until `stop` is set (restarted whenever it dies), taking
        the scheduled backups of `backup policy --every` meanwhile. Returns Litestream's exit code."""
        url = replication.require_url(self._conn, None)
        self._limit_wal()
        with replication.replicator_lock(self.path):
            replication.prepare_folders(self.path, url)
            config = replication.write_config(self.path, url, sync_interval=sync_interval)
            command = [replication.litestream_binary(), "replicate", "-config", str(config)]
            supervisor = replication.Supervisor(command, log_to=log_to, tick=self.backup_if_due,
                                                tick_s=backup_check_s)
            return supervisor.run(stop)

    def replication_unit(self: Memory, magray_command: list[str],
                         sync_interval: str = replication.DEFAULT_SYNC_INTERVAL) -> str:
        """A systemd user unit that keeps `magray replicate` running for this file."""
        return replication.systemd_unit(self.path, magray_command, sync_interval)

    def restore_from_replica(self: Memory, url: str | None = None, *, at: float | None = None,
                             to: str | os.PathLike | None = None,
                             progress: Progress | None = None) -> dict[str, Any]:
        """Point-in-time recovery: restore the replica as it was at `at` (unix seconds; default:
        its newest state), check the copy (integrity_check, then magray's own checks), and either
        write it to the new file `to`, touching nothing else, or swap it into this file like
        `restore` does with a backup (a safety copy first, one transaction)."""
        url = replication.require_url(self._conn, url)
        if to is not None:
            return restore_replica_copy(url, to, at=at)
        with replication.scratch_dir(self.path) as folder:
            copy, report = _restored_and_checked(url, folder, at)
            stored = binding_mod.get_setting(self._conn, replication.REPLICA_KEY)
            restored = self.restore(copy, progress=progress)
            if stored is not None:  # a point before `replica set` must not switch replication off
                with write_transaction(self._conn):
                    binding_mod.set_setting(self._conn, replication.REPLICA_KEY, stored)
            return report | {"path": str(self.path), "replaced": True, "safety_copy": restored.safety_copy}

    def backup_if_due(self: Memory) -> backup_mod.BackupReport | None:
        """Take a verified backup (then rotate) when the newest is older than `backup policy
        --every`; None when no schedule is set or the newest backup is recent enough."""
        return retention.scheduled(self)

    def _limit_wal(self: Memory) -> None:
        """With a replica, PASSIVE checkpoints never shrink the WAL file: SQLite cuts it back to
        this size whenever it starts over."""
        if replication.is_replicated(self._conn):
            self._conn.execute(f"PRAGMA journal_size_limit={replication.JOURNAL_SIZE_LIMIT}")


def restore_replica_copy(url: str, to: str | os.PathLike, *, at: float | None = None) -> dict[str, Any]:
    """Restore the replica at `url` (as it was at `at`, unix seconds) into the new file `to`,
    checked like a restore; no other file is opened or touched (`magray restore --from-replica
    URL --to PATH` on a machine that has no memory file yet)."""
    url = replication.normalize_url(url)
    target = Path(to).expanduser().resolve()
    if target.exists() or Path(str(target) + "-wal").exists():
        raise InvalidInput(f"{target} already exists; name a new file")
    with replication.scratch_dir(target) as folder:
        copy, report = _restored_and_checked(url, folder, at)
        replication.forget_replica(copy)
        os.replace(copy, target)
    return report | {"path": str(target), "replaced": False}


def _restored_and_checked(url: str, folder: Path, at: float | None) -> tuple[Path, dict[str, Any]]:
    copy = folder / "restored.db"
    summary = replication.restore_copy(url, copy, at=at)
    checked = backup_mod.verify(copy)
    problem = _doctor(copy)
    if problem:
        raise replication.ReplicaError(f"the copy restored from {url} is not sound: {problem}")
    return copy, {"url": url, "at": at, "txid": summary.get("txid"), "memories": checked.memories}


def _doctor(path: Path) -> str | None:
    """The first problem magray's doctor finds in a restored copy (after backup.verify), or None."""
    from contextlib import closing

    from . import health

    with closing(backup_mod._open_readonly(path)) as conn:
        # backup.verify has just run integrity_check on this copy; the rest is the doctor's own.
        _, findings, _ = health.diagnose(conn, integrity=False)
    return findings[0].message if findings else None


def follow(url: str, to: str | os.PathLike, stop: threading.Event, *, interval: str = "1s",
           log_to: IO[str] | None = None, on_ready=None) -> int:
    """Keep `to` a read-only copy of the replica at `url` (Litestream's follow mode, about one
    interval behind) until `stop` is set; a follower stopped earlier resumes where it was.
    `on_ready(info)` is called once the copy exists. Returns Litestream's exit code."""
    url = replication.normalize_url(url)
    info = replication.start_follower(url, Path(to))
    if on_ready is not None:
        on_ready(info)
    supervisor = replication.Supervisor(replication.follow_command(url, Path(info["path"]), interval), log_to=log_to)
    return supervisor.run(stop)
