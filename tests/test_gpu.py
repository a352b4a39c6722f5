"""The GPU path, with the real model, where llama.cpp was built with a GPU backend (skipped
elsewhere: the PyPI build is CPU-only): every layer is offloaded, the vectors are the CPU's, bulk
batches (one context, GPU-sized batches) give the one-text vectors, and a memory file embeds,
stores and finds on it.

The checks run in a Python process of their own. On an H200 with a CUDA 13 build of
llama-cpp-python 0.3.36, the first GPU model load inside pytest's own process crashed in
llama_model_load_from_file (a segfault, with or without output capture), while the same calls in a
plain process worked; the cause was not established (bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.reliability import subprocess_env

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.skipif(not llama_cpp.llama_supports_gpu_offload(),
                                reason="this llama.cpp build has no GPU backend")

CHECKS = r"""
import json, sys
import numpy as np
from magray import Memory
from magray.embed.embedder import Embedder

model, folder = sys.argv[1], sys.argv[2]
texts = [
    "Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
    "The deploy pipeline failed twice on Friday because the staging database ran out of disk space.",
    "Bye!",
    "Remember to book the dentist appointment for next Tuesday afternoon.",
] + [f"note {i}: the release of version {i}.{i % 7} moved to week {i % 52}" for i in range(60)]
gpu = Embedder(model, device="gpu")
alone = np.concatenate([gpu.embed([t]) for t in texts])
batched = gpu.embed(texts)
out = {"device": gpu.device, "bulk_contexts": gpu.bulk_contexts,
       "batched_vs_alone": float((batched * alone).sum(axis=1).min()),
       "rows_in_order": bool(((batched @ alone.T).argmax(axis=1) == np.arange(len(texts))).all())}
gpu.close()
cpu = Embedder(model, device="cpu", n_threads=1)
on_cpu = np.concatenate([cpu.embed([t]) for t in texts])
cpu.close()
out["gpu_vs_cpu"] = float((alone * on_cpu).sum(axis=1).min())
with Memory.open(folder + "/gpu.db", model=model, device="gpu") as mem:
    ids = [r.id for r in mem.add_many([{"content": t, "layer": "assets"} for t in texts])]
    hits = mem.search("the staging database was out of disk space", k=1, touch=False)
    out["found"] = bool(hits) and hits[0].memory.id == ids[1]
print(json.dumps(out))
"""
# The GPU's Q8_0 kernels sum in other orders than the CPU's, and the Q8_0 file quantizes every
# activation (see test_embed_bulk.py): a spread of the size seen between CPU batches.
WORST_COSINE = 0.999


def test_the_gpu_path(tmp_path, model_path):
    done = subprocess.run([sys.executable, "-c", CHECKS, str(model_path), str(tmp_path)],
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["device"] == "gpu" and found["bulk_contexts"] == 1  # one context, GPU-sized batches
    assert found["rows_in_order"] and found["batched_vs_alone"] >= WORST_COSINE
    assert found["gpu_vs_cpu"] >= WORST_COSINE
    assert found["found"]
