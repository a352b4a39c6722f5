"""Files magray writes beside the memory file (backups, exports, manifests, the config): never over
the memory file itself, never over an existing file unless asked, and always through a private
temporary file renamed into place, so that a reader sees no file or the whole file."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from .errors import InvalidInput, StoreError

PARTIAL_SUFFIX = ".partial"
# SQLite's companions of a database file: overwriting one damages the database as surely as
# overwriting the file itself.
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
# A temporary file names the process writing it: `.NAME.RANDOM.PID.partial`.
_PARTIAL = re.compile(r"^\..+\.(\d+)\.partial$")
# Older versions named a restore's temporary copy `.restore-PID-TIME.db`.
_LEGACY_RESTORE = re.compile(r"^\.restore-(\d+)-\d+\.db$")
# Temporary files of older versions carry no process id: removed once this old.
LEGACY_PARTIAL_AGE_S = 24 * 3600.0


def refuse_memory_file(target: Path, db_path: Path | str | None) -> None:
    """Refuse to write `target` when it is the memory file or one of SQLite's files beside it."""
    if db_path is None:
        return
    target = Path(target).expanduser().resolve()
    live = Path(db_path).expanduser().resolve()
    for suffix in SQLITE_COMPANIONS:
        if target == live.with_name(live.name + suffix):
            what = "the memory file itself" if not suffix else f"the memory file's {suffix[1:]} file"
            raise InvalidInput(f"{target} is {what}; write to another path")


def check_new(target: Path, db_path: Path | str | None, *, force: bool) -> Path:
    """The resolved path to write: not the memory file, and not an existing file unless `force`."""
    target = Path(target).expanduser()
    refuse_memory_file(target, db_path)
    if target.is_dir():
        raise InvalidInput(f"{target} is a folder; name a file")
    if target.exists() and not force:
        raise InvalidInput(f"{target} already exists; name a new file, or add --force to replace it")
    if target.exists() and not target.is_file():
        raise InvalidInput(f"{target} is not a regular file; name a new file")
    return target.resolve()


def new_partial(target: Path) -> Path:
    """A new, empty, private (0600) temporary file beside `target`, with a name no other writer
    can pick (two backups at once never share one) that says which process writes it."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{os.getpid()}{PARTIAL_SUFFIX}",
                                    dir=target.parent)
    except OSError as exc:
        raise StoreError(f"cannot create a file in {target.parent}: {exc.strerror}") from None
    os.close(fd)
    return Path(name)


def remove_partial(partial: Path) -> None:
    """Remove a temporary file and anything SQLite left beside it."""
    for suffix in SQLITE_COMPANIONS:
        Path(str(partial) + suffix).unlink(missing_ok=True)


def publish(partial: Path, target: Path, *, force: bool) -> None:
    """Rename a complete temporary file to `target`. Without `force` an existing file is never
    replaced, not even one created by another process a moment ago (FileExistsError)."""
    partial.chmod(0o600)
    if force:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)  # atomic, and fails if the name exists
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if target.exists():
            raise FileExistsError(target) from None
        os.replace(partial, target)
        return
    partial.unlink()


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (after a rename into it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stale_partials(folder: Path) -> list[Path]:
    """Temporary files in `folder` whose writer is gone (killed during a backup or a restore), with
    what SQLite left beside them."""
    stale = []
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _PARTIAL.match(path.name) or _LEGACY_RESTORE.match(path.name)
        if match:
            if not _process_alive(int(match.group(1))):
                stale.append(path)
        elif path.name.endswith(PARTIAL_SUFFIX) and _age(path) > LEGACY_PARTIAL_AGE_S:
            stale.append(path)
    return sorted(stale)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def private_text(path: Path):
    """A new text file only its owner can read (0600), created with that mode."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8")
