"""Build hook: write the man page magray.1 from `magray.cli.parser.build_parser()` with
argparse-manpage, and install it with the wheel as data (share/man/man1/magray.1)."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # imported by the tests to render the page the same way, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]

MAN_PAGE = "share/man/man1/magray.1"
_ALIAS = "_magray_manpage_build"  # a private package name, so that a real `magray` is never shadowed


def load_build_parser(root: Path):
    """`build_parser` from the source tree, without running magray/__init__.py: that imports the
    library (apsw, numpy, llama.cpp), which an isolated build environment does not have. The
    parser itself needs only the standard library and magray/config.py."""
    package = root / "magray"
    spec = importlib.util.spec_from_file_location(_ALIAS, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    alias = importlib.util.module_from_spec(spec)  # registered, never executed
    sys.modules[_ALIAS] = alias
    try:
        return importlib.import_module(f"{_ALIAS}.cli.parser").build_parser
    finally:
        for name in [n for n in sys.modules if n == _ALIAS or n.startswith(_ALIAS + ".")]:
            del sys.modules[name]


def manpage_text(root: Path, version: str | None = None) -> str:
    """The man page (roff) for the `magray` command in the source tree at `root`."""
    from argparse_manpage.manpage import Manpage

    parser = load_build_parser(Path(root))()
    page = Manpage(parser, _data={"project_name": "magray", "version": version,
                                  "manual_title": "magray manual", "manual_section": 1,
                                  # NAME line: "magray - a local-first memory ..." from the parser's own text
                                  "description": parser.description.split(": ", 1)[-1]})
    return str(page)


class ManPageHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        # Written outside the source tree and the output folder; removed once the wheel is built.
        self._tmp = Path(tempfile.mkdtemp(prefix="magray-man-"))
        out = self._tmp / "magray.1"
        out.write_text(manpage_text(Path(self.root), self.metadata.version), encoding="utf-8")
        build_data.setdefault("shared_data", {})[str(out)] = MAN_PAGE

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)
