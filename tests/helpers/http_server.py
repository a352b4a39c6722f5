"""`magray serve --http` in a subprocess, for the HTTP and browser tests: started on a free port,
its address read from its first line of output, stopped with SIGINT (a graceful shutdown)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

# Not a timing assertion: how long to wait for a server that never starts before failing the test
# instead of hanging it (the model loads in about a second).
START_DEADLINE_S = 120


@dataclass
class HttpServer:
    proc: subprocess.Popen
    url: str  # http://HOST:PORT/
    lines: list[str]  # what it printed before it was ready
    log: Path  # its stderr

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.log.read_text(encoding="utf-8", errors="replace")


def start(db: Path, env: dict[str, str], listen: str = "127.0.0.1:0", *extra: str) -> HttpServer:
    log = db.with_name(db.name + ".serve.log")
    with open(log, "a", encoding="utf-8") as errors:  # a file, not a pipe: logs never block the server
        proc = subprocess.Popen([sys.executable, "-m", "magray", "--db", str(db), "serve", "--http", listen, *extra],
                                env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:  # a thread: reading a pipe with a deadline, without select and buffers
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        while (line := lines.get(timeout=START_DEADLINE_S)) is not None:
            seen.append(line)
            if line.startswith("serving "):
                return HttpServer(proc, line.split()[1], seen, log)
    except queue.Empty:
        proc.kill()
    proc.wait()
    raise RuntimeError(f"serve --http did not start (exit {proc.returncode}): {log.read_text()}")
