"""EASE (Steck, 2019): a linear item-item model with a closed-form solution, used as a baseline
of the user protocol (and usable as a candidate source where the catalog is small enough).

    P = (XᵀX + λI)⁻¹,   B = I − P · diag(1 / diag(P)),   so diag(B) = 0,

where X is the binary users × ads click matrix; a user's scores are x_u B. The solve is a dense
ads × ads inverse (O(n_ads³) time, n_ads² floats): above `EASE_MAX_ADS` it is refused (callers
skip EASE with a message instead of running out of memory).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp

from core.common.errors import AdLensError

EASE_MAX_ADS = 12_000
"""Largest catalog EASE solves: a 12k × 12k float64 matrix is 1.2 GB and inverts in about a minute."""

DEFAULT_LAMBDAS: tuple[float, ...] = (50.0, 200.0, 800.0, 3200.0)
"""λ grid the evaluation chooses from on a validation slice of the training side."""


def ease_skip_reason(n_ads: int) -> str | None:
    """Why EASE cannot run on `n_ads` ads (None when it can)."""
    if n_ads > EASE_MAX_ADS:
        return (f"EASE skipped: its dense {n_ads:,} x {n_ads:,} solve is above EASE_MAX_ADS = {EASE_MAX_ADS:,} "
                "ads (memory grows with the square of the catalog)")
    return None


def fit_ease(X: sp.csr_matrix, lam: float) -> np.ndarray:
    """B (float32, n_ads × n_ads, zero diagonal) for the click matrix `X` and L2 weight `lam` > 0."""
    if lam <= 0:
        raise ValueError(f"lam must be > 0; got {lam}")
    n = X.shape[1]
    reason = ease_skip_reason(n)
    if reason:
        raise AdLensError(reason)
    X = sp.csr_matrix(X, dtype=np.float64)
    G = np.asarray((X.T @ X).todense(), dtype=np.float64)
    G[np.diag_indices(n)] += lam
    # Cholesky inverse (G is symmetric positive definite): half the work of a general inverse.
    c, info = sl.lapack.dpotrf(G, lower=0, overwrite_a=1)
    if info != 0:
        raise AdLensError(f"EASE: the Gram matrix is not positive definite (LAPACK info {info}); raise lam")
    P, info = sl.lapack.dpotri(c, lower=0, overwrite_c=1)
    P = np.triu(P) + np.triu(P, 1).T
    B = -P / np.diag(P)[None, :]
    B[np.diag_indices(n)] = 0.0
    return B.astype(np.float32)


def ease_scores(B: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    """(len(histories), n_ads) scores: the sum of B's rows over each history's ads."""
    n = B.shape[0]
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.concatenate([np.asarray(h, np.int64) for h in histories]) if histories else np.empty(0, np.int64)
    H = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(histories), n))
    return np.asarray(H @ B)
