"""The GPU path, with the real model, where llama.cpp was built with a GPU backend and a GPU is
there (skipped elsewhere: the PyPI build is CPU-only): every layer is offloaded, the vectors are the
CPU's, bulk batches (one context, GPU-sized batches) give the one-text vectors, and a memory file
embeds, stores and finds on it."""

from __future__ import annotations

import numpy as np
import pytest

from magray import Memory
from magray.embed.embedder import Embedder

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.skipif(not llama_cpp.llama_supports_gpu_offload(),
                                reason="this llama.cpp build has no GPU backend")

TEXTS = [
    "Caroline: I went to the LGBTQ support group yesterday and it was so powerful.",
    "The deploy pipeline failed twice on Friday because the staging database ran out of disk space.",
    "Bye!",
    "Remember to book the dentist appointment for next Tuesday afternoon.",
] + [f"note {i}: the release of version {i}.{i % 7} moved to week {i % 52}" for i in range(60)]
# The GPU's Q8_0 kernels sum in other orders than the CPU's, and the Q8_0 file quantizes every
# activation (see test_embed_bulk.py): the same spread as between CPU batches, no more.
WORST_COSINE = 0.9995


@pytest.fixture(scope="module")
def gpu(model_path):
    embedder = Embedder(model_path, device="gpu")
    yield embedder
    embedder.close()


def test_the_model_is_offloaded(gpu):
    assert gpu.device == "gpu"
    assert gpu.bulk_contexts == 1  # one context, batches sized for the GPU


def test_gpu_vectors_are_the_cpus(gpu, model_path):
    cpu = Embedder(model_path, device="cpu", n_threads=1)
    try:
        on_cpu = np.concatenate([cpu.embed([t]) for t in TEXTS])
    finally:
        cpu.close()
    on_gpu = np.concatenate([gpu.embed([t]) for t in TEXTS])
    assert ((on_gpu * on_cpu).sum(axis=1)).min() >= WORST_COSINE


def test_bulk_batches_on_the_gpu_give_the_one_text_vectors(gpu):
    alone = np.concatenate([gpu.embed([t]) for t in TEXTS])
    batched = gpu.embed(TEXTS)
    assert ((batched * alone).sum(axis=1)).min() >= WORST_COSINE
    rows = batched @ alone.T
    assert list(rows.argmax(axis=1)) == list(range(len(TEXTS)))


def test_a_memory_file_on_the_gpu(tmp_path, model_path):
    with Memory.open(tmp_path / "gpu.db", model=str(model_path), device="gpu") as mem:
        ids = [r.id for r in mem.add_many([{"content": t, "layer": "assets"} for t in TEXTS])]
        hit = mem.search("the staging database was out of disk space", k=1, touch=False)[0]
        assert hit.memory.id == ids[1]
