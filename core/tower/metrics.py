"""Offline retrieval metrics: ranks of held-out clicks -> Recall@K, HitRate@K, NDCG@K.

Pure numpy, no model code, so every number can be checked against a hand computation.

Protocol (core/evaluate.py): every test click is one request with exactly one relevant ad (the
clicked one). Its *rank* is the 0-based position of the clicked ad when ALL ads are sorted by
score, descending (`ranks_of_targets`). From the ranks of all test clicks and the user of each:

- **Recall@K**: per user, the share of their test clicks ranked < K; averaged over users (each
  user counts once, so a few heavy clickers cannot dominate).
- **HitRate@K**: the share of users with at least one test click ranked < K.
- **NDCG@K**: per click, 1 / log2(rank + 2) when rank < K else 0 (one relevant ad, so the ideal
  DCG is 1); averaged per user, then over users.

Without `users` (None) every click is its own user: Recall@K = HitRate@K = share of clicks
ranked < K, and NDCG@K is the mean over clicks.
"""

from __future__ import annotations

import numpy as np

METRICS: tuple[str, ...] = ("recall", "hitrate", "ndcg")


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of `targets[i]` in row i of `scores` (n, n_items), higher score = better.

    rank = (#items scoring strictly higher) + floor(#other items with an equal score / 2): ties
    are broken halfway, the expected position under a random tie-break (an all-equal row ranks
    its target in the middle, not first)."""
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(targets):
        raise ValueError(f"scores must be (n, n_items) with n = len(targets); got {scores.shape} and {targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"targets must be item positions in [0, {scores.shape[1]}); got {targets.min()}..{targets.max()}")
    own = scores[np.arange(len(targets)), targets][:, None]
    greater = (scores > own).sum(1)
    ties = (scores == own).sum(1) - 1
    return (greater + ties // 2).astype(np.int64)


def _per_user_mean(values: np.ndarray, users: np.ndarray | None) -> float:
    if len(values) == 0:
        return float("nan")
    if users is None:
        return float(np.mean(values))
    codes, _ = _codes(users)
    sums = np.bincount(codes, weights=values)
    counts = np.bincount(codes)
    return float(np.mean(sums / counts))


def _codes(users: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, codes = np.unique(np.asarray(users, dtype=object).astype(str), return_inverse=True)
    return codes.ravel(), len(uniq)


def _check(ranks: np.ndarray, k: int, users: np.ndarray | None) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.int64)
    if k <= 0:
        raise ValueError(f"k must be positive; got {k}")
    if users is not None and len(users) != len(ranks):
        raise ValueError(f"users ({len(users)}) and ranks ({len(ranks)}) differ in length")
    return ranks


def recall_at_k(ranks: np.ndarray, k: int, users: np.ndarray | None = None) -> float:
    """Share of each user's test clicks ranked < k, averaged over users (NaN without clicks)."""
    ranks = _check(ranks, k, users)
    return _per_user_mean((ranks < k).astype(np.float64), users)


def hitrate_at_k(ranks: np.ndarray, k: int, users: np.ndarray | None = None) -> float:
    """Share of users with at least one test click ranked < k (NaN without clicks)."""
    ranks = _check(ranks, k, users)
    if len(ranks) == 0:
        return float("nan")
    hit = (ranks < k).astype(np.float64)
    if users is None:
        return float(hit.mean())
    codes, n = _codes(users)
    return float((np.bincount(codes, weights=hit, minlength=n) > 0).mean())


def ndcg_at_k(ranks: np.ndarray, k: int, users: np.ndarray | None = None) -> float:
    """Per click 1/log2(rank+2) if rank < k else 0, averaged per user then over users."""
    ranks = _check(ranks, k, users)
    gain = np.where(ranks < k, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return _per_user_mean(gain, users)


def metric_table(ranks: np.ndarray, ks: tuple[int, ...], users: np.ndarray | None = None) -> dict[str, float]:
    """{"recall@10": ..., "hitrate@10": ..., "ndcg@10": ..., ...} for every k in `ks`."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k, users)
        out[f"hitrate@{k}"] = hitrate_at_k(ranks, k, users)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k, users)
    return out


USER_METRICS: tuple[str, ...] = ("hr", "recall", "ndcg")


def user_protocol_metrics(ranks: np.ndarray, users: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Metrics of the user protocol (core.tower.user_protocol): each user ranked once, several
    held-out ads per user, `ranks[i]` the 0-based position of held-out pair i in its user's list
    (training ads excluded; a pair a model cannot return has a rank >= every k).

    - **hr@K**: share of held-out interactions ranked < K (pooled over users);
    - **recall@K**: per user, hits / held-out ads; averaged over users;
    - **ndcg@K**: per user, sum over hits of 1/log2(rank+2), divided by the ideal DCG of
      min(K, held-out ads) hits; averaged over users."""
    ranks = np.asarray(ranks, dtype=np.int64)
    if len(users) != len(ranks):
        raise ValueError(f"users ({len(users)}) and ranks ({len(ranks)}) differ in length")
    out: dict[str, float] = {}
    if len(ranks) == 0:
        return {f"{m}@{k}": float("nan") for k in ks for m in USER_METRICS}
    codes, n_users = _codes(users)
    n_held = np.bincount(codes, minlength=n_users).astype(np.float64)
    for k in ks:
        if k <= 0:
            raise ValueError(f"k must be positive; got {k}")
        hit = ranks < k
        gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0).astype(np.float64) + 2.0), 0.0)
        ideal = np.cumsum(1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0))
        idcg = ideal[np.minimum(n_held, k).astype(np.int64) - 1]
        out[f"hr@{k}"] = float(hit.mean())
        out[f"recall@{k}"] = float(np.mean(np.bincount(codes, weights=hit, minlength=n_users) / n_held))
        out[f"ndcg@{k}"] = float(np.mean(np.bincount(codes, weights=gain, minlength=n_users) / idcg))
    return out
