"""Models: registration, sha256 checks, the binding, mismatches, and downloads from a real local
HTTP server (resumable, atomic, verified)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from magray import Memory, ModelError, ModelMismatch



class _ModelServer(http.server.ThreadingHTTPServer):
    """Serves one file; can be told to cut the first response short, like a dropped connection."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None):
        self.payload, self.cut_first_at, self.requests = payload, cut_first_at, []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server: _ModelServer = self.server  # type: ignore[assignment]
        server.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
        else:
            self.send_response(200)
        body = server.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_first_at is not None and len(server.requests) == 1:
            self.wfile.write(body[:server.cut_first_at])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-body
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve(model_path):
    servers = []

    def start(cut_first_at=None):
        server = _ModelServer(model_path.read_bytes(), cut_first_at)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/minilm-q8.gguf"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_registers(serve, model_path, db_path, tmp_path):
    server, url = serve()
    seen = []
    with Memory.open(db_path) as m:
        entry = m.add_model(url, name="minilm", sha256=sha(model_path), progress=lambda d, t: seen.append((d, t)))
        assert entry.sha256 == sha(model_path) and entry.source_url == url
        assert Path(entry.path).read_bytes() == model_path.read_bytes()
        assert Path(entry.path).parent == tmp_path / "xdg-cache" / "magray" / "models"
        assert seen[-1] == (model_path.stat().st_size, model_path.stat().st_size)
        m.use_model("minilm")
        assert m.add("downloaded model works").created


def test_interrupted_download_resumes_without_a_half_file(serve, model_path, db_path, tmp_path):
    size = model_path.stat().st_size
    server, url = serve(cut_first_at=size // 3)
    final = tmp_path / "xdg-cache" / "magray" / "models" / "minilm-q8.gguf"
    with Memory.open(db_path) as m:
        with pytest.raises(ModelError, match="run the same command again to resume"):
            m.add_model(url, sha256=sha(model_path))
        assert not final.exists()  # never a half file under the final name
        assert final.with_name(final.name + ".part").stat().st_size == size // 3
        entry = m.add_model(url, sha256=sha(model_path))
    assert server.requests == [None, f"bytes={size // 3}-"]
    assert sha(Path(entry.path)) == sha(model_path)


def test_wrong_sha256_is_refused_and_nothing_kept(serve, db_path, tmp_path):
    server, url = serve()
    with Memory.open(db_path) as m:
        with pytest.raises(ModelError, match="sha256"):
            m.add_model(url, sha256="0" * 64)
        assert m.models() == []
    assert not list((tmp_path / "xdg-cache" / "magray" / "models").iterdir())


def test_missing_and_corrupt_model_files(db_path, tmp_path, model_path):
    with pytest.raises(ModelError, match="missing"):
        with Memory.open(db_path, model=str(tmp_path / "nope.gguf")) as m:
            m.add("x")
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"definitely not a model" * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        with Memory.open(db_path, model=str(not_gguf)) as m:
            m.add("x")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model_path.read_bytes()[: 1 << 20])
    with pytest.raises(ModelError, match="cannot load model"):
        with Memory.open(db_path, model=str(truncated)) as m:
            m.add("x")
    with Memory.open(db_path) as m:
        assert m.status().model is None and m.list() == []


def test_bound_model_file_changed_on_disk_is_refused(db_path, tmp_path, model_path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(model_path, copy)
    with Memory.open(db_path, model=str(copy)) as m:
        m.add("bound to the copy")
    with copy.open("r+b") as f:  # flip bytes deep inside the weights
        f.seek(copy.stat().st_size // 2)
        f.write(b"\xff" * 64)
    with pytest.raises(ModelError, match="sha256"):
        with Memory.open(db_path) as m:
            m.search("bound", mode="vector")


def test_another_model_is_refused_until_reindex(db_path, model_path):
    other = model_path.with_name("all-MiniLM-L6-v2-f16.gguf")
    with Memory.open(db_path, model=str(model_path)) as m:
        kept = m.add("vectors from the q8 model", layer="assets").id
    for call in (lambda m: m.add("another"), lambda m: m.search("vectors", mode="vector")):
        with pytest.raises(ModelMismatch, match="reindex"):
            with Memory.open(db_path, model=str(other)) as m:
                call(m)
    with Memory.open(db_path) as m:
        assert [r.id for r in m.list()] == [kept]
        result = m.reindex(str(other))
        assert result["memories"] == 1 and result["model"]["sha256"] == sha(other)
        assert m.search("q8 vectors", mode="vector")[0].memory.id == kept
        tables = {r[0] for r in m.connection.execute("SELECT name FROM sqlite_schema WHERE name LIKE 'vec_chunks_%'")}
        assert "vec_chunks_1" not in tables and "vec_chunks_2" in tables


def test_interrupted_reindex_keeps_old_vectors_and_resumes(db_path, model_path):
    other = model_path.with_name("all-MiniLM-L6-v2-f16.gguf")
    with Memory.open(db_path, model=str(model_path)) as m:
        ids = [r.id for r in m.add_many([{"content": f"memory number {i}", "layer": "assets"} for i in range(300)])]

    class Stop(Exception):
        pass

    def stop_after_first_batch(done, total):
        raise Stop()

    with Memory.open(db_path) as m:
        with pytest.raises(Stop):
            m.reindex(str(other), progress=stop_after_first_batch)
        # The old binding still serves searches.
        assert m.status().model["sha256"] == sha(model_path)
        assert m.search("memory number 7", mode="vector", k=1)[0].memory.id in ids
        partial = m.connection.execute("SELECT count(*) FROM chunks WHERE generation = 2").fetchone()[0]
        assert 0 < partial < 300
    with Memory.open(db_path) as m:
        assert m.reindex(str(other))["memories"] == 300 - partial
        assert m.status().model["sha256"] == sha(other)
        assert m.connection.execute("SELECT count(*) FROM chunks").fetchone()[0] == 300
