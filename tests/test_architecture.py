"""The layering, checked on the source with `ast`: front ends (cli, server) only call the `Memory`
facade and never touch SQL; the library never imports a front end, prints or exits."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "magray"
FRONT_ENDS = ("cli", "server")
# What a front end may import from magray: the facade and the small shared vocabulary around it.
FACADE_MODULES = {"magray", "magray.memory", "magray.errors", "magray.types", "magray.config", "magray.timeutil"}
SQL_LITERAL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|DROP|ALTER|BEGIN|COMMIT|WITH)\s", re.S)
EXIT_CALLS = {("sys", "exit"), ("os", "_exit"), (None, "exit"), (None, "quit")}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. magray.cli.main
    path: Path
    tree: ast.Module

    @property
    def front_end(self) -> bool:
        parts = self.name.split(".")
        return len(parts) > 1 and parts[1] in FRONT_ENDS

    def rel(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"


def _modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append(Module(".".join(parts), path, ast.parse(path.read_text(encoding="utf-8"), str(path))))
    return found


MODULES = _modules()


def imported(module: Module) -> list[tuple[ast.AST, str]]:
    """Every module an import statement names, as absolute dotted names (relative ones resolved,
    and `from X import y` counted as X.y too, since y may be a submodule)."""
    package = module.name.split(".") if module.path.name == "__init__.py" else module.name.split(".")[:-1]
    names = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            names += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.append((node, base))
            names += [(node, f"{base}.{alias.name}") for alias in node.names]
    return names


def _call_name(node: ast.Call) -> tuple[str | None, str] | None:
    func = node.func
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else "?"
        return owner, func.attr
    return None


def test_the_package_is_found():
    names = {m.name for m in MODULES}
    assert {"magray.memory", "magray.cli.main", "magray.server.mcp_server"} <= names


@pytest.mark.parametrize("module", [m for m in MODULES if m.front_end], ids=lambda m: m.name)
def test_front_ends_only_use_the_facade(module: Module):
    problems = []
    for node, name in imported(module):
        top = name.split(".")[0]
        if top == "apsw" or top == "sqlite3" or top == "sqlite_vec":
            problems.append(f"{module.rel(node)} imports {name}")
        if top == "magray" and not name.startswith(tuple(f"magray.{f}" for f in FRONT_ENDS)):
            module_name = name if name in FACADE_MODULES else name.rsplit(".", 1)[0]
            if module_name not in FACADE_MODULES:
                problems.append(f"{module.rel(node)} imports {name}: front ends go through magray.memory.Memory")
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and (call := _call_name(node)) and call[1] in ("execute", "executemany",
                                                                                    "executescript"):
            problems.append(f"{module.rel(node)} runs SQL ({call[1]})")
        if isinstance(node, ast.Attribute) and node.attr in ("connection", "_conn"):
            problems.append(f"{module.rel(node)} reaches for the raw connection (.{node.attr})")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL_LITERAL.match(node.value) or re.search(r"(^|/)sql/|\.sql\b", node.value):
                problems.append(f"{module.rel(node)} holds SQL or loads an sql/ file: {node.value[:40]!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", [m for m in MODULES if not m.front_end], ids=lambda m: m.name)
def test_the_library_never_imports_front_ends_prints_or_exits(module: Module):
    problems = []
    for node, name in imported(module):
        if name.startswith(tuple(f"magray.{f}" for f in FRONT_ENDS)) or name.split(".")[0] == "tqdm":
            problems.append(f"{module.rel(node)} imports {name}")
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and (call := _call_name(node)):
            if call == (None, "print"):
                problems.append(f"{module.rel(node)} prints")
            if call in EXIT_CALLS:
                problems.append(f"{module.rel(node)} exits the process")
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "SystemExit":
                problems.append(f"{module.rel(node)} raises SystemExit")
    # `magray/__main__.py` is the program's entry point, not library code.
    if module.name == "magray.__main__":
        problems = [p for p in problems if "imports magray.cli" not in p]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_violations(tmp_path):
    """The checks above are not vacuous: a front end that runs SQL and a library module that prints
    and imports the CLI are both caught."""
    bad_front = Module("magray.cli.bad", PACKAGE / "cli" / "bad.py", ast.parse(
        "import apsw\nfrom ..db import open_connection\ndef f(mem):\n    mem.connection.execute('SELECT 1')\n"))
    bad_lib = Module("magray.bad", PACKAGE / "bad.py", ast.parse(
        "import sys\nfrom .cli import main\nprint('hi')\nsys.exit(1)\n"))
    with pytest.raises(AssertionError) as front:
        test_front_ends_only_use_the_facade(bad_front)
    for expected in ("imports apsw", "imports magray.db", "runs SQL", "raw connection", "holds SQL"):
        assert expected in str(front.value)
    with pytest.raises(AssertionError) as lib:
        test_the_library_never_imports_front_ends_prints_or_exits(bad_lib)
    for expected in ("imports magray.cli", "prints", "exits the process"):
        assert expected in str(lib.value)
