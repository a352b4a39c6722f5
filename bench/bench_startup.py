"""Whole-process start-up of the `magray` CLI, measured with hyperfine against `python -c pass`
(the floor: an interpreter that does nothing) in one run.

    python bench/bench_startup.py              # 10K-memory file, 20 runs per command
    python bench/bench_startup.py --n 2000 --runs 10

The file is filled like bench_mcp.py does (generated texts, random unit vectors); `search` pays the
model load and the query embedding (or finds the query's vector in the file's cache, and then
loads no model at all) and a hybrid search.
Needs hyperfine (Debian: apt-get install hyperfine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mcp import ROOT, fill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", default=os.environ.get("MAGRAY_TEST_MODEL")
                        or str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2-q8_0.gguf"))
    args = parser.parse_args()
    if shutil.which("hyperfine") is None:
        sys.exit("hyperfine is not installed (apt-get install hyperfine)")
    # Byte-compile the package first, as a pip install does: an editable checkout under
    # PYTHONDONTWRITEBYTECODE would otherwise recompile every module on every start (~40 ms).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "magray")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "startup.db"
        fill(db, args.model, args.n)
        magray = f"{sys.executable} -m magray --db {db}"
        commands = {
            "python -c pass": f"{sys.executable} -c pass",
            "magray --help": f"{magray} --help",
            "magray status": f"{magray} status",
            "magray list": f"{magray} list --limit 20",
            "magray get": f"{magray} get 1",
            "magray search, new query (model load included)": f"{magray} search 'deploy the server on friday'",
            "magray search, query vector cached": f"{magray} search 'deploy the server on friday'",
        }
        # Before each run of the "new query" row the embedding cache is emptied, so that run
        # imports llama.cpp, loads the model and embeds; the last row finds the vector cached.
        forget = (f"{sys.executable} -c \"import apsw; apsw.Connection('{db}').execute("
                  f"'DELETE FROM embedding_cache')\"")
        prepares = {name: forget if "new query" in name else "true" for name in commands}
        export = Path(tmp) / "hyperfine.json"
        cmd = ["hyperfine", "--warmup", "2", "--runs", str(args.runs), "--export-json", str(export), "-N"]
        for name in commands:
            cmd += ["--prepare", prepares[name]]
        for name, command in commands.items():
            cmd += ["-n", name, command]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        results = json.loads(export.read_text())["results"]
    floor = results[0]["median"]
    print(f"| command ({args.n:,} memories) | median | mean ± sd | minus the floor |")
    print("| --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['command']} | {r['median'] * 1000:.0f} ms | {r['mean'] * 1000:.0f} ± {r['stddev'] * 1000:.0f} ms "
              f"| {(r['median'] - floor) * 1000:+.0f} ms |")


if __name__ == "__main__":
    main()
