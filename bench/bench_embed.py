"""Bulk embedding against raw llama-cpp-python, in one run on the same texts (LoCoMo dialogue turns
when ../shared/eval/locomo-dev.json is there, else generated sentences):

- baseline: raw llama-cpp-python, one `embed(text)` call per text, 1 thread;
- raw llama-cpp-python with flash attention, 8 texts per call, 1 thread (what batching buys alone);
- magray `Embedder.embed` on the whole list (token-sized batches, flash attention, one context
  per core in threads);
- magray `Memory.add_many` into a fresh file (chunking, cache, vectors, FTS and commits included);
- the latency of one short text (an add, a query) on magray's plain context against raw.

Ratios are against the baseline of the same run; medians of `--repeats`; the load average is
printed before and after (other processes on the machine skew every absolute number).

    python bench/bench_embed.py [--texts 600] [--repeats 3] [--device cpu|gpu] [--json FILE]

`--device gpu` (a llama-cpp-python built with a GPU backend): every variant offloads all layers,
raw ones too, and magray's bulk embedding uses its one GPU context with GPU-sized batches; the
baseline is still one text per call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, load_note, median, model_path, sentences, timed  # noqa: E402

from magray import Memory  # noqa: E402
from magray.embed.embedder import Embedder, default_bulk_contexts  # noqa: E402

LOCOMO = ROOT.parent / "shared" / "eval" / "locomo-dev.json"


def dialogue_turns(n: int) -> tuple[list[str], str]:
    if not LOCOMO.is_file():
        return sentences(n, seed=0), "generated sentences"
    turns: list[str] = []
    for conv in json.loads(LOCOMO.read_text()):
        for key, session in conv["conversation"].items():
            if key.startswith("session_") and not key.endswith("_date_time"):
                turns.extend(f"{t['speaker']}: {t['text']}" for t in session)
    unique = list(dict.fromkeys(turns))
    return unique[:n], "LoCoMo dialogue turns"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=600, help="texts (default 600)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant (default 3)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where every variant runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    texts, kind = dialogue_turns(args.texts)
    n = len(texts)
    path = model_path()
    Embedder(path, device="cpu").close()  # magray's OpenMP policy is set before llama.cpp loads
    import llama_cpp

    layers = -1 if args.device == "gpu" else 0
    raw = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=512, n_threads=1, n_threads_batch=1,
                          n_gpu_layers=layers, verbose=False)
    tokens = [len(raw.tokenize(t.encode())) for t in texts]
    print(load_note())
    print(f"{n} {kind}, {sum(tokens) / n:.1f} tokens on average ({min(tokens)}-{max(tokens)}), "
          f"{args.repeats} repeats, {default_bulk_contexts()} bulk contexts, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, model {path.name}, "
          f"device {args.device}", flush=True)
    rows: list[dict] = []

    def report(name: str, times: list[float], baseline: float | None = None, unit: str = "texts") -> float:
        rate = n / median(times)
        row = {"variant": name, "median_s": round(median(times), 3), "per_s": round(rate, 1)}
        if baseline:
            row["vs_baseline"] = round(rate / baseline, 2)
        rows.append(row)
        extra = f"  x{row['vs_baseline']:.2f}" if baseline else ""
        print(f"  {name:60s} {median(times):7.3f} s  {rate:7.1f} {unit}/s{extra}", flush=True)
        return rate

    base = report("baseline: raw llama-cpp, embed(text) per text, 1 thread",
                  timed(lambda: [raw.embed(t, normalize=True) for t in texts], args.repeats))
    flash = llama_cpp.Llama(model_path=str(path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                            n_threads=1, n_threads_batch=1, flash_attn=True, n_gpu_layers=layers, verbose=False)
    report("raw llama-cpp, flash attention, 8 texts per call, 1 thread",
           timed(lambda: [flash.embed(texts[i:i + 8], normalize=True) for i in range(0, n, 8)], args.repeats), base)
    flash.close()

    embedder = Embedder(path, device=args.device)
    embedder.embed(texts[:32])  # loads the bulk contexts
    report(f"magray Embedder.embed(all), {embedder.bulk_contexts} contexts",
           timed(lambda: embedder.embed(texts), args.repeats), base)
    one_raw = timed(lambda: raw.embed(texts[0], normalize=True), 30)
    one = timed(lambda: embedder.embed(texts[:1]), 30)
    embedder.close()
    raw.close()

    items = [{"content": t, "layer": "assets"} for t in texts]
    for profile in ("safe", "fast"):
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                with Memory.open(Path(tmp) / "bulk.db", profile=profile, model=str(path), device=args.device) as mem:
                    mem.load_model()
                    start = time.perf_counter()
                    mem.add_many(items, dedup=False)
                    times.append(time.perf_counter() - start)
        report(f"magray Memory.add_many, profile {profile} (docs)", times, base, unit="docs")
    print(f"  one short text: raw {median(one_raw) * 1000:.2f} ms, magray {median(one) * 1000:.2f} ms "
          f"(x{median(one) / median(one_raw):.2f} of raw)")
    print(load_note(after=True))
    if args.json:
        args.json.write_text(json.dumps({"texts": n, "kind": kind, "repeats": args.repeats, "rows": rows,
                                         "one_text_ms": {"raw": median(one_raw) * 1000,
                                                         "magray": median(one) * 1000}}, indent=1))


if __name__ == "__main__":
    main()
