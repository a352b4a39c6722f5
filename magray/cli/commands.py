"""One handler per command: turn parsed arguments into one library call, return what to render."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..memory import Memory
from ..timeutil import parse_duration, parse_when
from ..types import Filters


def parse_meta(pairs: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"bad --meta {pair!r}: use KEY=VALUE")
        try:
            meta[key.strip()] = json.loads(value)
        except (ValueError, RecursionError):
            meta[key.strip()] = value
    return meta


def _ttl(text: str | None) -> float | None:
    if text is None:
        return None
    return 0.0 if text.strip() == "0" else parse_duration(text)


def filters_from(args: argparse.Namespace, mem: Memory) -> Filters:
    now = mem.now()
    return Filters(
        layers=tuple(args.layers or ()), tags=tuple(args.tags or ()), project=args.project,
        session=args.session,
        since=parse_when(args.since, now, mem.timezone) if args.since else None,
        until=parse_when(args.until, now, mem.timezone, end=True) if args.until else None,
        include_expired=args.include_expired,
    )


def _read_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise InvalidInput("no content: give the text as an argument or pipe it on stdin")
    return sys.stdin.read().removesuffix("\n")


def cmd_init(mem: Memory, args: argparse.Namespace) -> Any:
    if mem.model_requested:
        mem.load_model()
    return mem.status()


def cmd_add(mem: Memory, args: argparse.Namespace) -> Any:
    if args.jsonl:
        return _add_jsonl(mem, args.jsonl, args)
    text = args.text if args.text is not None else _read_stdin()
    return mem.add(text, layer=args.layer, tags=args.tags, project=args.project, session=args.session,
                   title=args.title, kind=args.kind, source=args.source, metadata=parse_meta(args.meta),
                   ttl=_ttl(args.ttl), importance=args.importance, dedup=False if args.no_dedup else None)


def _add_jsonl(mem: Memory, source: str, args: argparse.Namespace) -> Any:
    stream = _stdin_lines() if source == "-" else _open_lines(source)
    with stream:
        return mem.add_jsonl(stream, name=source, progress=progress_bar("adding", None),
                             dedup=False if args.no_dedup else None)


def _open_lines(path: str):
    """A JSONL file as bytes: the reader decodes each line, and names the line that is not UTF-8."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


def _stdin_lines():
    return getattr(sys.stdin, "buffer", sys.stdin)


