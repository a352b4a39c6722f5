"""Entry point: parse, open the file, call one handler, render, map errors to exit codes."""

from __future__ import annotations

import sys

from .. import errors
from . import render

# Named exit codes; one place maps each error class to one.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2          # bad arguments or bad input
EXIT_NOT_FOUND = 3
EXIT_MODEL = 4          # model missing, corrupt, mismatched
EXIT_STORE = 5          # the file cannot be used (not SQLite, read-only, disk full...)
EXIT_BUSY = 6           # locked by another process past the retry budget
EXIT_SCHEMA_TOO_NEW = 7
EXIT_UNHEALTHY = 8      # `doctor` found problems it did not repair

EXIT_CODES: list[tuple[type[errors.MagrayError], int]] = [
    (errors.SchemaTooNew, EXIT_SCHEMA_TOO_NEW),
    (errors.Busy, EXIT_BUSY),
    (errors.InvalidInput, EXIT_USAGE),
    (errors.NotFound, EXIT_NOT_FOUND),
    (errors.ModelError, EXIT_MODEL),
    (errors.StoreError, EXIT_STORE),
    (errors.MagrayError, EXIT_ERROR),
]


def exit_code_for(exc: errors.MagrayError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(exc, cls))


def main(argv: list[str] | None = None) -> int:
    from .parser import build_parser, parse_args

    args = parse_args(build_parser(), argv)
    command = args.command
    try:
        _configure_logging(args)
        from ..memory import Memory
        from . import commands

        commands.set_progress(not args.json)
        handler = commands.HANDLERS[command]
        if commands.without_file(args):
            result = handler(None, args)
            _render(command, result, args)
        else:
            with Memory.open(args.db, profile=args.profile, model=args.model, device=args.device,
                             create=command in commands.CREATES_FILE, timezone=args.tz) as mem:
                result = handler(mem, args)
                _render(command, result, args)
        return EXIT_UNHEALTHY if getattr(result, "healthy", True) is False else EXIT_OK
    except errors.MagrayError as exc:
        return _fail(command, type(exc).__name__, str(exc), exit_code_for(exc), args.json)
    except KeyboardInterrupt:
        return _fail(command, "Interrupted", "interrupted", 130, args.json)
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:
        if type(exc).__module__ != "apsw":
            raise
        # A SQLite failure the library did not foresee: still one line and a named exit code.
        return _fail(command, "StoreError", f"the memory file could not be used: {exc}", EXIT_STORE, args.json)


def _render(command: str, result, args) -> None:
    from . import commands

    if result is None:  # `serve`: stdout was the MCP channel; nothing more may go there
        return
    if args.json and not isinstance(result, commands.RawText):
        render.emit(render.envelope_ok(command, result))
        return
    output = render.text(command, result, args)
    if output:  # e.g. `export` to stdout already wrote its data
        render.emit(render.printable(output))


def _configure_logging(args) -> None:
    """The library logs through `logging`; the CLI decides where and how much."""
    import logging

    # A server has no other way to tell what it does: it logs at INFO unless told otherwise.
    base = 1 if args.command == "serve" else 0
    level = logging.ERROR if args.quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(base + args.verbose, 2)]
    handler = logging.StreamHandler(_log_stream(args.log_file, args.db) if args.log_file else sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("magray")
    root.setLevel(level)
    root.addHandler(handler)


def _log_stream(path: str, db: str | None):
    """The log file, appended to, created private (0600: a log names files and errors), and never
    the memory file or one of SQLite's files beside it."""
    import os
    from pathlib import Path

    from ..config import default_db_path

    target = Path(path).expanduser().resolve()
    live = Path(db if db is not None else default_db_path()).expanduser().resolve()
    if target in {live.with_name(live.name + s) for s in ("", "-wal", "-shm", "-journal")}:
        raise errors.InvalidInput(f"--log-file {path} is the memory file or one of its SQLite files")
    try:
        fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    except OSError as exc:
        raise errors.InvalidInput(f"cannot write the log file {path}: {exc.strerror}") from None
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def _fail(command: str, kind: str, message: str, code: int, as_json: bool) -> int:
    message = " ".join(message.split())
    if as_json:
        render.emit(render.envelope_error(command, kind, message, code))
    render.emit(f"magray: error: {render.printable(message)}", sys.stderr)
    return code


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
