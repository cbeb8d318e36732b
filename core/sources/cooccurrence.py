"""Item-item co-occurrence math shared by the `co_engagement` source and the item-kNN baseline.

- `click_matrix`: the binary users x ads click matrix (CSR).
- `item_neighbours`: each ad's top-M neighbours by shrunk cosine over the matrix's columns,
  sim(i, j) = co(i, j) / (sqrt(n_i * n_j) + shrinkage), where co is the number of users who
  clicked both and n_i the users who clicked i (self excluded; the shrinkage pulls similarities
  resting on few users towards 0).
- `score_histories`: for each click history, every ad's summed similarity to the history's ads,
  top-k positions (padded -1) and scores.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

BLOCK = 2048
"""Ads per block of the co-occurrence product (bounds the memory of one sparse block)."""


def click_matrix(user_idx: np.ndarray, ad_pos: np.ndarray, n_users: int, n_ads: int) -> sp.csr_matrix:
    """Binary (n_users, n_ads) matrix with a 1 where the user clicked the ad (repeats count once)."""
    user_idx = np.asarray(user_idx, dtype=np.int64)
    ad_pos = np.asarray(ad_pos, dtype=np.int64)
    if len(user_idx) != len(ad_pos):
        raise ValueError(f"user_idx ({len(user_idx)}) and ad_pos ({len(ad_pos)}) differ in length")
    if len(ad_pos) and (ad_pos.min() < 0 or ad_pos.max() >= n_ads or user_idx.min() < 0 or user_idx.max() >= n_users):
        raise ValueError(f"indices out of range for a {n_users} x {n_ads} click matrix")
    data = np.ones(len(ad_pos), np.float32)
    X = sp.csr_matrix((data, (user_idx, ad_pos)), shape=(n_users, n_ads), dtype=np.float32)
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def item_neighbours(X: sp.csr_matrix, top_m: int, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours int32 [n_ads, top_m] padded -1, similarities float32 [n_ads, top_m]) by shrunk
    cosine over X's columns, best first (ties: lower position first); only positive similarities."""
    if top_m < 1:
        raise ValueError(f"top_m must be >= 1; got {top_m}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0; got {shrinkage}")
    X = sp.csr_matrix(X, dtype=np.float32)
    n_ads = X.shape[1]
    counts = np.asarray(X.sum(axis=0)).ravel().astype(np.float64)
    neigh = np.full((n_ads, top_m), -1, np.int32)
    sims = np.zeros((n_ads, top_m), np.float32)
    XT = X.T.tocsr()
    for lo in range(0, n_ads, BLOCK):
        hi = min(n_ads, lo + BLOCK)
        co = (XT[lo:hi] @ X).tocsr()  # (block, n_ads) co-click counts
        co.sort_indices()
        for r in range(hi - lo):
            i = lo + r
            a, b = co.indptr[r], co.indptr[r + 1]
            cols = co.indices[a:b]
            vals = co.data[a:b].astype(np.float64)
            keep = cols != i
            cols, vals = cols[keep], vals[keep]
            if not len(cols):
                continue
            s = vals / (np.sqrt(counts[i] * counts[cols]) + shrinkage)
            take = np.lexsort((cols, -s))[:top_m]
            neigh[i, :len(take)] = cols[take]
            sims[i, :len(take)] = s[take]
    return neigh, sims


def _top_k(cand: np.ndarray, score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(cand) > k:
        part = np.argpartition(-score, k - 1)[:k]
        cand, score = cand[part], score[part]
    order = np.lexsort((cand, -score))
    return cand[order], score[order]


def score_history(neigh: np.ndarray, sims: np.ndarray, history: np.ndarray, k: int,
                  exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One history's top-k (positions, summed similarities), unpadded, best first."""
    h = np.asarray(history, dtype=np.int64)
    if not len(h) or k < 1:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    cand = neigh[h].ravel().astype(np.int64)
    w = sims[h].ravel()
    ok = cand >= 0
    if exclude_history:
        ok &= ~np.isin(cand, h)
    cand, w = cand[ok], w[ok]
    if not len(cand):
        return np.empty(0, np.int64), np.empty(0, np.float32)
    uniq, inv = np.unique(cand, return_inverse=True)
    total = np.bincount(inv, weights=w.astype(np.float64)).astype(np.float32)
    return _top_k(uniq, total, k)


def score_histories(neigh: np.ndarray, sims: np.ndarray, histories: list[np.ndarray], n_ads: int, k: int,
                    exclude_history: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """For each history (ad positions), the top-k ads by summed neighbour similarity:
    (positions int64 [n, k] padded -1, scores float32 [n, k] padded 0), best first (ties: lower
    position first). Ads in the history are left out when `exclude_history`."""
    if neigh.shape != sims.shape or neigh.shape[0] != n_ads:
        raise ValueError(f"neigh {neigh.shape} and sims {sims.shape} must both be ({n_ads}, top_m)")
    pos = np.full((len(histories), max(k, 0)), -1, np.int64)
    out = np.zeros((len(histories), max(k, 0)), np.float32)
    for row, h in enumerate(histories):
        p, s = score_history(neigh, sims, h, k, exclude_history)
        pos[row, :len(p)] = p
        out[row, :len(s)] = s
    return pos, out
