"""Hostile input, over the library and the CLI: arbitrary unicode (NUL bytes and lone surrogates
included), huge texts, FTS5 syntax, SQL fragments, bad metadata, limits and dates. Each call works or
fails with one line (the CLI: one line on stderr and a named exit code), and a failure changes
nothing stored. Then hostile files: not SQLite, truncated, read-only, a full disk; and the modes of
a new memory file."""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers.reliability import consistency, content_digest, model_path, run_cli, subprocess_env

from magray.cli.main import EXIT_NOT_FOUND, EXIT_STORE, EXIT_USAGE
from magray.errors import InvalidInput, MagrayError
from magray.memory import MAX_CONTENT_CHARS
from magray.records import MAX_LIMIT

HYPOTHESIS = settings(max_examples=30, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=120)  # surrogates and NUL included
FTS_SYNTAX = ['"', "'", "*", "NEAR(", "NEAR/2", ")", "(", "AND", "OR", "NOT", ":", "^", "-", "+",
              "content:", "{title tags_text}:", "a*", "\x00", ";", "--", "' OR 1=1 --", "%", "_", "\\",
              "DROP TABLE memories;", "memories_fts", "rank", "bm25(", "''", '""']
SQL_FRAGMENTS = ["'; DROP TABLE memories; --", "\" OR \"\"=\"", "1; DELETE FROM memories_fts",
                 "Robert'); DROP TABLE memory_tags;--", "x' UNION SELECT sql FROM sqlite_schema --",
                 "/* comment */ SELECT 1", "%' OR '%'='", "char(0)'; --"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One memory file shared by the hypothesis examples of this module (the model loads once)."""
    from magray import Memory

    saved = {k: os.environ.get(k) for k in ("MAGRAY_THREADS", "MAGRAY_MODEL")}
    os.environ["MAGRAY_THREADS"] = "1"
    os.environ["MAGRAY_MODEL"] = str(model_path())
    db = tmp_path_factory.mktemp("hostile") / "hostile.db"
    with Memory.open(db) as mem:
        mem.add("a first memory so that searches have something to rank", tags=["seed"])
        yield mem
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _unchanged_on_error(mem, call):
    """Run `call`; if it fails, the failure must be a one-line MagrayError and the file unchanged."""
    before = content_digest(mem.path)
    try:
        return call(), None
    except MagrayError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        assert content_digest(mem.path) == before
        return None, exc


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


# -- the library -------------------------------------------------------------------------------


@HYPOTHESIS
@given(text=ANY_TEXT)
@example(text="a\x00b")
@example(text="\x00")
@example(text=" \t\n ")
@example(text="bad \udcff surrogate")
@example(text="\u202e\ufeff\u200b zero-width and bidi")
def test_add_any_text(store, text):
    result, error = _unchanged_on_error(store, lambda: store.add(text))
    if error is not None:
        assert isinstance(error, InvalidInput)
        assert not text.strip() or _has_surrogate(text) or "\x00" in text, error
        return
    assert text.strip() and not _has_surrogate(text) and "\x00" not in text
    assert store.get(result.id, touch=False).content == text


@HYPOTHESIS
@given(tags=st.lists(ANY_TEXT, max_size=4), title=st.one_of(st.none(), ANY_TEXT),
       project=st.one_of(st.none(), ANY_TEXT))
@example(tags=["\x00"], title=None, project=None)
@example(tags=["ok"], title="\x00", project="\x00")
def test_add_any_tags_title_project(store, tags, title, project):
    content = f"fields probe {content_digest(store.path)[:16]}"
    result, error = _unchanged_on_error(store, lambda: store.add(content, tags=tags, title=title, project=project))
    if error is not None:
        assert isinstance(error, InvalidInput)
        return
    record = store.get(result.id, touch=False)
    assert record.tags == sorted(set(tags)) and record.title == title and record.project == (project or "")


@HYPOTHESIS
@given(query=st.one_of(ANY_TEXT, st.lists(st.sampled_from(FTS_SYNTAX + SQL_FRAGMENTS), min_size=1,
                                          max_size=6).map(" ".join)),
       mode=st.sampled_from(["text", "text", "hybrid"]))
@example(query='"unbalanced', mode="text")
@example(query="NEAR(a b, -1)", mode="text")
@example(query="* OR *", mode="hybrid")
def test_search_any_query(store, query, mode):
    hits, error = _unchanged_on_error(store, lambda: store.search(query, mode=mode, k=5, touch=False))
    if error is not None:
        assert isinstance(error, InvalidInput) and not query.strip(), error
    else:
        assert isinstance(hits, list)


@pytest.mark.parametrize("fragment", SQL_FRAGMENTS)
def test_sql_fragments_are_stored_as_text(store, fragment):
    result = store.add(f"note {fragment}")
    assert store.get(result.id, touch=False).content == f"note {fragment}"
    assert result.id in [h.memory.id for h in store.search(f"note {fragment}", mode="text", k=50, touch=False)]
    tables = {r[0] for r in store.connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert {"memories", "memory_tags", "memories_fts"} <= tables


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                       max_leaves=8)
HOSTILE_META = st.one_of(
    st.dictionaries(st.text(max_size=10), JSONISH, max_size=4),
    st.dictionaries(st.one_of(st.integers(), st.tuples(st.integers())), st.integers(), min_size=1, max_size=2),
    st.dictionaries(st.text(max_size=5), st.sampled_from([{1, 2}, b"bytes", object(), math.nan, math.inf]),
                    min_size=1, max_size=2),
    st.one_of(st.lists(st.integers(), max_size=2), st.text(max_size=10), st.integers()),
)


@HYPOTHESIS
@given(meta=HOSTILE_META)
def test_add_any_metadata(store, meta):
    import json

    content = f"metadata probe {content_digest(store.path)[:16]}"
    result, error = _unchanged_on_error(store, lambda: store.add(content, metadata=meta))
    if error is not None:
        assert isinstance(error, InvalidInput)
        return
    assert store.get(result.id, touch=False).metadata == json.loads(json.dumps(meta))


@HYPOTHESIS
@given(limit=st.one_of(st.integers(-10**30, 10**30), st.integers(-3, MAX_LIMIT + 3), st.floats(), st.text(max_size=3)),
       offset=st.one_of(st.integers(-10**30, 10**30), st.integers(-3, 3)))
@example(limit=0, offset=0)
@example(limit=MAX_LIMIT, offset=2**63)
def test_list_and_search_any_limit(store, limit, offset):
    valid = isinstance(limit, int) and 1 <= limit <= MAX_LIMIT
    listed, error = _unchanged_on_error(store, lambda: store.list(limit=limit, offset=offset))
    assert (error is None) == valid, error
    hits, error = _unchanged_on_error(store, lambda: store.search("memory", k=limit, mode="text", touch=False))
    assert (error is None) == valid, error


def test_huge_text_is_refused_with_the_limit(store):
    huge = "x" * (10 * 1024 * 1024)
    _, error = _unchanged_on_error(store, lambda: store.add(huge))
    assert isinstance(error, InvalidInput) and f"{MAX_CONTENT_CHARS:,}" in str(error)
    _, error = _unchanged_on_error(store, lambda: store.add_many([{"content": "fine"}, {"content": huge}]))
    assert isinstance(error, InvalidInput)  # validated before anything is written: "fine" is not stored either


# -- the CLI (in process: one parser and handler per call, as `magray` runs them) --------------


def _cli(store, capsys, argv: list[str]) -> tuple[int, str, str]:
    from magray.cli.main import main

    capsys.readouterr()
    try:
        code = main(["--db", str(store.path), *argv])
    except SystemExit as exc:  # argparse: --help, or a usage error already written to stderr
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


DATES = st.one_of(
    st.text(max_size=25),
    st.builds(lambda d, tz: d.isoformat() + tz, st.datetimes(),
              st.sampled_from(["", "Z", "+23:59", "-23:59", "+05:30"])),
    st.builds(lambda n, unit: f"{n}{unit}", st.integers(0, 10**30), st.sampled_from("smhdwy")),
)
CLI_CALLS = st.one_of(
    st.builds(lambda t: ["add", "--", t], st.text(max_size=60)),
    st.builds(lambda m: ["add", "--meta", m, "--", "metadata from the command line"], st.text(max_size=30)),
    st.builds(lambda v: ["add", "--ttl", v, "--", "ttl probe"], st.text(max_size=8)),
    st.builds(lambda v: ["add", "--importance", v, "--", "importance probe"],
              st.one_of(st.floats().map(str), st.text(max_size=5))),
    st.builds(lambda n: ["list", "--limit", n], st.one_of(st.integers(-10**25, 10**25).map(str), st.text(max_size=4))),
    st.builds(lambda d, which: ["list", which, d], DATES, st.sampled_from(["--since", "--until"])),
    st.builds(lambda q, k: ["search", "--mode", "text", "-k", k, "--", q],
              st.one_of(st.text(max_size=30), st.sampled_from(FTS_SYNTAX)), st.integers(-5, MAX_LIMIT + 5).map(str)),
    st.builds(lambda i: ["get", i], st.one_of(st.integers(-10**20, 10**20).map(str), st.text(max_size=5))),
    st.builds(lambda i, t: ["tag", i, t], st.integers(-2, 5).map(str), st.text(max_size=10)),
)


@HYPOTHESIS
@given(argv=CLI_CALLS)
@example(argv=["list", "--since", "0001-01-01T00:00:00+23:59"])
@example(argv=["list", "--until", "9999-12-31T23:59:59-23:59"])
@example(argv=["list", "--since", "99999999999999999999999999d"])
@example(argv=["add", "--meta", "k={not json", "--", "bad json metadata is kept as text"])
@example(argv=["add", "--meta", "=novalue", "--", "x"])
@example(argv=["get", "99999999999999999999999"])
def test_cli_any_arguments(store, capsys, argv):
    before = content_digest(store.path)
    code, out, err = _cli(store, capsys, argv)
    if code == 0:
        return
    assert code in (EXIT_USAGE, EXIT_NOT_FOUND), (argv, code, err)
    assert err.count("\n") == 1 and err.startswith("magray: error: "), (argv, err)
    assert content_digest(store.path) == before


def test_cli_huge_text_on_stdin(store, tmp_path):
    before = content_digest(store.path)
    proc = run_cli(store.path, subprocess_env(tmp_path), "add", input="y" * (10 * 1024 * 1024))
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.count("\n") == 1 and "1,000,000" in proc.stderr, proc.stderr[:300]
    assert content_digest(store.path) == before


def test_cli_bad_jsonl_adds_nothing(store, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"content": "good line"}\n{"content": "bad" \n', encoding="utf-8")
    before = content_digest(store.path)
    proc = run_cli(store.path, subprocess_env(tmp_path), "add", "--jsonl", str(source))
    assert proc.returncode == EXIT_USAGE and proc.stderr.count("\n") == 1 and "line 2" in proc.stderr
    assert content_digest(store.path) == before


# -- files and values from elsewhere: UTF-8, nesting, sizes, numbers, YAML, config --------------


def _nested(depth: int, leaf=None):
    """A value `depth` lists deep (a list counts as one level)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@HYPOTHESIS
@given(lines=st.lists(st.binary(max_size=40), min_size=1, max_size=4), as_import=st.booleans())
@example(lines=[b'{"content": "caf\xe9"}'], as_import=False)
@example(lines=[b'{"content": "ok"}', b"\xff\xfe\x00"], as_import=True)
@example(lines=[b'{"content": "\xed\xa0\x80 surrogate as UTF-8"}'], as_import=False)
def test_any_bytes_as_jsonl(store, lines, as_import):
    """Arbitrary bytes (invalid UTF-8 included) as an `add --jsonl` or `import` file: added, or
    one InvalidInput naming the line, and nothing written."""
    import io

    header = b'{"format": "magray-export", "version": 1}\n' if as_import else b""
    stream = io.BytesIO(header + b"\n".join(lines) + b"\n")
    call = (lambda: store.import_jsonl(stream, name="f")) if as_import else (lambda: store.add_jsonl(stream, name="f"))
    _, error = _unchanged_on_error(store, call)
    assert error is None or isinstance(error, InvalidInput), error


@HYPOTHESIS
@given(depth=st.integers(0, 3000), width=st.integers(0, 3))
@example(depth=32, width=1)
@example(depth=33, width=1)
@example(depth=986, width=1)
def test_metadata_nesting_is_bounded_on_every_way_in(store, depth, width):
    """Nested metadata is stored up to the limit and refused past it, by the API and by a JSONL
    line (even one deeper than Python's own JSON reader goes); what is stored can be read back."""
    import io
    import json

    from magray.records import MAX_METADATA_DEPTH

    meta = {"k": _nested(depth, list(range(width)))}
    levels = depth + 2  # the object, the lists, the innermost list
    text = f"nesting probe {depth} {width} {content_digest(store.path)[:12]}"
    result, error = _unchanged_on_error(store, lambda: store.add(text, metadata=meta))
    assert (error is None) == (levels <= MAX_METADATA_DEPTH), (levels, error)
    if result is not None:
        assert store.get(result.id, touch=False).metadata == meta
        assert store.list(limit=1)  # every listing can still read it
    line = '{"content": "jsonl %s", "metadata": {"k": %s%s%s}}\n' % (text, "[" * depth, json.dumps(list(range(width))),
                                                                   "]" * depth)
    _, error = _unchanged_on_error(store, lambda: store.add_jsonl(io.StringIO(line), name="f"))
    assert (error is None) == (levels <= MAX_METADATA_DEPTH), (levels, error)


@HYPOTHESIS
@given(content_size=st.sampled_from([40, 200, MAX_CONTENT_CHARS + 1, 3 * MAX_CONTENT_CHARS]),
       meta_size=st.sampled_from([0, 99_980, 99_992, 100_001, 300_000]))
def test_sizes_at_the_limits(store, content_size, meta_size):
    """Content and metadata sizes around their limits, through update (which checked neither)
    and add: accepted up to the limit, one InvalidInput past it, and nothing written then."""
    from magray.records import MAX_METADATA_CHARS

    probe = f"size probe {content_digest(store.path)[:12]} "
    record = store.add(probe)
    content = probe + "z" * (content_size - len(probe))
    meta = {"v": "m" * meta_size}
    too_big = content_size > MAX_CONTENT_CHARS or len('{"v": ""}') + meta_size > MAX_METADATA_CHARS
    _, error = _unchanged_on_error(store, lambda: store.update(record.id, content=content, metadata=meta))
    assert (error is None) == (not too_big), (content_size, meta_size, error)
    _, error = _unchanged_on_error(store, lambda: store.add("new " + content, metadata=meta))
    assert (error is None) == (not too_big), (content_size, meta_size, error)


NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([2**63 - 1, 2**63, 2**64, -1, 0]),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=4), st.none())


