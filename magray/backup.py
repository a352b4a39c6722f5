"""Backups of the memory file: SQLite's online backup API (other processes keep writing), a
verification of every copy with a small JSON manifest beside it, and a restore that other
processes see as one transaction (old content or new, never a mix). Which copies are kept, and
when one is taken on a schedule: retention.py."""

from __future__ import annotations

import hashlib
import logging
import json
import os
import random
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from . import binding as binding_mod, schema, vectors
from . import files
from .db import (BUSY_TIMEOUT_MS, WRITE_RETRIES, describe, load_sqlite_vec, open_connection, read_snapshot,
                 translate_errors)
from .errors import Busy, InvalidInput, NotFound, StoreError
from .timeutil import iso

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .memory import Memory

Progress = Callable[[int, int], None]  # (pages copied, pages in all)

BACKUP_DIR = "backups"
MANIFEST_SUFFIX = ".json"
# Pages copied per backup step: ~4 MB with 4 KiB pages, so progress moves and the GIL is released often.
STEP_PAGES = 1024
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class BackupReport:
    """What a verified backup holds: written into its manifest and returned by verify."""

    path: str
    created_at: float
    size_bytes: int
    sha256: str
    memories: int        # live (not deleted) memories
    rows: int            # every memory row, soft-deleted ones included
    schema_version: int
    model: dict[str, Any] | None
    page_size: int
    page_count: int
    kind: str = "backup"  # or "pre-restore": the safety copy a restore makes first
    source: str | None = None
    verified: bool = True
    manifest: bool = True  # False: a file without a manifest (a plain copy), checked on its own

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"created": iso(self.created_at)}


@dataclass
class RestoreReport:
    restored_from: str
    memories: int
    schema_version: int
    migrated_from: int | None
    safety_copy: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- where backups go --------------------------------------------------------------------------------

def default_dir(db_path: Path) -> Path:
    """`backups/` beside the memory file."""
    return Path(db_path).resolve().parent / BACKUP_DIR


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + MANIFEST_SUFFIX)


def _private_dir(folder: Path) -> None:
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}") from None


def _target(db_path: Path, dest: str | os.PathLike | None, kind: str, now: float,
            force: bool = False) -> tuple[Path, bool]:
    """The backup file to write and whether magray chose its name: a timestamped name in the
    default folder, or in DEST when DEST is a folder (one that exists, ends with a slash or has no
    file extension; created if needed), else DEST itself as a new file (an existing one only with
    `force`; never the memory file or its -wal/-shm). Our own default folder is kept private
    (0700) even if it already existed."""
    if dest is None:
        folder = default_dir(db_path)
        _private_dir(folder)
        folder.chmod(0o700)
    else:
        dest = Path(dest).expanduser()
        files.refuse_memory_file(dest, db_path)
        is_folder = dest.is_dir() or str(dest).endswith(os.sep) or (not dest.exists() and not dest.suffix)
        if not is_folder:
            target = files.check_new(dest, db_path, force=force)
            _private_dir(target.parent)
            return target, False
        folder = dest
        _private_dir(folder)
    return _free_name(folder, Path(db_path).stem + ("" if kind == "backup" else f"-{kind}"), now), True


def _free_name(folder: Path, label: str, now: float) -> Path:
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"{label}-{stamp}.db"
    n = 1
    while target.exists() or manifest_path(target).exists():
        n += 1
        target = folder / f"{label}-{stamp}-{n}.db"
    return target.resolve()


# -- making a backup ----------------------------------------------------------------------------------

def create(mem: Memory, dest: str | os.PathLike | None = None, *, kind: str = "backup", force: bool = False,
           step_pages: int = STEP_PAGES, progress: Progress | None = None) -> BackupReport:
    """Copy the live file into one self-contained .db (rollback journal, no -wal needed beside it)
    with the online backup API, verify the copy, then write its manifest. Other processes keep
    writing meanwhile; the copy holds exactly what was committed when the backup began."""
    now = mem.now()
    report = _write_copy(mem.connection, mem.path, dest, kind=kind, now=now, force=force,
                         step_pages=step_pages, progress=progress)
    from .db import write_transaction

    # For `magray_last_backup_age_seconds`: when the last verified backup of this file was made.
    with translate_errors(mem.path), write_transaction(mem.connection):
        binding_mod.set_setting(mem.connection, "last_backup_at", now)
    return report


