"""The llama.cpp embedder: loads a GGUF model, splits long texts into chunks, embeds in batches."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInput, ModelError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")
_POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


def default_bulk_contexts() -> int:
    """Contexts (one llama.cpp thread each) for embedding many texts: $MAGRAY_THREADS, else every
    core this process may run on, at most 8. A bulk job is the work the user waits for, and each
    context sleeps rather than spins when its core is taken (OMP_WAIT_POLICY=PASSIVE)."""
    env = os.environ.get("MAGRAY_THREADS")
    if env:
        return default_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def default_threads() -> int:
    """$MAGRAY_THREADS, else half the cores (at most 8). llama.cpp's threads spin while they wait:
    with every core busy, one other busy process makes a short embedding 5-20x slower (measured
    here: 2.2 ms with 1 thread, 12-50 ms with 2 on 2 loaded cores), and a memory store shares the
    machine with the agent it serves."""
    env = os.environ.get("MAGRAY_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InvalidInput(f"MAGRAY_THREADS must be a whole number, got {env!r}") from None
    return max(1, min((os.cpu_count() or 2) // 2, 8))


class Embedder:
    """One loaded model. `embed` returns unit-length float32 rows (dot product = cosine)."""

    # Sentence-transformer models are trained on short passages; longer inputs are split into
    # chunks of this many tokens that overlap by a fifth, so that no text is silently truncated.
    chunk_tokens = 256
    # Many texts at once (add_many, import, reindex, doctor --repair) are packed into llama.cpp
    # batches of up to this many tokens and embedded with flash attention, on `bulk_contexts`
    # contexts in as many threads (llama.cpp releases the GIL). Without flash attention every batch
    # size was slower than one text per call (bench/RESULTS.md); with it, a few short texts per
    # call win. One text alone (an add, a query) keeps the plain context and its latency.
    batch_tokens = 256
    gpu_batch_tokens = 4096

    def __init__(self, path: Path, *, device: str = "auto", n_ctx: int = 512,
                 n_threads: int | None = None, bulk_contexts: int | None = None) -> None:
        # A llama.cpp context serves one call at a time; a server shares one loaded model between
        # the connections of its worker threads (Memory.another), so every use of the plain
        # context takes this lock, and a bulk call takes the bulk contexts as a whole.
        self._lock = threading.Lock()
        self._bulk_use = threading.Lock()
        if device not in DEVICES:
            raise InvalidInput(f"unknown device {device!r}: use auto, cpu or gpu")
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file {path} is missing")
        # llama.cpp's OpenMP threads spin while they wait by default. When other processes want
        # the same cores (an agent, an IDE, CI), a spinning thread that lost its core stalls every
        # step: on 2 busy cores, 2 threads embedded 5 texts/s spinning and 66-81 sleeping (see
        # bench/RESULTS.md). Read once, when llama.cpp is first loaded; a value set by the user wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import llama_cpp

        gpu_ok = bool(llama_cpp.llama_supports_gpu_offload())
        if device == "gpu" and not gpu_ok:
            raise ModelError("this llama-cpp-python build cannot offload to a GPU "
                             "(reinstall it with CMAKE_ARGS=\"-DGGML_CUDA=on\")")
        attempts = [-1, 0] if device == "auto" and gpu_ok else [-1] if device == "gpu" else [0]
        last_error: Exception | None = None
        # Embedding runs on n_threads_batch, not n_threads, and llama-cpp-python sets it to every
        # core unless told: MAGRAY_THREADS=1 was ignored, and spinning OpenMP threads on a busy
        # 2-core machine made each embed ~40x slower (0.33 s instead of 8 ms for a short text).
        threads = n_threads or default_threads()
        for n_gpu_layers in attempts:
            try:
                self._llm = llama_cpp.Llama(
                    model_path=str(path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx,
                    n_ubatch=n_ctx, n_threads=threads, n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers, verbose=False,
                )
                self.device = "gpu" if n_gpu_layers else "cpu"
                break
            except (ValueError, RuntimeError, OSError) as exc:
                last_error = exc
                log.warning("loading %s with n_gpu_layers=%s failed: %s", path, n_gpu_layers, exc)
        else:
            raise ModelError(f"cannot load model {path}: not a valid GGUF embedding model "
                             f"({last_error})")
        self.path = path
        self.n_ctx = n_ctx
        self._threads = threads
        self._gpu_layers = n_gpu_layers
        # On a GPU one context with big batches keeps it busy; on a CPU one single-thread context
        # per core.
        self.bulk_contexts = 1 if self.device == "gpu" else (bulk_contexts or default_bulk_contexts())
        self._bulk: list = []
        self._bulk_lock = threading.Lock()
        log.info("loaded %s on the %s", path.name, self.device)
        self.dim = int(self._llm.n_embd())
        meta = self._llm.metadata
        self.metadata: dict[str, str] = dict(meta)
        arch = meta.get("general.architecture", "")
        self.pooling = _POOLING.get(int(meta.get(f"{arch}.pooling_type", 1)), "mean")
        self.max_tokens = min(n_ctx, int(meta.get(f"{arch}.context_length", n_ctx)))

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._llm.tokenize(text.encode("utf-8", "replace"), add_bos=True, special=False))

    def chunks(self, text: str) -> list[str]:
        """The pieces of `text` to embed: the whole text when it fits, else overlapping windows
        of about `chunk_tokens` tokens cut between words, each guaranteed to fit the model."""
        if self.count_tokens(text) <= self.chunk_tokens:
            return [text]
        # Start from ~3 characters a token, then halve any window that still does not fit.
        window = self.chunk_tokens * 3
        step = window * 4 // 5
        pieces: list[str] = []
        start = 0
        while start < len(text):
            end = min(len(text), start + window)
            if end < len(text):
                space = text.rfind(" ", start + step // 2, end)
                end = space + 1 if space > start else end
            pieces.extend(self._fit(text[start:end]))
            if end >= len(text):
                break
            start = max(start + 1, end - (window - step))
        return pieces

    def _fit(self, piece: str) -> list[str]:
        if len(piece) <= 1 or self.count_tokens(piece) <= self.max_tokens:
            return [piece]
        half = len(piece) // 2
        return self._fit(piece[:half]) + self._fit(piece[half:])

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed `texts` (each must fit the model: use `chunks` first): one alone on the plain
        context, several in token-sized batches on the bulk contexts in parallel."""
        import numpy as np

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 1:
            with self._lock:
                self._embed_group(self._llm, texts, [0], out)
        elif texts:
            with self._bulk_use:
                self._embed_bulk(texts, out)
        return out

    def _embed_bulk(self, texts: list[str], out: np.ndarray) -> None:
        budget = self.gpu_batch_tokens if self.device == "gpu" else self.batch_tokens
        groups: list[list[int]] = []
        group: list[int] = []
        group_tokens = 0
        for i, text in enumerate(texts):
            n = self.count_tokens(text)
            if group and group_tokens + n > budget:
                groups.append(group)
                group, group_tokens = [], 0
            group.append(i)
            group_tokens += n
        if group:
            groups.append(group)
        contexts = self._bulk_pool()
        if len(contexts) == 1 or len(groups) == 1:
            for g in groups:
                self._embed_group(contexts[0], texts, g, out)
            return
        # Each thread owns one context and takes the next group until none is left.
        pending = iter(groups)
        take = threading.Lock()

        def work(llm) -> None:
            while True:
                with take:
                    g = next(pending, None)
                if g is None:
                    return
                self._embed_group(llm, texts, g, out)

        used = contexts[:len(groups)]
        with ThreadPoolExecutor(max_workers=len(used), thread_name_prefix="magray-embed") as pool:
            for future in [pool.submit(work, llm) for llm in used]:
                future.result()

    def _bulk_pool(self) -> list:
        """The bulk contexts, loaded on first use: flash attention, one thread each on a CPU."""
        with self._bulk_lock:
            if not self._bulk:
                import llama_cpp

                n_ctx = max(self.n_ctx, self.gpu_batch_tokens if self.device == "gpu" else 0)
                threads = self._threads if self.device == "gpu" else 1
                for _ in range(self.bulk_contexts):
                    self._bulk.append(llama_cpp.Llama(
                        model_path=str(self.path), embedding=True, n_ctx=n_ctx, n_batch=n_ctx,
                        n_ubatch=n_ctx, n_threads=threads, n_threads_batch=threads,
                        n_gpu_layers=self._gpu_layers, flash_attn=True, type_k=0, type_v=0, verbose=False))
            return self._bulk

    @staticmethod
    def _embed_group(llm, texts: list[str], indexes: list[int], out: np.ndarray) -> None:
        import numpy as np

        try:
            vectors = llm.embed([texts[i] for i in indexes], normalize=True, truncate=False)
        except ValueError as exc:
            raise InvalidInput(f"text too long for the model: {exc}") from None
        out[indexes] = np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            with self._lock:
                llm.close()
                self._llm = None
        with getattr(self, "_bulk_use", threading.Lock()):
            for context in getattr(self, "_bulk", []):
                context.close()
            self._bulk = []