def cmd_get(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.get(args.id, include_expired=args.include_expired)


def cmd_list(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.list(filters_from(args, mem), limit=args.limit, offset=args.offset)


def cmd_search(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.search(args.query, k=args.k, mode=args.mode, filters=filters_from(args, mem),
                      min_score=0.0 if args.all else args.min_score, time_phrases=not args.literal)


def cmd_update(mem: Memory, args: argparse.Namespace) -> Any:
    metadata = None
    if args.meta:
        metadata = mem.get(args.id, touch=False, include_expired=True).metadata | parse_meta(args.meta)
    return mem.update(args.id, content=args.text, title=args.title, kind=args.kind, source=args.source,
                      metadata=metadata, importance=args.importance, ttl=_ttl(args.ttl))


def cmd_rm(mem: Memory, args: argparse.Namespace) -> Any:
    mem.delete(args.id, hard=args.hard)
    return {"id": args.id, "deleted": "purged" if args.hard else "soft"}


def cmd_tag(mem: Memory, args: argparse.Namespace) -> Any:
    add, remove = list(args.add), list(args.remove)
    for change in args.changes:
        if change[:1] == "+":
            add.append(change[1:])
        elif change[:1] == "-":
            remove.append(change[1:])
        else:
            raise InvalidInput(f"bad tag change {change!r}: write +TAG to add or -TAG to remove")
    if not add and not remove:
        raise InvalidInput("no tag changes: write +TAG to add or -TAG to remove")
    return mem.tag(args.id, add=add, remove=remove)


def cmd_promote(mem: Memory, args: argparse.Namespace) -> Any:
    if args.auto:
        if args.id is not None:
            raise InvalidInput("--auto applies the rules to every memory: give no id")
        return mem.promote_auto(dry_run=args.dry_run)
    if args.id is None or args.to is None:
        raise InvalidInput("give a memory id and --to LAYER, or --auto")
    return mem.promote(args.id, args.to)


def cmd_touch(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.touch(args.id, session=args.session)


def cmd_clean(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.clean(dry_run=args.dry_run)


def cmd_dedup(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.duplicates()


def cmd_unmerge(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.unmerge(args.id)


class RawText(str):
    """Output that is already formatted (printed as is, even under --json)."""


def cmd_stats(mem: Memory, args: argparse.Namespace) -> Any:
    if args.days < 1:
        raise InvalidInput("--days must be at least 1")
    if args.format == "prometheus":
        return RawText(mem.metrics())
    return mem.stats(days=args.days, space=args.space)


def cmd_optimize(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.optimize(vacuum=args.vacuum)


def cmd_sessions(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.scopes("sessions")


def cmd_projects(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.scopes("projects")


def cmd_forget(mem: Memory, args: argparse.Namespace) -> Any:
    scope = f"session {args.session!r}" if args.session is not None else f"project {args.project!r}"
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise InvalidInput(f"forgetting {scope} cannot be undone: add --yes to confirm")
        sys.stderr.write(f"Remove every memory of {scope}? [y/N] ")
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise InvalidInput("not confirmed; nothing was removed")
    return {"forgotten": mem.forget_scope(session=args.session, project=args.project)}


def cmd_config(mem: Memory | None, args: argparse.Namespace) -> Any:
    from ..config import config_path, load_rules, set_rule

    if args.action == "set":
        if args.key is None or args.value is None:
            raise InvalidInput("usage: magray config set SECTION.NAME VALUE")
        rules = set_rule(args.key, args.value)
    else:
        rules = load_rules()
    return {"path": str(config_path()), "rules": rules}


def cmd_status(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.status()


def cmd_model(mem: Memory, args: argparse.Namespace) -> Any:
    if args.model_command == "add":
        return vars(mem.add_model(args.source, name=args.name, sha256=args.sha256,
                                  progress=byte_progress_bar(), query_prefix=args.query_prefix,
                                  document_prefix=args.document_prefix))
    if args.model_command == "use":
        return mem.use_model(args.name).to_dict()
    return mem.models()


def cmd_reindex(mem: Memory, args: argparse.Namespace) -> Any:
    if not args.model:
        raise InvalidInput("name the model to re-embed with: magray reindex --model NAME")
    return mem.reindex(args.model, progress=progress_bar("re-embedding", None))


def cmd_serve(mem: Memory, args: argparse.Namespace) -> Any:
    """Serve MCP on stdin/stdout until the client hangs up; returns nothing to render."""
    from ..server.mcp_server import run_stdio

    if args.checkpoint_every < 1:
        raise InvalidInput("--checkpoint-every must be at least 1")
    if args.idle_checkpoint < 0:
        raise InvalidInput("--idle-checkpoint cannot be negative")
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise InvalidInput("--metrics-port must be from 0 to 65535")
        from ..server import metrics_http

        try:
            metrics_http.start(mem.path, args.metrics_port)
        except OSError as exc:
            raise InvalidInput(f"cannot serve metrics on port {args.metrics_port}: {exc.strerror}") from None
    if args.http is not None:
        return _serve_http(mem, args)
    if args.token_file:
        raise InvalidInput("--token-file goes with --http")
    run_stdio(mem, checkpoint_every=args.checkpoint_every, idle_checkpoint_s=args.idle_checkpoint)
    return None


def _serve_http(mem: Memory, args: argparse.Namespace) -> Any:
    """Serve MCP over HTTP and the web page until interrupted. stdout gets the address (and a newly
    generated token, this once); logs go to stderr."""
    from ..server import http

    host, port = http.parse_listen(args.http)
    token, generated = http.resolve_token(os.environ.get("MAGRAY_TOKEN"),
                                          Path(args.token_file) if args.token_file else None)

    def ready(url: str) -> None:
        if generated:
            print(f"token: {token} (saved in {args.token_file}; it is not shown again)", flush=True)
        print(f"serving {url} (MCP: {url}mcp)", flush=True)

    http.run_http(mem, host, port, token=token, checkpoint_every=args.checkpoint_every,
                  idle_checkpoint_s=args.idle_checkpoint, on_ready=ready)
    return None


def cmd_doctor(mem: Memory, args: argparse.Namespace) -> Any:
    return mem.doctor(repair=args.repair, progress=progress_bar("re-embedding", None))


BACKUP_ACTIONS = ("verify", "list", "prune", "policy")


def cmd_backup(mem: Memory, args: argparse.Namespace) -> Any:
    action = args.action_or_dest if args.action_or_dest in BACKUP_ACTIONS else None
    if action != "verify" and args.file:
        raise InvalidInput(f"unexpected argument {args.file!r}")
    if action == "verify":
        if not args.file:
            raise InvalidInput("name the backup to check: magray backup verify FILE")
        return mem.verify_backup(args.file).to_dict()
    if action == "list":
        return mem.list_backups(args.dir)
    policy = {"keep_last": args.keep, "keep_daily": args.keep_daily, "keep_weekly": args.keep_weekly}
    if args.every is not None and action != "policy":
        raise InvalidInput("--every goes with `magray backup policy`")
    if action == "policy":
        every = None if args.every is None else (0.0 if args.every.strip() in ("0", "off") else parse_duration(args.every))
        return mem.backup_policy(**policy, every=every)
    if action == "prune":
        return mem.prune_backups(args.dir, **policy, dry_run=args.dry_run)
    report = mem.backup(args.action_or_dest, force=args.force, progress=progress_bar("backing up", None, unit="page")).to_dict()
    if args.rotate:
        report["rotation"] = mem.prune_backups(Path(report["path"]).parent)
    return report


def cmd_restore(mem: Memory | None, args: argparse.Namespace) -> Any:
    if args.from_replica is not None:
        if args.file:
            raise InvalidInput("give a backup FILE or --from-replica, not both")
        at = parse_when(args.at, time.time(), args.tz) if args.at else None
        if mem is None:  # a named replica into a new file: the memory file is not opened at all
            return Memory.restore_replica_copy(args.from_replica, args.to, at=at)
        return mem.restore_from_replica(args.from_replica or None, at=at, to=args.to,
                                        progress=progress_bar("restoring", None, unit="page"))
    if args.at or args.to:
        raise InvalidInput("--at and --to go with --from-replica")
    if not args.file:
        raise InvalidInput("name the backup to restore, or use --from-replica")
    return mem.restore(args.file, progress=progress_bar("restoring", None, unit="page")).to_dict()


def cmd_replica(mem: Memory, args: argparse.Namespace) -> Any:
    if args.action == "set":
        if not args.url:
            raise InvalidInput("name the replica: magray replica set URL (a folder, s3://, sftp://...)")
        return mem.set_replica(args.url)
    if args.url and args.action != "status":
        raise InvalidInput(f"unexpected argument {args.url!r}")
    if args.action == "unset":
        return mem.set_replica(None)
    if args.action == "status":
        return mem.replica_status(args.url).to_dict()
    return mem.replica()


def _stop_event() -> threading.Event:
    """Set by SIGTERM or SIGINT, so that a long-running command stops its child cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_replicate(mem: Memory, args: argparse.Namespace) -> Any:
    if args.print_unit:
        return RawText(mem.replication_unit([sys.executable, "-m", "magray"], args.sync_interval))
    stop = _stop_event()
    sys.stderr.write(f"magray: replicating {mem.path} (stop with Ctrl-C or SIGTERM)\n")
    code = mem.replicate(stop, sync_interval=args.sync_interval, log_to=sys.stderr)
    return {"stopped": True, "litestream_exit_code": code}


def cmd_follow(mem: None, args: argparse.Namespace) -> Any:
    stop = _stop_event()

    def ready(info: dict[str, Any]) -> None:
        how = "resuming" if info["resumed"] else "restored; following"
        sys.stderr.write(f"magray: {info['path']}: {how} {args.url} (read-only; stop with Ctrl-C)\n")
        sys.stderr.flush()

    code = Memory.follow(args.url, args.to, stop, interval=args.interval, log_to=sys.stderr, on_ready=ready)
    return {"stopped": True, "litestream_exit_code": code}


def cmd_export(mem: Memory, args: argparse.Namespace) -> Any:
    if args.json and args.format == "jsonl" and args.output in (None, "-"):
        raise InvalidInput("--json prints its envelope on stdout: give the export a file with -o PATH")
    return mem.export(args.format, args.output, with_vectors=args.vectors, per=args.per, stdout=sys.stdout,
                      force=args.force, progress=progress_bar("exporting", None))


def cmd_import(mem: Memory, args: argparse.Namespace) -> Any:
    if args.source:
        return mem.import_from(args.source, args.file, layer=args.layer, project=args.project,
                               collection=args.collection, split=args.split, dry_run=args.dry_run,
                               progress=progress_bar("importing", None))
    stream = _stdin_lines() if args.file == "-" else _open_lines(args.file)
    with stream:
        return mem.import_jsonl(stream, name=args.file, progress=progress_bar("importing", None))


HANDLERS: dict[str, Callable[[Memory, argparse.Namespace], Any]] = {
    "init": cmd_init, "add": cmd_add, "get": cmd_get, "list": cmd_list, "search": cmd_search,
    "update": cmd_update, "rm": cmd_rm, "tag": cmd_tag, "promote": cmd_promote,
    "status": cmd_status, "model": cmd_model, "reindex": cmd_reindex, "touch": cmd_touch,
    "clean": cmd_clean, "dedup": cmd_dedup, "unmerge": cmd_unmerge, "stats": cmd_stats,
    "optimize": cmd_optimize, "sessions": cmd_sessions, "projects": cmd_projects,
    "forget": cmd_forget, "config": cmd_config, "serve": cmd_serve, "doctor": cmd_doctor,
    "backup": cmd_backup, "restore": cmd_restore, "export": cmd_export, "import": cmd_import,
    "replica": cmd_replica, "replicate": cmd_replicate, "follow": cmd_follow,
}
# Commands that do not open the memory file at all.
WITHOUT_FILE = frozenset({"config", "follow"})


def without_file(args: argparse.Namespace) -> bool:
    """Whether this command runs without opening the memory file."""
    if args.command == "restore":
        return bool(getattr(args, "from_replica", None) and getattr(args, "to", None))
    return args.command in WITHOUT_FILE


# Commands that may create the memory file; the others refuse a missing file.
CREATES_FILE = frozenset({"init", "add", "model", "serve", "restore", "import"})


_bars_enabled = True


def set_progress(enabled: bool) -> None:
    global _bars_enabled
    _bars_enabled = enabled


def progress_bar(label: str, total: int | None, *, unit: str = "memory") -> Callable[[int, int], None] | None:
    """A tqdm bar on a terminal; nothing under --json or when stderr is not a terminal."""
    if not _bars_enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit=unit, leave=False)

    def update(done: int, total_now: int) -> None:
        bar.total = total_now
        bar.n = done
        bar.refresh()
        if done >= total_now:
            bar.close()

    return update


def byte_progress_bar() -> Callable[[int, int | None], None] | None:
    if not _bars_enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="downloading", leave=False)

    def update(done: int, total: int | None) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return update