@HYPOTHESIS
@given(field=st.sampled_from(["access_count", "id", "merged_into", "importance", "created_at", "updated_at",
                              "accessed_at", "expires_at", "uses.uses", "uses.last_at"]),
       value=NUMBERS)
@example(field="access_count", value=2**64)
@example(field="uses.uses", value=2**63)
def test_import_any_number_in_any_field(store, field, value):
    """A number of any size or kind in an exported field: imported, or one InvalidInput before
    anything is written (never an OverflowError or a constraint failing half-way)."""
    import io
    import json

    record = {"content": f"number probe {content_digest(store.path)[:12]}", "layer": "assets"}
    if field.startswith("uses."):
        use = {"session": "s", "uses": 1, "last_at": 1.0} | {field[5:]: value}
        record["uses"] = [use]
    else:
        record[field] = value
    good = {"content": f"good line before {content_digest(store.path)[:12]}", "layer": "assets"}
    text = '{"format": "magray-export", "version": 1}\n' + json.dumps(good) + "\n" + json.dumps(record) + "\n"
    _, error = _unchanged_on_error(store, lambda: store.import_jsonl(io.StringIO(text), name="f"))
    assert error is None or isinstance(error, InvalidInput), error


YAML_PIECES = ["&a", "*a", "[", "]", "{", "}", ":", "- ", "!!python/object:os.system", "!!binary", "? ",
               "&b [*a, *a]", "<<: *a", ".nan", ".inf", "2024-01-01", "99999-01-01", "1e999", "'", '"', "|",
               "\n", "  ", "tags", "title", "created", "x"]


