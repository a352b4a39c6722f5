"""Shared fixtures: a real memory file in a temp dir, the real GGUF test model, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


from helpers.reliability import model_path as find_test_model


@pytest.fixture(scope="session")
def model_path() -> Path:
    return find_test_model()


@pytest.fixture(autouse=True)
def private_env(tmp_path, monkeypatch):
    """Keep every test away from the user's real data, cache and config."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("MAGRAY_DB", raising=False)
    monkeypatch.delenv("MAGRAY_MODEL", raising=False)
    monkeypatch.delenv("MAGRAY_PROFILE", raising=False)


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "memory.db"


@pytest.fixture
def mem(db_path, model_path):
    from magray import Memory

    with Memory.open(db_path, model=str(model_path)) as m:
        yield m


class Cli:
    """Runs the real `magray` command in a subprocess against one file."""

    def __init__(self, db: Path, model: Path, env: dict[str, str]):
        self.db, self.model, self.env = db, model, env

    def __call__(self, *args: str, input: str | None = None, model: bool = True) -> subprocess.CompletedProcess:
        env = dict(self.env, MAGRAY_DB=str(self.db))
        if model:
            env["MAGRAY_MODEL"] = str(self.model)
        return subprocess.run([sys.executable, "-m", "magray", *args], input=input, capture_output=True,
                              text=True, env=env, timeout=120)

    def json(self, *args: str, input: str | None = None) -> dict:
        proc = self(*args, "--json", input=input)
        assert proc.stdout, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture
def cli(db_path, model_path, private_env) -> Cli:
    return Cli(db_path, model_path, dict(os.environ))
