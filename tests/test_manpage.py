"""The man page is rendered by the build hook from the real parser: every command is in it."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tomllib

import pytest

from conftest import ROOT

pytest.importorskip("argparse_manpage")


def _hook_module():
    spec = importlib.util.spec_from_file_location("hatch_build_under_test", ROOT / "hatch_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hatch_build = _hook_module()


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every command path, nested ones included: ['init', ..., 'model add', 'model list', ...]."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + name)
                found += _subcommands(sub, prefix + name + " ")
    return found


@pytest.fixture(scope="module")
def page() -> str:
    return hatch_build.manpage_text(ROOT, "0.1.0")


def test_every_subcommand_has_a_section(page):
    from magray.cli.parser import build_parser

    commands = _subcommands(build_parser())
    assert {"add", "search", "serve", "model add"} <= set(commands)
    plain = page.replace("\\-", "-")
    for command in commands:
        assert re.search(rf"^\.SH COMMAND .*'magray {re.escape(command)}'", plain, re.M), command


def test_the_page_is_a_section_1_page_with_options(page):
    plain = page.replace("\\-", "-")
    assert page.startswith('.TH MAGRAY "1"')
    assert "magray - a local-first memory for personal AI agents" in plain
    for option in ("--db", "--json", "--checkpoint-every", "--idle-checkpoint", "--mode"):
        assert option in plain


def test_rendering_leaves_no_trace_in_sys_modules(page):
    assert not [name for name in sys.modules if name.startswith("_magray_manpage_build")]


def test_the_wheel_installs_the_page_as_shared_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(req.startswith("argparse-manpage") for req in config["build-system"]["requires"])
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]["path"] == "hatch_build.py"
    assert hatch_build.MAN_PAGE == "share/man/man1/magray.1"