@HYPOTHESIS
@given(front=st.one_of(st.lists(st.sampled_from(YAML_PIECES), max_size=12).map("".join),
                       st.text(max_size=60), st.builds(lambda d: "x: " + "[" * d + "]" * d, st.integers(0, 4000))))
@example(front="x: &a [*a]")
@example(front="a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]")
@example(front="created: 99999-01-01")
@example(front="k: .nan")
def test_any_yaml_front_matter(store, tmp_path_factory, front):
    """A note with any front matter: taken (as metadata, never expanded through aliases) or
    skipped with a reason; the import never fails with anything but one InvalidInput."""
    folder = tmp_path_factory.mktemp("notes")
    (folder / "note.md").write_text(f"---\n{front}\n---\nbody of a hostile note\n", encoding="utf-8",
                                    errors="surrogatepass")
    report, error = _unchanged_on_error(store, lambda: store.import_from("markdown", str(folder), dry_run=True))
    assert error is None or isinstance(error, InvalidInput), error
    if report is not None:
        assert report["found"] == 1 and report["would_add"] + report["already_stored"] + len(report["skipped"]) == 1


@HYPOTHESIS
@given(key=st.sampled_from(["promotion.interact_min_uses", "promotion.insights_min_sessions",
                            "promotion.insights_min_importance", "dedup.layers", "dedup.min_similarity",
                            "cache.max_entries", "maintenance.expire_per_write", "maintenance.optimize_every_adds",
                            "dedup.nope", "nope"]),
       value=st.one_of(st.text(max_size=12), st.integers(-10**30, 10**30).map(str),
                       st.floats().map(str), st.sampled_from(["nan", "inf", "-inf", "1e999", "0", "1", "0.5"])))
