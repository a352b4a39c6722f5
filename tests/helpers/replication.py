"""What the replication tests share: the real Litestream binary, `magray replicate` / `follow` as
subprocesses, an S3 server (moto) on 127.0.0.1, and waits on conditions with a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Short enough that a test waits little for the replica, long enough for a 2-core machine.
SYNC_INTERVAL = "100ms"
DEADLINE_S = 60.0


def litestream() -> str:
    from magray.replication import litestream_binary

    return litestream_binary()


def wait_for(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S, every: float = 0.05):
    """Poll `condition` until it returns something true; fail naming `what` after the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(every)


def child_env(env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    env.pop("AWS_CA_BUNDLE", None)  # Litestream 0.5 cannot load an S3 config with it (issue 639)
    return env


def replica_contents(url: str, env: dict[str, str]) -> set[str]:
    """The memory texts the replica holds now, read by restoring it with Litestream itself."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.db"
        proc = subprocess.run([litestream(), "restore", "-o", str(out), url], capture_output=True, text=True,
                              env=child_env(env), timeout=60)
        if proc.returncode != 0:
            return set()
        try:
            return contents(out)
        except sqlite3.DatabaseError:
            # Restored while the restarted Litestream was still writing the replica's files: not
            # caught up yet. A replica that stays damaged times the caller's wait out, and the
            # tests' final restores go through magray, which checks the copy's integrity.
            return set()


def contents(db: Path) -> set[str]:
    """Every live memory's text, read with the stock sqlite3 module (no magray code involved)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT content FROM memories WHERE deleted_at IS NULL")}
    finally:
        conn.close()


def replica_files(url: str, env: dict[str, str]) -> list[dict]:
    proc = subprocess.run([litestream(), "ltx", "-level", "all", "-json", url], capture_output=True, text=True,
                          env=child_env(env), timeout=60, check=True)
    return json.loads(proc.stdout or "[]") or []


def magray(db: Path, env: dict[str, str], *args: str, **kwargs) -> subprocess.Popen:
    """A long-running magray command (replicate, follow) in its own process group."""
    return subprocess.Popen([sys.executable, "-m", "magray", "--db", str(db), *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=kwargs.pop("stderr", subprocess.PIPE),
                            text=True, start_new_session=True, **kwargs)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def litestream_child(proc: subprocess.Popen) -> int | None:
    for pid in children(proc.pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/exe").resolve().name == "litestream":
                return pid
    return None


@contextlib.contextmanager
def running(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Stop a long-running magray with SIGTERM at the end (its group with SIGKILL if it hangs)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a Litestream child left behind by a killed parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(tmp: Path) -> Iterator[dict[str, str]]:
    """moto's S3-compatible server on 127.0.0.1 with test-only credentials and one bucket; yields
    the variables to add to the environment of magray and Litestream, MOTO_ENDPOINT among them."""
    credentials = {"AWS_ACCESS_KEY_ID": "magray-test", "AWS_SECRET_ACCESS_KEY": "magray-test-secret",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    env = dict(os.environ, **credentials)
    log = open(tmp / "moto.log", "w+")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        def endpoint():
            match = re.search(r"Running on (http://127\.0\.0\.1:\d+)", Path(log.name).read_text())
            return match and match.group(1)

        url = wait_for(endpoint, "the moto S3 server to listen", 30)
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="magray-test",
                     aws_secret_access_key="magray-test-secret").create_bucket(Bucket="magray")
        yield credentials | {"MOTO_ENDPOINT": url}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def s3_url(env: dict[str, str], name: str) -> str:
    return f"s3://magray/{name}?endpoint={env['MOTO_ENDPOINT']}&forcePathStyle=true"

