"""A writer that measures how long each of its write transactions waits (started as a subprocess).

It opens the memory file through magray's own connection code and commits one small settings
row per transaction, as fast as it can, until a line arrives on stdin; then it prints one JSON
line {writes, max_ms, p50_ms}. `balanced` durability keeps fsync time out of the figure: what is
measured is the wait for the write lock and anything that stalls it (a checkpoint).
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time

from magray import binding
from magray.db import open_connection, write_transaction


def main() -> None:
    conn = open_connection(sys.argv[1], profile="balanced", create=False)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    latencies = []
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        with write_transaction(conn):
            binding.set_setting(conn, "write_probe", i)
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
        time.sleep(0.002)  # leave the lock free between writes, like a real writer would
    print(json.dumps({"writes": len(latencies), "max_ms": round(max(latencies), 2),
                      "p50_ms": round(statistics.median(latencies), 2)}), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
