"""Embedding models: the registry of known defaults, local files, downloads, sha256 checks."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from ..config import model_cache_dir
from ..errors import InvalidInput, ModelError

# Models magray knows by name. `magray model add all-minilm-l6-v2` downloads the default.
KNOWN_MODELS: dict[str, dict[str, str | None]] = {
    "all-minilm-l6-v2": {
        "url": "https://huggingface.co/second-state/All-MiniLM-L6-v2-Embedding-GGUF/resolve/main/"
               "all-MiniLM-L6-v2-Q8_0.gguf",
        # Unknown ahead of time for this upload: the first download records the sha256 it got,
        # and every later load is checked against it. Pass --sha256 to pin it up front.
        "sha256": None,
    },
}
DEFAULT_MODEL = "all-minilm-l6-v2"

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


def is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from None
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF model file")


def _verified_cache() -> Path:
    return model_cache_dir().parent / "verified.json"


def _known_sha256(path: Path) -> str | None:
    """The sha256 computed earlier for this exact file (same path, size and modification time)."""
    import json

    try:
        entry = json.loads(_verified_cache().read_text()).get(str(path.resolve()))
        stat = path.stat()
    except (OSError, ValueError, AttributeError):
        return None
    if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
        return entry[2]
    return None


def _remember_sha256(path: Path, sha: str) -> None:
    import json
    import tempfile

    cache = _verified_cache()
    try:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            data = json.loads(cache.read_text())
        except (OSError, ValueError):
            data = {}
        stat = path.stat()
        data[str(path.resolve())] = [stat.st_size, stat.st_mtime_ns, sha]
        with tempfile.NamedTemporaryFile("w", dir=cache.parent, delete=False) as tmp:
            json.dump(data, tmp)
        os.replace(tmp.name, cache)
    except OSError:
        pass  # only a speed-up: the next load hashes the file again


def verify(path: Path, expected_sha256: str | None) -> str:
    """Check the file is a GGUF whose sha256 is the expected one; returns the sha256. Hashing 25 MB
    costs ~25 ms, so the result is remembered for the file's exact size and modification time."""
    if not path.is_file():
        raise ModelError(f"model file {path} is missing")
    check_gguf(path)
    actual = _known_sha256(path)
    if actual is None:
        actual = sha256_file(path)
        _remember_sha256(path, actual)
    if expected_sha256 and actual != expected_sha256.lower():
        raise ModelError(f"model file {path} has sha256 {actual[:16]}..., expected "
                         f"{expected_sha256.lower()[:16]}... (corrupt or a different file)")
    return actual


def name_from_source(source: str) -> str:
    stem = Path(urlparse(source).path if is_url(source) else source).name
    return stem.removesuffix(".gguf").lower() or "model"


def download(url: str, expected_sha256: str | None = None, *, dest_dir: Path | None = None,
             progress: Progress | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url` into the model cache. The bytes go to `<name>.part` (resumed with an HTTP Range
    request after an interruption); only a complete file with the right sha256 is renamed to its
    final name, so a half file never sits where a model is expected."""
    dest_dir = dest_dir or model_cache_dir()
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = dest_dir / Path(urlparse(url).path).name
    if not final.name.endswith(".gguf"):
        raise InvalidInput(f"{url} does not name a .gguf file")
    if final.exists():
        verify(final, expected_sha256)
        return final
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:  # the server ignored Range: start over
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC), 0o600)
            with os.fdopen(fd, "ab" if have else "wb") as out:
                done = have
                if progress:
                    progress(done, total)
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelError(f"download of {url} failed: {reason} (run the same command again to resume)") from None
    if total is not None and done != total:
        raise ModelError(f"download of {url} stopped at {done} of {total} bytes "
                         "(run the same command again to resume)")
    try:
        verify(part, expected_sha256)
    except ModelError:
        part.unlink(missing_ok=True)  # a wrong file cannot be resumed into a right one
        raise
    os.replace(part, final)
    return final