def test_config_set_any_value(key, value):
    """Any value for any setting: stored (and the file still reads back as TOML with that value)
    or one InvalidInput with the file unchanged."""
    from magray.config import config_path, load_rules, set_rule

    before = config_path().read_bytes() if config_path().exists() else None
    try:
        rules = set_rule(key, value)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
        assert (config_path().read_bytes() if config_path().exists() else None) == before
        return
    section, name = key.split(".")
    assert load_rules() == rules and load_rules()[section][name] == rules[section][name]


# -- hostile files -----------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path, monkeypatch):
    """A small file with memories, closed (WAL checkpointed into it)."""
    from magray import Memory

    monkeypatch.setenv("MAGRAY_THREADS", "1")  # other processes share the cores
    db = tmp_path / "good.db"
    with Memory.open(db, model=str(model_path())) as mem:
        for i in range(5):
            mem.add(f"durable memory number {i}", tags=["keep"])
    return db


def _one_line_failure(proc, code: int = EXIT_STORE) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("magray: error: "), proc.stderr
    return proc.stderr


def test_not_sqlite(tmp_path):
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    before = db.read_bytes()
    env = subprocess_env(tmp_path)
    for args in (("list",), ("add", "hello"), ("doctor",), ("status",)):
        assert "not a magray memory file" in _one_line_failure(run_cli(db, env, *args))
    assert db.read_bytes() == before