def _write_copy(conn: apsw.Connection, db_path: Path, dest: str | os.PathLike | None, *, kind: str,
                now: float, force: bool = False, step_pages: int = STEP_PAGES,
                progress: Progress | None = None) -> BackupReport:
    """The copy itself, from `conn` (a connection to the live file at `db_path`), through a
    temporary file of its own (0600 from creation) renamed into place once verified."""
    target, named_here = _target(db_path, dest, kind, now, force)
    partial = files.new_partial(target)
    try:
        try:
            with read_snapshot(conn):
                # A read transaction held across all steps pins one WAL snapshot: writers in other
                # processes go on appending to the WAL, and the backup never restarts because of them.
                with translate_errors(db_path):
                    expected = _counts(conn)
                with closing(apsw.Connection(str(partial))) as dst:
                    # No journal and no fsync while copying: a partial file is never used (it is
                    # verified, fsynced and renamed only once complete), and this is ~30% faster.
                    dst.execute("PRAGMA journal_mode=OFF").fetchall()
                    dst.execute("PRAGMA synchronous=OFF")
                    _copy(dst, conn, step_pages, progress)
                    # The copy must stand alone: rollback-journal mode, so no -wal file is needed.
                    dst.execute("PRAGMA journal_mode=DELETE").fetchall()
        except apsw.Error as exc:
            raise _copy_failure(exc, db_path, target) from None
        except OSError as exc:
            raise StoreError(f"the backup {target} could not be written: {exc.strerror or exc}") from None
        files.fsync(partial)
        try:
            report = verify(partial, expected=expected)
        except StoreError as exc:
            if kind != "pre-restore":
                raise StoreError(f"the backup {target} failed its check, and was not kept: "
                                 f"{str(exc).replace(str(partial), 'the copy')}") from None
            # The file being replaced may be the damaged one that the restore is meant to fix:
            # keep its pages as they were, without a manifest (so prune never removes it).
            target = _publish(partial, target, named_here, force)
            log.warning("kept the current file as %s, unverified: %s", target, exc)
            return BackupReport(path=str(target), created_at=now, size_bytes=target.stat().st_size,
                                sha256=sha256_file(target), page_size=0, page_count=0, kind=kind,
                                source=str(db_path), verified=False, manifest=False, **expected)
        target = _publish(partial, target, named_here, force)
        files.fsync(target.parent)
    finally:
        files.remove_partial(partial)
    report.path, report.created_at, report.kind, report.source = str(target), now, kind, str(db_path)
    _write_manifest(target, report)
    report.manifest = True
    return report


def _publish(partial: Path, target: Path, named_here: bool, force: bool) -> Path:
    """Rename the verified copy to its name; a name magray chose that another backup took
    meanwhile moves on to the next free one."""
    while True:
        try:
            files.publish(partial, target, force=force)
            return target
        except FileExistsError:
            if not named_here:
                raise InvalidInput(f"{target} was created by another process meanwhile; "
                                   "name a new file") from None
            target = _next_name(target)


def _next_name(target: Path) -> Path:
    """NAME-2.db after NAME.db, NAME-3.db after NAME-2.db, skipping names already taken."""
    stem, _, n = target.stem.rpartition("-")
    if not (stem and n.isdigit()):  # a timestamp ends in Z: NAME.db has no number yet
        stem, n = target.stem, "1"
    number = int(n) + 1
    while (candidate := target.with_name(f"{stem}-{number}.db")).exists() or manifest_path(candidate).exists():
        number += 1
    return candidate


