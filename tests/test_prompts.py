"""Query and document prompts per model: recorded with the binding, applied when embedding, and
part of the embedding cache's key. A MiniLM file embeds text as it is."""

from __future__ import annotations

import numpy as np
import pytest

from magray import Memory
from magray.embed import prompts


@pytest.mark.parametrize("name, query, document", [
    ("multilingual-e5-small-q8_0.gguf", "query: ", "passage: "),
    ("e5-base-v2", "query: ", "passage: "),
    ("nomic-embed-text-v1.5.Q8_0.gguf", "search_query: ", "search_document: "),
    ("bge-small-en-v1.5-f16.gguf", "Represent this sentence for searching relevant passages: ", ""),
    ("embeddinggemma-300m-Q8_0.gguf", "task: search result | query: ", "title: none | text: "),
])
def test_well_known_models_get_their_prompts(name, query, document):
    found = prompts.builtin(name)
    assert (found.query, found.document, found.source) == (query, document, "builtin")


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2-q8_0.gguf", "gte-small", "my-model", "sentence-t5"])
def test_other_models_get_none(name):
    assert prompts.builtin(name) is None


def test_gguf_metadata_names_prompts():
    found = prompts.from_metadata({"general.name": "x", "bert.pooling_type": "1",
                                   "embedding.prompts.query": "q: ", "embedding.prompts.document": "d: "})
    assert (found.query, found.document, found.source) == ("q: ", "d: ", "gguf")
    assert prompts.from_metadata({"general.name": "all-MiniLM-L6-v2"}) is None
    # What the user gave wins over the file and the name.
    given = prompts.Prompts("mine: ", "", "option")
    assert prompts.resolve(given, {"a.prompt.query": "gguf: "}, "e5-small") is given
    assert prompts.resolve(None, {"a.prompt.query": "gguf: "}, "e5-small").query == "gguf: "
    assert prompts.resolve(None, {}, "e5-small").query == "query: "


def test_the_cache_key_holds_the_prompt():
    assert prompts.cache_key("abc", "") == "abc"
    assert prompts.cache_key("abc", "query: ") != prompts.cache_key("abc", "passage: ")


def test_a_minilm_file_embeds_text_as_it_is(db_path, model_path):
    with Memory.open(db_path, model=str(model_path)) as mem:
        mem.add("The user prefers dark mode", layer="insights")
        mem.search("which theme does the user like?", touch=False)
        model = mem.status().model
        assert model["prompts"] == {"query": "", "document": "", "source": "none"}
        keys = {r[0] for r in mem.connection.execute("SELECT DISTINCT model_sha256 FROM embedding_cache")}
        assert keys == {model["sha256"]}


def test_prompts_given_to_model_add_are_applied_and_keyed(db_path, model_path):
    from magray.embed.embedder import Embedder

    text, query = "The boiler was serviced in March", "when was the heating checked"
    with Memory.open(db_path) as mem:
        entry = mem.add_model(str(model_path), name="prompted", query_prefix="query: ",
                              document_prefix="passage: ")
        mem.use_model("prompted")
        memory_id = mem.add(text, layer="insights").id
        hits = mem.search(query, touch=False, min_score=0)
        assert hits[0].memory.id == memory_id
        assert mem.status().model["prompts"] == {"query": "query: ", "document": "passage: ", "source": "option"}
        stored = np.frombuffer(mem.connection.execute(
            "SELECT vector FROM embedding_cache WHERE model_sha256 = ? AND text_hash = "
            "(SELECT text_hash FROM chunks WHERE memory_id = ?)",
            (prompts.cache_key(entry.sha256, "passage: "), memory_id)).fetchone()[0], dtype=np.float32)
        keys = {r[0] for r in mem.connection.execute("SELECT DISTINCT model_sha256 FROM embedding_cache")}
    assert keys == {prompts.cache_key(entry.sha256, "passage: "), prompts.cache_key(entry.sha256, "query: ")}
    raw = Embedder(model_path, device="cpu")
    try:
        # One text per call, as the single add above was embedded.
        (with_prompt,), (without,) = raw.embed(["passage: " + text]), raw.embed([text])
    finally:
        raw.close()
    assert float(stored @ with_prompt) >= 0.9999
    assert float(stored @ without) < 0.999
