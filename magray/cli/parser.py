"""`build_parser()`: the whole command line, built in one pure function (also used for the man page)."""

from __future__ import annotations

import argparse
import sys

from ..config import LAYERS, PROFILES

DESCRIPTION = "magray: a local-first memory for personal AI agents, in one SQLite file."
EPILOG = """examples:
  magray add "The user prefers dark mode" --layer insights --tag ui
  magray search "which theme does the user like?"
  magray list --layer interact --since 24h
  magray status --json

The memory file is $MAGRAY_DB, else $XDG_DATA_HOME/magray/memory.db (~/.local/share/magray/memory.db).
The embedding model is $MAGRAY_MODEL (a GGUF path or a registered name) or the one the file is bound to.
"""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), exiting 2 like every usage error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"magray: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command. On subcommands the defaults are suppressed so
    that an option given before the command is not reset by the subcommand's parser."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=default(None),
                        help="the memory file (default: $MAGRAY_DB or ~/.local/share/magray/memory.db)")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="print one JSON envelope on stdout: {ok, command, data | error}")
    common.add_argument("--profile", choices=PROFILES, default=default(None),
                        help="durability: safe (default; fsync every write), balanced, fast")
    common.add_argument("--model", metavar="NAME_OR_PATH", default=default(None),
                        help="embedding model (default: $MAGRAY_MODEL or the file's bound model)")
    common.add_argument("--device", choices=("auto", "cpu", "gpu"), default=default("auto"),
                        help="where llama.cpp runs the model (default: auto, GPU when the build has it)")
    common.add_argument("--tz", metavar="ZONE", default=default(None),
                        help="time zone that time phrases are read in, e.g. Europe/Amsterdam "
                             "(default: $MAGRAY_TZ or the system's)")
    common.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="log more (-v info, -vv debug) on stderr")
    common.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="log errors only")
    common.add_argument("--log-file", metavar="PATH", default=default(None),
                        help="write the log to this file instead of stderr")
    return common


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", action="append", choices=LAYERS, dest="layers", metavar="LAYER",
                   help=f"only this layer ({', '.join(LAYERS)}); repeatable")
    p.add_argument("--tag", action="append", dest="tags", metavar="TAG", help="only memories with this tag; repeatable (all must match)")
    p.add_argument("--project", help="only this project")
    p.add_argument("--session", help="only this session")
    p.add_argument("--since", metavar="WHEN", help="created at or after: ISO date/time, a span ago (24h, 7d), "
                   "or a phrase ('last week', 'in September': from its start)")
    p.add_argument("--until", metavar="WHEN", help="created before: ISO date/time, a span ago, or a phrase "
                   "('yesterday': up to its end)")
    p.add_argument("--include-expired", action="store_true", help="also show memories past their expiry")