def _copy_failure(exc: apsw.Error, db_path: Path, target: Path) -> StoreError:
    """A failed copy, blamed on the right file: a damaged live file is the live file's problem,
    anything else (disk full, I/O, permissions) is the backup's own."""
    if isinstance(exc, apsw.BusyError):
        return Busy(f"{db_path} stayed locked by another process; try again")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return StoreError(f"{db_path} {describe(exc)}")
    return StoreError(f"the backup {target} could not be written: {describe(exc)}")


def _copy(dst: apsw.Connection, src: apsw.Connection, step_pages: int, progress: Progress | None) -> None:
    """Copy every page of `src` into `dst`, a step at a time. Another process holding the
    destination's write lock (a restore into a live file) is waited for, then retried."""
    for attempt in range(WRITE_RETRIES + 1):
        try:
            with dst.backup("main", src, "main") as job:
                while not job.done:
                    job.step(step_pages)
                    if progress:
                        progress(job.pagecount - job.remaining, job.pagecount)
            return
        except apsw.BusyError:
            if attempt == WRITE_RETRIES:
                raise Busy("the memory file stayed locked by another process; try again") from None
            time.sleep(random.uniform(0.01, 0.05) * (2**attempt))
        except apsw.ReadOnlyError:
            raise StoreError("cannot copy between files with different page sizes while one is in "
                             "WAL mode (run `PRAGMA journal_mode=DELETE` on the backup first)") from None


def _counts(conn: apsw.Connection) -> dict[str, Any]:
    live, rows = conn.execute(
        "SELECT count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM memories").fetchone()
    bound = binding_mod.current(conn)
    return {"memories": live, "rows": rows, "schema_version": schema.current_version(conn),
            "model": bound.to_dict() if bound else None}


def _write_manifest(target: Path, report: BackupReport) -> None:
    path = manifest_path(target)
    tmp = files.new_partial(path)
    data = {k: v for k, v in report.to_dict().items() if k not in ("manifest", "path")}
    data["file"] = target.name
    try:
        with files.private_text(tmp) as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    files.fsync(path.parent)


def read_manifest(path: Path) -> dict[str, Any] | None:
    mpath = manifest_path(Path(path))
    if not mpath.is_file():
        return None
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"the manifest {mpath} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise StoreError(f"the manifest {mpath} is not a JSON object")
    return data


# -- verifying ----------------------------------------------------------------------------------------

def verify(path: str | os.PathLike, *, expected: dict[str, Any] | None = None) -> BackupReport:
    """Check a backup (or any copy of a memory file) before trusting it: a complete SQLite file
    (not truncated), sha256 equal to its manifest's when it has one, PRAGMA integrity_check
    clean, a magray schema this code understands (SchemaTooNew otherwise), vectors consistent
    with the model binding, and counts equal to the manifest's (or to `expected`).
    Raises StoreError naming the first problem; returns what the file holds."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFound(f"no backup file at {path}")
    page_size, page_count = _check_header(path)
    digest = sha256_file(path)
    manifest = read_manifest(path)
    if manifest is not None and manifest.get("sha256") != digest:
        raise StoreError(f"{path} does not match its manifest (sha256 differs): the file was "
                         "changed or damaged after the backup was made")
    with closing(_open_readonly(path)) as conn, translate_errors(path):
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
        except apsw.CorruptError as exc:  # some damage stops the check itself
            problems = [str(exc)]
        if problems != ["ok"]:
            raise StoreError(f"{path} is damaged: {'; '.join(problems)}")
        is_magray = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                                 "('memories', 'model_binding', 'settings')").fetchone()[0] == 3
        if not is_magray or schema.current_version(conn) < 1:
            raise StoreError(f"{path} is a SQLite database but not a magray memory file")
        schema.check_version(conn, path)
        counts = _counts(conn)
        _check_vectors(conn, path, counts["model"])
    for reference, what in ((manifest, "its manifest"), (expected, "the live file")):
        for key in ("memories", "rows", "schema_version", "model"):
            if reference is not None and key in reference and reference[key] != counts[key]:
                raise StoreError(f"{path} does not match {what}: {key} is {counts[key]!r}, "
                                 f"expected {reference[key]!r}")
    return BackupReport(
        path=str(path), created_at=(manifest or {}).get("created_at", path.stat().st_mtime),
        size_bytes=path.stat().st_size, sha256=digest, page_size=page_size, page_count=page_count,
        kind=(manifest or {}).get("kind", "backup"), source=(manifest or {}).get("source"),
        manifest=manifest is not None, **counts)


def _check_header(path: Path) -> tuple[int, int]:
    """Page size and count from the 100-byte header; refuse foreign and truncated files here,
    before SQLite reads a page."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path} is not a magray backup (not a SQLite database)")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change_counter, page_count, valid_for = (struct.unpack(">I", header[o:o + 4])[0] for o in (24, 28, 92))
    # The in-header page count is trustworthy when it was written by the same change as the
    # counter (SQLite >= 3.7.0); a WAL-mode copy may be longer (it was checkpointed) but never shorter.
    if page_size < 512 or size % page_size:
        raise StoreError(f"{path} is truncated or damaged: {size:,} bytes is not a whole number of "
                         f"{page_size}-byte pages")
    if change_counter == valid_for and size < page_count * page_size:
        raise StoreError(f"{path} is truncated: {size:,} bytes of {page_count * page_size:,}")
    return page_size, size // page_size


