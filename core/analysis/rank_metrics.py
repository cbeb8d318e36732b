"""Pure comparison metrics for ranked lists and exposure distributions (no AdLens types)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def overlap_at_k(a: Sequence, b: Sequence, k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k (1.0 for identical lists; k is clipped to the longer list)."""
    k = min(k, max(len(a), len(b)))
    if k == 0:
        return 1.0
    return len(set(a[:k]) & set(b[:k])) / k


def jaccard(a: Sequence, b: Sequence) -> float:
    """|A ∩ B| / |A ∪ B| of the two lists as sets (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


def rbo(a: Sequence, b: Sequence, p: float = 0.9) -> float:
    """Extrapolated rank-biased overlap (Webber, Moffat & Zobel 2010, eq. 32) of two rankings
    evaluated to the depth of the shorter one. 1.0 for identical lists, 0.0 for disjoint ones;
    `p` sets how top-heavy it is (expected depth 1 / (1 - p))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    k = min(len(a), len(b))
    if k == 0:
        return 1.0 if len(a) == len(b) else 0.0
    seen_a: set = set()
    seen_b: set = set()
    overlap = 0
    total = 0.0
    for d in range(1, k + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += (overlap / d) * p**d
    return float((overlap / k) * p**k + (1 - p) / p * total)


def gini(values: Sequence[float] | np.ndarray) -> float:
    """Gini coefficient of non-negative exposure counts: 0 = perfectly even, → 1 = one item gets all."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.size == 0 or x.sum() == 0:
        return 0.0
    if (x < 0).any():
        raise ValueError("gini needs non-negative values")
    n = x.size
    ranks = np.arange(1, n + 1)
    return float(2.0 * (ranks * x).sum() / (n * x.sum()) - (n + 1.0) / n)


def total_variation(p: dict, q: dict) -> float:
    """Total variation distance between two discrete distributions given as {key: weight}."""
    keys = set(p) | set(q)
    sp, sq = sum(p.values()) or 1.0, sum(q.values()) or 1.0
    return 0.5 * sum(abs(p.get(k, 0) / sp - q.get(k, 0) / sq) for k in keys)