def test_truncated_file(good_file, tmp_path):
    data = good_file.read_bytes()
    good_file.write_bytes(data[: len(data) // 2])
    before = good_file.read_bytes()
    env = subprocess_env(tmp_path)
    for args in (("add", "one more"), ("search", "durable"), ("doctor",)):
        proc = run_cli(good_file, env, *args)
        if args[0] == "doctor" and proc.returncode == 8:  # reported as a finding, not an error
            assert "integrity_check failed" in proc.stdout
        else:
            _one_line_failure(proc)
    assert good_file.read_bytes() == before


@contextmanager
def read_only(path: Path):
    """Make a file or folder read-only, for root too: chmod when not root, else the immutable
    attribute (chattr +i), since file modes do not stop root. Skips where neither works."""
    if os.geteuid() != 0:
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot make a path read-only for root here (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_file(good_file, tmp_path):
    before = content_digest(good_file)
    env = subprocess_env(tmp_path)
    with read_only(good_file):
        message = _one_line_failure(run_cli(good_file, env, "add", "cannot land"))
        assert any(w in message for w in ("read-only", "cannot be opened", "permission")), message
        proc = run_cli(good_file, env, "list")
        if proc.returncode != 0:
            _one_line_failure(proc)
    assert content_digest(good_file) == before


def test_read_only_folder(good_file, tmp_path):
    folder = good_file.parent
    before = content_digest(good_file)
    env = subprocess_env(tmp_path)
    new = folder / "sub" / "new.db"
    with read_only(folder):
        _one_line_failure(run_cli(good_file, env, "add", "cannot land"))
        assert "cannot create" in _one_line_failure(run_cli(new, env, "init"))
    assert not new.exists()
    assert content_digest(good_file) == before


def _file_size_limit(limit: int):
    def apply() -> None:
        # Writes past `limit` now fail with EFBIG, as on a full disk; SIGXFSZ would kill instead.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk(good_file, tmp_path):
    before = content_digest(good_file)
    env = subprocess_env(tmp_path)
    # A memory in a new layer makes sqlite-vec allocate a new ~1.5 MB vector chunk: far past 64 KiB.
    proc = run_cli(good_file, env, "add", "--layer", "assets", "this does not fit",
                   preexec_fn=_file_size_limit(64 * 1024))
    message = _one_line_failure(proc)
    assert "disk" in message or "written" in message, message
    assert content_digest(good_file) == before
    problems, counts = consistency(good_file)
    assert not problems and counts["memories"] == 5, problems
    ok = run_cli(good_file, env, "add", "--layer", "assets", "this fits now")
    assert ok.returncode == 0, ok.stderr


def test_new_file_is_private(tmp_path, monkeypatch):
    """The file's folder is 0700, the file and its -wal and -shm 0600, whatever the umask allows."""
    from magray import Memory

    monkeypatch.setenv("MAGRAY_THREADS", "1")
    old = os.umask(0o022)
    try:
        db = tmp_path / "fresh" / "nested" / "memory.db"
        with Memory.open(db, model=str(model_path())) as mem:
            mem.add("a private memory")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                     for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))}
            assert modes == {"memory.db": 0o600, "memory.db-wal": 0o600, "memory.db-shm": 0o600}
        # The file's own folder; folders above it (like ~/.local/share) keep the user's umask.
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)