def _open_readonly(path: Path) -> apsw.Connection:
    """A read-only connection with sqlite-vec loaded. A WAL-mode file without a -wal beside it (a
    copy of a closed live file) is opened as immutable, so that checking it leaves no -wal/-shm."""
    with open(path, "rb") as f:
        f.seek(18)
        wal_mode = f.read(2) == b"\x02\x02"
    uri = f"file:{_uri_path(path)}?mode=ro"
    if wal_mode and not Path(str(path) + "-wal").exists():
        uri += "&immutable=1"
    with translate_errors(path):
        conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        conn.setbusytimeout(BUSY_TIMEOUT_MS)
        load_sqlite_vec(conn)
    return conn


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()))


def _check_vectors(conn: apsw.Connection, path: Path, model: dict[str, Any] | None) -> None:
    """The binding's vector table exists and holds one vector per chunk of that generation."""
    if model is None:
        return
    generation = model["generation"]
    table = vectors.table(generation)
    if not conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]:
        raise StoreError(f"{path} is bound to {model['model_name']} but has no vector table {table}")
    chunks = conn.execute("SELECT count(*) FROM chunks WHERE generation = ?", (generation,)).fetchone()[0]
    stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    if chunks != stored:
        # Vectors derive from the memories (`magray doctor --repair` rebuilds them): a mismatch
        # must not stop a backup or a restore of the memories themselves.
        log.warning("%s has %d chunks but %d vectors for %s; run `magray doctor --repair` after "
                    "restoring it", path, chunks, stored, model["model_name"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# -- restoring ----------------------------------------------------------------------------------------

def restore(mem: Memory, path: str | os.PathLike, *, step_pages: int = STEP_PAGES,
            progress: Progress | None = None) -> RestoreReport:
    """Replace the live file's content with a backup's. The backup is verified first (a damaged,
    truncated, foreign or too-new file is refused and the live file is not touched) and an older
    schema is migrated on a temporary copy. Then the live file's write lock is taken, the current
    content is saved as a verified safety copy while no other process can commit, and the pages
    are copied into the live file by the backup API in that same write transaction: every write
    acknowledged before the restore is in the safety copy, and other processes, and a crash at
    any point, see the old content or the new, never a mix."""
    path = Path(path).expanduser()
    report = verify(path)
    if path.resolve() == Path(mem.path).resolve():
        raise InvalidInput(f"{path} is the live memory file itself")
    conn = mem.connection
    migrated_from = report.schema_version if report.schema_version < schema.latest_version() else None
    with _restore_source(mem, path, migrated_from is not None) as source, translate_errors(mem.path):
        with read_snapshot(source):
            # What is copied is exactly this snapshot of the source: the check below compares it.
            restored = _counts(source)
            if restored["memories"] != report.memories:
                raise StoreError(f"{path} holds {restored['memories']} memories once opened for the "
                                 f"restore, its check said {report.memories}; nothing was changed")
            before = _data_version(conn)
            safety = _copy_with_safety(mem, source, step_pages, progress)
        _check_restored(mem, restored, before, safety)
    return RestoreReport(str(path), restored["memories"], restored["schema_version"], migrated_from, safety)


def _data_version(conn: apsw.Connection) -> int:
    # Changes only when another connection commits: equal twice = nobody else wrote in between.
    return conn.execute("PRAGMA data_version").fetchone()[0]


def _copy_with_safety(mem: Memory, source: apsw.Connection, step_pages: int,
                      progress: Progress | None) -> str | None:
    """Copy `source` into the live file. The first step takes the live file's write lock (held
    to the end); the safety copy of the current content is made under it, through a connection
    of its own, so that no write can land between the safety copy and the restore."""
    conn = mem.connection
    for attempt in range(WRITE_RETRIES + 1):
        try:
            with conn.backup("main", source, "main") as job:
                job.step(0)  # copies nothing: locks the destination (and fails here if it cannot)
                safety = _safety_copy(mem)
                try:
                    while not job.done:
                        job.step(step_pages)
                        if progress:
                            progress(job.pagecount - job.remaining, job.pagecount)
                except BaseException as exc:
                    if safety is not None:
                        log.warning("the restore failed (%s); the safety copy %s stays", exc, safety)
                    raise
            return safety
        except apsw.BusyError:
            if attempt == WRITE_RETRIES:
                raise Busy(f"{mem.path} stayed locked by another process; try again") from None
            time.sleep(random.uniform(0.01, 0.05) * (2**attempt))
        except apsw.ReadOnlyError:
            raise StoreError("cannot copy between files with different page sizes while one is in "
                             "WAL mode (run `PRAGMA journal_mode=DELETE` on the backup first)") from None
    raise AssertionError("unreachable")


def _safety_copy(mem: Memory) -> str | None:
    """A verified pre-restore copy of the live file (None when it holds no memory at all), read
    through a second connection while the restore holds the write lock."""
    other = open_connection(mem.path, profile=mem.profile, create=False)
    try:
        try:
            empty = not other.execute("SELECT count(*) FROM memories").fetchone()[0]
        except apsw.Error:
            empty = False  # a damaged file: its pages are kept as they are
        if empty:
            return None
        return _write_copy(other, mem.path, None, kind="pre-restore", now=mem.now()).path
    finally:
        other.close()


def _check_restored(mem: Memory, restored: dict[str, Any], before: int, safety: str | None) -> None:
    """Read the live file back. Only when no other process wrote since the restore is its
    snapshot the one the restore wrote, and then it must hold exactly what was copied."""
    conn = mem.connection
    with read_snapshot(conn):
        live = _counts(conn)
        others_wrote = _data_version(conn) != before
    if others_wrote:
        return
    for key in ("memories", "rows", "schema_version"):
        if live[key] != restored[key]:
            kept = f"; the content before the restore is in {safety}" if safety else ""
            raise StoreError(f"the restored file holds {key} {live[key]!r}, the backup {restored[key]!r}{kept}")


@contextmanager
def _restore_source(mem: Memory, path: Path, migrate: bool) -> Iterator[apsw.Connection]:
    """A connection to copy from: the backup itself (read-only), or for an older schema a
    temporary copy of it brought up to date, so the live file never shows an old schema."""
    if not migrate:
        with closing(_open_readonly(path)) as conn:
            yield conn
        return
    folder = default_dir(mem.path)
    _private_dir(folder)
    tmp = files.new_partial(folder / "restore.db")
    try:
        with closing(_open_readonly(path)) as src, closing(apsw.Connection(str(tmp))) as dst:
            _copy(dst, src, -1, None)
        conn = open_connection(tmp, profile=mem.profile, create=False)
        try:
            with translate_errors(path):
                schema.migrate(conn, path)
            yield conn
        finally:
            conn.close()
    finally:
        files.remove_partial(tmp)

