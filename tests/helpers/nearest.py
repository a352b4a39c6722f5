"""Exact nearest neighbours by numpy, to check the vector index against."""

from __future__ import annotations

import numpy as np

from magray import vectors


def exact_ids(vecs: np.ndarray, query: np.ndarray, k: int, mask=None) -> list[int]:
    """The ids (row + 1) of the k rows of `vecs` nearest to `query` by dot product, among the
    rows `mask` admits (all by default). The rows are taken as the file stores them (float16,
    see vectors.encode): the index is exact over those, and near-ties may order differently in
    float32."""
    sims = vectors.decode(vectors.encode(vecs), vecs.shape[1]) @ query
    if mask is not None:
        sims = np.where(mask, sims, -np.inf)
    return [int(i) + 1 for i in np.argsort(-sims)[:k] if np.isfinite(sims[i])]
