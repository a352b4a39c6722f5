"""The llama.cpp embedder: loads a GGUF model, splits long texts into chunks, embeds in batches."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInput, ModelError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")
_POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


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
    # Texts are packed into one llama.cpp batch up to this many tokens. Attention over a batch grows
    # with the square of its size, and one call per text measured fastest with 1 and 2 threads
    # (bench/RESULTS.md: ~16-token texts, pack 1 / 32 / 128 / 512 = 76 / 65 / 53 / 35 texts/s), so
    # by default each text goes alone; raise it only for a model or device where batching pays.
    pack_tokens = 1

    def __init__(self, path: Path, *, device: str = "auto", n_ctx: int = 512,
                 n_threads: int | None = None) -> None:
        # A llama.cpp context serves one call at a time; a server shares one loaded model between
        # the connections of its worker threads (Memory.another), so every use takes this lock.
        self._lock = threading.Lock()
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
        """Embed `texts` (each must fit the model: use `chunks` first) in packed batches."""
        import numpy as np

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if self.pack_tokens <= 1:  # one text per call: no need to count its tokens to pack it
            for i in range(len(texts)):
                self._embed_group(texts, [i], out)
            return out
        group: list[int] = []
        group_tokens = 0
        for i, text in enumerate(texts):
            n = self.count_tokens(text)
            if group and group_tokens + n > self.pack_tokens:
                self._embed_group(texts, group, out)
                group, group_tokens = [], 0
            group.append(i)
            group_tokens += n
        if group:
            self._embed_group(texts, group, out)
        return out

    def _embed_group(self, texts: list[str], indexes: list[int], out: np.ndarray) -> None:
        import numpy as np

        try:
            with self._lock:
                vectors = self._llm.embed([texts[i] for i in indexes], normalize=True, truncate=False)
        except ValueError as exc:
            raise InvalidInput(f"text too long for the model: {exc}") from None
        out[indexes] = np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            with self._lock:
                llm.close()
                self._llm = None