def _sub(subs, name: str, help_text: str, examples: str, common) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help_text, description=help_text, parents=[common],
                           epilog="examples:\n" + examples,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; `tag ID -name` removals look like options to argparse, so they are collected
    here as changes of the tag command (and refused for every other command)."""
    args, extra = parser.parse_known_args(argv)
    if args.command == "tag":
        removals = [e for e in extra if e.startswith("-") and not e.startswith("--") and len(e) > 1]
        extra = [e for e in extra if e not in removals]
        args.changes = list(args.changes) + removals
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="magray", description=DESCRIPTION, epilog=EPILOG, parents=[_common(False)],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="%(prog)s 0.1.0")
    common = _common(True)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    _sub(subs, "init", "create the memory file (and bind a model if one is given)",
         "  magray init\n  magray --db notes.db init --model ./all-MiniLM-L6-v2-q8_0.gguf\n", common)

    p = _sub(subs, "add", "store a memory (text argument, stdin, or --jsonl FILE)",
             '  magray add "Deploys go out on Fridays" --layer insights --tag ops --project infra\n'
             '  echo "note from a pipe" | magray add\n  magray add --jsonl memories.jsonl\n', common)
    p.add_argument("text", nargs="?", help="the content; read from stdin when absent")
    p.add_argument("--jsonl", metavar="FILE", help="add one memory per JSON line ('-' for stdin)")
    p.add_argument("--layer", choices=LAYERS, default="interact", help="default: interact")
    p.add_argument("--tag", action="append", dest="tags", default=[], metavar="TAG", help="repeatable")
    p.add_argument("--project")
    p.add_argument("--session")
    p.add_argument("--title")
    p.add_argument("--kind")
    p.add_argument("--source")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata; VALUE is parsed as JSON when it is valid JSON; repeatable")
    p.add_argument("--ttl", metavar="SPAN", help="expire after this span (30m, 24h, 90d; 0 = never)")
    p.add_argument("--importance", type=float, metavar="0..1")
    p.add_argument("--no-dedup", action="store_true", help="store even if a near-duplicate exists")

    p = _sub(subs, "get", "show one memory (counts as a use)", "  magray get 42\n  magray get 42 --json\n", common)
    p.add_argument("id", type=int)
    p.add_argument("--include-expired", action="store_true")

    p = _sub(subs, "list", "list memories, newest first",
             "  magray list --layer insights --tag ops\n  magray list --project infra --since 7d --limit 20\n", common)
    _filters(p)
    p.add_argument("--limit", type=int, default=50, help="default: 50")
    p.add_argument("--offset", type=int, default=0)

    p = _sub(subs, "search", "find memories by meaning and words (hybrid by default)",
             '  magray search "what theme does the user like?"\n'
             '  magray search "deploy day" --mode text --project infra --explain\n'
             '  magray search "what did the dentist say last month?"\n', common)
    p.add_argument("query")
    _filters(p)
    p.add_argument("-k", "--limit", type=int, default=10, dest="k", help="results (default: 10)")
    p.add_argument("--mode", choices=("hybrid", "vector", "text"), default="hybrid")
    p.add_argument("--explain", action="store_true", help="show each result's component scores and the time window")
    p.add_argument("--all", action="store_true", help="no relevance floor: list every match, however weak")
    p.add_argument("--min-score", type=float, metavar="X", help="relevance floor (default: the calibrated one)")
    p.add_argument("--literal", action="store_true",
                   help="search time phrases as words instead of turning them into a time window")

    p = _sub(subs, "update", "change a memory's content or fields",
             '  magray update 42 "Deploys go out on Thursdays now"\n  magray update 42 --importance 0.9 --meta owner=ana\n', common)
    p.add_argument("id", type=int)
    p.add_argument("text", nargs="?", help="new content")
    p.add_argument("--title")
    p.add_argument("--kind")
    p.add_argument("--source")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="merged into the metadata")
    p.add_argument("--ttl", metavar="SPAN", help="expire this long from now (0 = never)")
    p.add_argument("--importance", type=float, metavar="0..1")

    p = _sub(subs, "rm", "delete a memory (hidden now, purged by clean; --hard purges now)",
             "  magray rm 42\n  magray rm 42 --hard\n", common)
    p.add_argument("id", type=int)
    p.add_argument("--hard", action="store_true", help="remove it with its vectors and index entries now")

    p = _sub(subs, "tag", "add (+name) or remove (-name) tags",
             "  magray tag 42 +urgent -later\n  magray tag 42 --add urgent --remove later\n", common)
    p.add_argument("id", type=int)
    p.add_argument("changes", nargs="*", metavar="+TAG|-TAG")
    p.add_argument("--add", action="append", default=[], metavar="TAG")
    p.add_argument("--remove", action="append", default=[], metavar="TAG")

    p = _sub(subs, "promote", "move a memory to another layer, or apply the promotion rules (--auto)",
             "  magray promote 42 --to assets\n  magray promote --auto --dry-run\n", common)
    p.add_argument("id", type=int, nargs="?")
    p.add_argument("--to", choices=LAYERS)
    p.add_argument("--auto", action="store_true", help="apply the rules of `magray config show`")
    p.add_argument("--dry-run", action="store_true", help="with --auto: list the moves, make none")

    p = _sub(subs, "touch", "reinforce a memory: count one use of it", "  magray touch 42 --session chat-7\n", common)
    p.add_argument("id", type=int)
    p.add_argument("--session", help="the session it was used in (promotion counts distinct sessions)")

    p = _sub(subs, "clean", "purge expired and deleted memories with their vectors and index entries",
             "  magray clean --dry-run\n  magray clean --json\n", common)
    p.add_argument("--dry-run", action="store_true", help="list what would be purged")

    p = _sub(subs, "dedup", "list groups of near-duplicate memories already stored",
             "  magray dedup --dry-run\n", common)
    p.add_argument("--dry-run", action="store_true", help="only list (the default; merging happens on add)")

    p = _sub(subs, "unmerge", "make a merged near-duplicate a memory of its own again", "  magray unmerge 43\n", common)
    p.add_argument("id", type=int)

    p = _sub(subs, "stats", "counters, memories per layer by month, activity per day, space per part of the file",
             "  magray stats\n  magray stats --days 30 --json\n  magray stats --space\n"
             "  magray stats --format prometheus > /var/lib/node_exporter/textfile/magray.prom\n", common)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--space", action="store_true",
                   help="also what each part of the file costs, in bytes and per memory (reads every page: "
                        "about a second per GB)")
    p.add_argument("--format", choices=("text", "prometheus"), default="text",
                   help="prometheus: the text exposition format, for node_exporter's textfile collector")

    p = _sub(subs, "optimize", "convert an older file's float32 vectors to float16, re-balance the vector "
             "index, FTS optimize, ANALYZE, WAL checkpoint (and VACUUM); safe while in use",
             "  magray optimize\n  magray optimize --vacuum\n", common)
    p.add_argument("--vacuum", action="store_true",
                   help="also rewrite the file packed, giving free and half-empty pages back (blocks writers "
                        "meanwhile: ~20 s at 1M memories)")

    _sub(subs, "sessions", "list sessions with their memory counts", "  magray sessions\n", common)
    _sub(subs, "projects", "list projects with their memory counts", "  magray projects\n", common)

    p = _sub(subs, "forget", "remove every memory of a session or a project",
             "  magray forget --session chat-42 --yes\n  magray forget --project old-client --yes\n", common)
    p.add_argument("--session")
    p.add_argument("--project")
    p.add_argument("--yes", action="store_true", help="confirm (required when not asked on a terminal)")

    p = _sub(subs, "config", "show or set the lifecycle rules (TOML in ~/.config/magray/config.toml)",
             "  magray config show\n  magray config set promotion.interact_min_uses 5\n", common)
    p.add_argument("action", choices=("show", "set"))
    p.add_argument("key", nargs="?")
    p.add_argument("value", nargs="?")

    _sub(subs, "status", "the file, its schema, counts per layer, model, cache",
         "  magray status\n  magray status --json\n", common)

    p = _sub(subs, "model", "embedding models: add, list, use",
             "  magray model add ./all-MiniLM-L6-v2-q8_0.gguf --name minilm\n"
             "  magray model add https://example.org/model.gguf --sha256 HEX\n"
             "  magray model list\n  magray model use minilm\n", common)
    msubs = p.add_subparsers(dest="model_command", metavar="ACTION", required=True, parser_class=Parser)
    q = msubs.add_parser("add", help="register a GGUF model from a path, a URL or a known name", parents=[common])
    q.add_argument("source", metavar="PATH_OR_URL")
    q.add_argument("--name")
    q.add_argument("--sha256", help="expected sha256 of the file")
    q.add_argument("--query-prefix", metavar="TEXT",
                   help="text the model expects before a query, e.g. 'query: ' (default: from the GGUF "
                        "metadata or the defaults of well-known models)")
    q.add_argument("--document-prefix", metavar="TEXT", help="text the model expects before a document, "
                   "e.g. 'passage: '")
    msubs.add_parser("list", help="models known to this file", parents=[common])
    q = msubs.add_parser("use", help="bind the file to a model (only while it holds no vectors)", parents=[common])
    q.add_argument("name")

    p = _sub(subs, "doctor", "check the file (integrity, full-text index, vectors); --repair fixes what it can",
             "  magray doctor\n  magray doctor --repair --json\n", common)
    p.add_argument("--repair", action="store_true",
                   help="rebuild the full-text index, drop orphan vectors, re-embed missing ones (content is never changed)")

    _sub(subs, "reindex", "re-embed every memory with the model named by --model, then switch atomically",
         "  magray reindex --model minilm-f16\n", common)

    p = _sub(subs, "serve", "serve the memory file to agents over MCP (stdio, or HTTP with a web page); logs go to stderr",
             "  magray serve\n  magray --db ~/notes.db serve --model ./all-MiniLM-L6-v2-q8_0.gguf\n"
             "  magray serve --metrics-port 9464\n  magray serve --http                # http://127.0.0.1:8765/\n"
             "  magray serve --http 0.0.0.0:8765 --token-file ~/.config/magray/token\n", common)
    p.add_argument("--checkpoint-every", type=int, default=64, metavar="N",
                   help="checkpoint the WAL (PASSIVE) after every N writing tool calls (default: 64)")
    p.add_argument("--idle-checkpoint", type=float, default=30.0, metavar="SECONDS",
                   help="empty the WAL (TRUNCATE) after this long without writing calls; 0 = never (default: 30)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="also serve Prometheus metrics on http://127.0.0.1:PORT/metrics (0: any free port)")
    p.add_argument("--http", nargs="?", const="127.0.0.1:8765", metavar="[HOST:]PORT",
                   help="serve MCP over streamable HTTP at /mcp and the web page at / instead of stdio "
                        "(default 127.0.0.1:8765; any address but loopback needs a token)")
    p.add_argument("--token-file", metavar="PATH",
                   help="with --http: the bearer token clients must send, read from PATH, or generated into "
                        "it (0600) and printed once when PATH does not exist; $MAGRAY_TOKEN also sets one")

    p = _sub(subs, "backup", "back up the memory file while other processes keep writing; verify, list, prune",
             "  magray backup                      # to backups/ beside the memory file, verified\n"
             "  magray backup /mnt/usb/            # a timestamped file in that folder\n"
             "  magray backup --rotate             # then prune by the file's policy\n"
             "  magray backup verify backups/memory-20260501T120000Z.db\n"
             "  magray backup list\n"
             "  magray backup prune --keep-daily 7 --keep-weekly 4 --dry-run\n"
             "  magray backup policy --keep-daily 14 --keep-weekly 8\n"
             "daily at 03:00 with cron (crontab -e):\n"
             "  0 3 * * * MAGRAY_DB=$HOME/.local/share/magray/memory.db magray backup --rotate --json >/dev/null\n",
             common)
    p.add_argument("action_or_dest", nargs="?", metavar="ACTION|DEST",
                   help="verify FILE, list, prune or policy; anything else is where to write the backup "
                        "(a folder, made if needed, or a new file NAME.db; default: backups/ beside the memory file)")
    p.add_argument("file", nargs="?", metavar="FILE", help="the backup to check (with verify)")
    p.add_argument("--rotate", action="store_true", help="after the backup, prune its folder by the stored policy")
    p.add_argument("--dir", metavar="FOLDER", help="backups folder for list and prune (default: backups/ beside the file)")
    p.add_argument("--keep", type=int, metavar="N", help="prune/policy: keep the newest N backups")
    p.add_argument("--keep-daily", type=int, metavar="D", help="prune/policy: keep the newest backup of each of the last D days")
    p.add_argument("--keep-weekly", type=int, metavar="W", help="prune/policy: keep the newest backup of each of the last W weeks")
    p.add_argument("--dry-run", action="store_true", help="prune: only say what would be removed")
    p.add_argument("--force", action="store_true", help="replace DEST if it is an existing file (never the memory file)")
    p.add_argument("--every", metavar="SPAN",
                   help="policy: a running `magray replicate` or `magray serve` takes a verified backup "
                        "whenever the newest is older than this (1d, 12h; 0 = never), then prunes")

    p = _sub(subs, "restore", "replace the memory file's content with a verified backup or a replica's state "
             "(a safety copy is kept)",
             "  magray restore backups/memory-20260501T120000Z.db\n"
             "  magray restore --from-replica                       # the configured replica, newest state\n"
             '  magray restore --from-replica --at "10 minutes ago"\n'
             '  magray restore --from-replica s3://bucket/memory --at "2026-11-28 14:00" --to copy.db\n', common)
    p.add_argument("file", metavar="FILE", nargs="?", help="a backup, or any copy of a memory file")
    p.add_argument("--from-replica", nargs="?", const="", metavar="URL",
                   help="restore from the replica (default: the one set with `magray replica set`)")
    p.add_argument("--at", metavar="TIME", help="with --from-replica: the state at this time "
                   '("10 minutes ago", "2026-11-28 14:00", RFC 3339; default: the newest)')
    p.add_argument("--to", metavar="PATH", help="with --from-replica: write a new file there and touch nothing else")

    p = _sub(subs, "replica", "where the memory file replicates (Litestream): set, show, status",
             "  magray replica set ~/Dropbox/magray-replica      # a folder (another disk, a synced folder)\n"
             "  magray replica set 's3://bucket/memory?endpoint=https://s3.example.org&forcePathStyle=true'\n"
             "  magray replica set sftp://me@backup-host/srv/magray\n"
             "  magray replica show\n  magray replica status --json\n"
             "credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), never the file\n",
             common)
    p.add_argument("action", choices=("set", "show", "status", "unset"))
    p.add_argument("url", nargs="?", metavar="URL", help="set: a folder, file://, s3://, sftp://, gs:// or abs:// URL")

    p = _sub(subs, "replicate", "run Litestream for the memory file in the foreground (restarted if it dies)",
             "  magray replicate\n  magray replicate --print-unit > ~/.config/systemd/user/magray-replicate.service\n",
             common)
    p.add_argument("--sync-interval", default="1s", metavar="DURATION",
                   help="how often changes are shipped to the replica, in Go syntax (500ms, 1s, 10s; default: 1s)")
    p.add_argument("--print-unit", action="store_true", help="print a systemd user unit that keeps it running, and exit")

    p = _sub(subs, "follow", "keep a read-only copy of a replica up to date (on another machine)",
             "  magray follow s3://bucket/memory --to ~/memory-follower.db\n"
             "  MAGRAY_DB=~/memory-follower.db magray search \"deploy day\"\n", common)
    p.add_argument("url", metavar="URL", help="the replica: a folder, file://, s3://, sftp://...")
    p.add_argument("--to", metavar="PATH", required=True, help="the follower file (made if new, resumed otherwise)")
    p.add_argument("--interval", default="1s", metavar="DURATION", help="how often to look for changes (default: 1s)")

    p = _sub(subs, "export", "write every memory to JSONL (optionally with vectors) or Markdown files",
             "  magray export -o memories.jsonl\n  magray export --vectors -o memories.jsonl\n"
             "  magray export --format markdown --per layer -o notes/\n", common)
    p.add_argument("--format", choices=("jsonl", "markdown"), default="jsonl", help="default: jsonl")
    p.add_argument("--vectors", action="store_true", help="jsonl: include each chunk's vector (with the model's sha256)")
    p.add_argument("-o", "--output", metavar="PATH", help="a new file (jsonl; default stdout) or a new folder (markdown)")
    p.add_argument("--per", choices=("memory", "layer"), default="memory",
                   help="markdown: one file per memory (default) or per layer")
    p.add_argument("--force", action="store_true",
                   help="jsonl: replace PATH if it is an existing file (never the memory file)")

    p = _sub(subs, "import", "add memories from a `magray export` JSONL file, or from another tool (--from)",
             "  magray import memories.jsonl\n  magray export | magray --db other.db import -\n"
             "  magray import --from mem0 mem0-export.json --dry-run\n"
             "  magray import --from basic-memory ~/basic-memory --layer assets\n"
             "  magray import --from markdown ~/notes --split heading --project notes\n"
             "  magray import --from llm ~/.config/io.datasette.llm/embeddings.db --collection recipes\n", common)
    p.add_argument("file", metavar="PATH", help="a JSONL export ('-' for stdin), or the other tool's file or "
                   "folder; importing twice adds nothing")
    p.add_argument("--from", dest="source", choices=("mem0", "basic-memory", "markdown", "llm"),
                   help="read another tool's export or files as they are on disk")
    p.add_argument("--layer", choices=LAYERS, default="insights", help="with --from: the layer (default: insights)")
    p.add_argument("--project", help="with --from: the project (default: mem0's user, llm's collection, none)")
    p.add_argument("--collection", help="with --from llm: only this collection")
    p.add_argument("--split", choices=("file", "heading"), default="file",
                   help="with --from markdown: one memory per file (default) or per heading")
    p.add_argument("--dry-run", action="store_true", help="with --from: say what would come in, add nothing")
    return parser
