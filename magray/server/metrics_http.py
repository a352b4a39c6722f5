"""`magray serve --metrics-port N`: the Prometheus exposition of the memory file on
http://127.0.0.1:N/metrics, served from a background thread beside the MCP server."""

from __future__ import annotations

import http.server
import logging
import threading
from pathlib import Path

log = logging.getLogger("magray.server")


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    db_path: Path

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        from ..memory import Memory

        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        try:
            # Its own connection per scrape: the MCP server's connection stays on its own thread.
            with Memory.open(self.db_path, create=False) as mem:
                body = mem.metrics().encode()
        except Exception as exc:  # a scrape must never take the server down
            log.warning("metrics scrape failed: %s", exc)
            self.send_error(500, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # stdout is the MCP channel; scrapes are not worth a log line


def start(db_path: Path, port: int, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """Serve metrics on host:port (port 0 picks a free one) until the process ends."""
    handler = type("MetricsHandler", (_MetricsHandler,), {"db_path": Path(db_path)})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="magray-metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
