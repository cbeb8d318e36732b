"""The bench's synthetic catalog (no text encoding, so millions of ads take minutes) and the
constants every bench section shares: K (the funnel's K) and the recall target."""

from __future__ import annotations

import numpy as np

K = 500
TARGET_RECALL = 0.95
DIM = 384


def clustered_vectors(n: int, dim: int = DIM, *, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Unit vectors shaped like sentence embeddings of ads: a shared component (anisotropy),
    ~100 topics, fine clusters of ~200 ads with skewed sizes, and per-ad noise. Cosine ≈ 0.67
    inside a fine cluster, ≈ 0.45 inside a topic, ≈ 0.11 across topics."""
    out = np.empty((n, dim), np.float32)
    for a, x in clustered_chunks(n, dim, seed=seed, chunk=chunk):
        out[a:a + len(x)] = x
    return out


def clustered_chunks(n: int, dim: int = DIM, *, seed: int = 0, chunk: int = 100_000):
    """`clustered_vectors` as (start, rows) chunks in position order, generated lazily (memory
    bounded by one chunk; the same vectors for the same seed and chunk size)."""
    rng = np.random.default_rng(seed)

    def unit(m):
        v = rng.standard_normal((m, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    n_topics = 100
    n_fine = max(10, n // 200)
    common = unit(1)[0]
    topics = unit(n_topics)
    fine_topic = rng.integers(0, n_topics, n_fine)
    fine = 0.6 * topics[fine_topic] + 0.5 * unit(n_fine) + 0.35 * common
    weights = rng.lognormal(0.0, 1.0, n_fine)
    assign = rng.choice(n_fine, size=n, p=weights / weights.sum())
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = fine[assign[a:b]] + 0.6 * unit(b - a)
        yield a, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_queries(vectors: np.ndarray, n: int, *, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    """User-like queries near the data: random ads perturbed by noise (cosine ≈ 0.9 to the ad)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(n, len(vectors)), replace=False)
    g = rng.standard_normal((len(rows), vectors.shape[1])).astype(np.float32)
    q = vectors[rows] + noise * g / np.linalg.norm(g, axis=1, keepdims=True)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
