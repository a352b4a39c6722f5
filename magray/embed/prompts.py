"""Query and document prompts: the text many retrieval models expect before what they embed.

e5 wants "query: " and "passage: ", nomic "search_query: " and "search_document: ", bge a sentence
before queries only; without them such a model retrieves poorly. The prompts of a file's model
are recorded with the binding (binding.record_prompts, by model sha256) when the model is
registered or first bound, from the first of: what the user gave (`magray model add --query-prefix ...
--document-prefix ...`), the GGUF file's own metadata, the defaults of well-known model names
below. A model with none (all-MiniLM-L6-v2) embeds text as it is, as before.

The embedding cache keys what was embedded: the prompt goes into its model key (see
`cache_key`), so a query and a document of the same text never share a vector.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

_RETRIEVAL_SENTENCE = "Represent this sentence for searching relevant passages: "
# (pattern on the model's name or file name, query prompt, document prompt), first match wins.
BUILTIN: tuple[tuple[str, str, str], ...] = (
    (r"embeddinggemma", "task: search result | query: ", "title: none | text: "),
    (r"nomic-embed", "search_query: ", "search_document: "),
    (r"(?:^|[^a-z0-9])e5(?:[^a-z0-9]|$)|multilingual-e5", "query: ", "passage: "),
    (r"snowflake-arctic-embed-[a-z]+-v2", "query: ", ""),
    (r"bge-(?:small|base|large)-en|mxbai-embed-large|snowflake-arctic-embed", _RETRIEVAL_SENTENCE, ""),
    (r"qwen3-embedding|gte-qwen",
     "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: ", ""),
)
# GGUF metadata keys that may carry prompts (converters write them under different names).
_QUERY_KEY = re.compile(r"(?:^|\.)(?:prompts?\.)?(?:query|search_query)(?:[._](?:prefix|prompt))?$")
_DOCUMENT_KEY = re.compile(r"(?:^|\.)(?:prompts?\.)?(?:document|passage|search_document)(?:[._](?:prefix|prompt))?$")


@dataclass(frozen=True)
class Prompts:
    query: str = ""
    document: str = ""
    source: str = "none"  # "option", "gguf", "builtin" or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def builtin(name: str) -> Prompts | None:
    """The defaults of a well-known model, recognised by its name or file name."""
    lowered = name.lower()
    for pattern, query, document in BUILTIN:
        if re.search(pattern, lowered):
            return Prompts(query, document, "builtin")
    return None


def from_metadata(metadata: Mapping[str, str]) -> Prompts | None:
    """Prompts a GGUF file names in its metadata, if any (only keys about prompts are read)."""
    query = document = ""
    for key, value in metadata.items():
        if "prompt" not in key and "prefix" not in key:
            continue
        if _QUERY_KEY.search(key):
            query = str(value)
        elif _DOCUMENT_KEY.search(key):
            document = str(value)
    return Prompts(query, document, "gguf") if query or document else None


def by_name(*names: str) -> Prompts:
    """The defaults of the first well-known name among `names`, else none."""
    return next((p for p in map(builtin, names) if p is not None), Prompts())


def resolve(given: Prompts | None, metadata: Mapping[str, str], *names: str) -> Prompts:
    """What to record for a model: the user's, else the GGUF file's, else a well-known name's."""
    return given or from_metadata(metadata) or by_name(*names)


def cache_key(model_sha256: str, prompt: str) -> str:
    """The embedding cache's model key for texts embedded after `prompt`: the model's sha256
    alone when there is no prompt (so files of prompt-less models keep their cache as it is)."""
    if not prompt:
        return model_sha256
    return f"{model_sha256}+{hashlib.sha256(prompt.encode('utf-8')).hexdigest()[:16]}"
