"""Early ranking and diversity: calibrated pCTR -> eCPM -> top N -> per-advertiser cap (+ MMR) -> slate.

Formulas (documented here, used everywhere):
- pCTR (two_tower only) = 1 / (1 + exp(-(a * score + b))), Platt scaling of the tower similarity `score`. (a, b)
  are fitted once per (version, catalog) by logistic regression of `clicked` on the score of
  the shown ad for a seeded sample of logged impressions (`fit_calibration`). Without logged
  clicks and non-clicks, a = 0 and b = logit of the smoothed click rate (or of DEFAULT_CTR).
  With several candidate sources the pCTR model also takes per-source scores and found-by
  flags as features (core.funnel.pctr); with two_tower alone it is exactly this Platt scaling.
- eCPM (value of 1000 impressions): CPC bid -> 1000 * pCTR * bid; CPM bid -> bid. An ad without
  a campaign is priced like a campaign with the schema defaults (CPM, bid 1.0).
- Ranking: eligible candidates sorted by eCPM desc (ties: score desc, then ANN rank); the top N
  are "ranked", the rest get BELOW_CUTOFF.
- Diversity: walk the ranked list in eCPM order (or pick by MMR when `mmr_lambda` is set) and
  fill the slate of size S, skipping an ad whose advertiser already has M ads in the slate
  (ADVERTISER_CAP). Ranked ads left out once the slate is full get BELOW_CUTOFF.
  MMR picks argmax of lambda * rel - (1 - lambda) * max cosine to the ads already picked, with
  rel = eCPM / max eCPM of the ranked list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.data.vocab import BidType
from core.funnel.reasons import Reason

DEFAULT_CTR = 0.01
DEFAULT_BID = 1.0
DEFAULT_BID_TYPE = BidType.CPM.value


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of similarity scores to click probabilities: sigmoid(a * score + b)."""

    a: float
    b: float
    n: int = 0
    positives: int = 0
    method: str = "platt"

    def pctr(self, scores: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(scores, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-z))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def fit_calibration(scores: np.ndarray, clicked: np.ndarray, l2: float = 1e-5, iters: int = 50) -> Calibration:
    """Logistic regression of `clicked` on `scores` by Newton's method (tiny ridge on the slope)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(clicked, dtype=np.float64)
    n, pos = len(y), int(y.sum())
    if n == 0:
        return Calibration(0.0, _logit(DEFAULT_CTR), 0, 0, "default")
    if pos == 0 or pos == n:
        return Calibration(0.0, _logit((pos + 0.5) / (n + 1.0)), n, pos, "constant")
    X = np.column_stack([s, np.ones(n)])
    w = np.array([0.0, _logit(pos / n)])
    reg = np.diag([l2 * n, 0.0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + reg @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return Calibration(float(w[0]), float(w[1]), n, pos, "platt")


def ecpm(pctr: np.ndarray, bid: np.ndarray, bid_type: np.ndarray) -> np.ndarray:
    """eCPM per candidate: CPC -> 1000 * pCTR * bid; CPM (and anything else) -> bid."""
    bid = np.asarray(bid, dtype=np.float64)
    return np.where(np.asarray(bid_type) == BidType.CPC.value, 1000.0 * np.asarray(pctr) * bid, bid)


def rank_by_ecpm(values: np.ndarray, eligible: np.ndarray, score: np.ndarray) -> np.ndarray:
    """1-based eCPM rank among eligible candidates (0 for ineligible ones).

    Candidates are assumed to be in ANN-rank order, which breaks the remaining ties."""
    idx = np.flatnonzero(eligible)
    order = idx[np.lexsort((idx, -score[idx], -values[idx]))]
    rank = np.zeros(len(values), np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


@dataclass(frozen=True)
class SlateResult:
    """`final_position`: 1-based slate position (0 = not in slate); `reason`: BELOW_CUTOFF,
    ADVERTISER_CAP or None (in the slate, or not eligible)."""

    final_position: np.ndarray
    reason: np.ndarray


def select_slate(rank: np.ndarray, n_ranked: int, advertiser: np.ndarray, max_per_advertiser: int,
                 slate_size: int, ecpm_values: np.ndarray, vectors: np.ndarray | None = None,
                 mmr_lambda: float | None = None) -> SlateResult:
    """Cut the eCPM ranking at N, then fill the slate under the per-advertiser cap (and MMR)."""
    n = len(rank)
    final = np.zeros(n, np.int64)
    reason = np.full(n, None, dtype=object)
    reason[rank > n_ranked] = Reason.BELOW_CUTOFF.value
    ranked = np.flatnonzero((rank > 0) & (rank <= n_ranked))
    ranked = ranked[np.argsort(rank[ranked], kind="stable")]
    per_adv: dict = {}
    picked: list[int] = []

    def allowed(i: int) -> bool:
        return per_adv.get(advertiser[i], 0) < max_per_advertiser

    if mmr_lambda is None or vectors is None:
        for i in ranked:
            if len(picked) < slate_size and allowed(i):
                picked.append(int(i))
                per_adv[advertiser[i]] = per_adv.get(advertiser[i], 0) + 1
    else:
        rel = ecpm_values[ranked] / max(float(ecpm_values[ranked].max()), 1e-12) if len(ranked) else ranked
        vecs = vectors[ranked].astype(np.float64)
        max_sim = np.full(len(ranked), -np.inf)
        free = np.ones(len(ranked), bool)
        while len(picked) < slate_size:
            ok = free & np.array([allowed(i) for i in ranked], bool)
            if not ok.any():
                break
            div = np.where(np.isinf(max_sim), 0.0, max_sim)
            gain = np.where(ok, mmr_lambda * rel - (1 - mmr_lambda) * div, -np.inf)
            j = int(np.argmax(gain))
            i = int(ranked[j])
            picked.append(i)
            free[j] = False
            per_adv[advertiser[i]] = per_adv.get(advertiser[i], 0) + 1
            max_sim = np.maximum(max_sim, vecs @ vecs[j])
    final[picked] = np.arange(1, len(picked) + 1)
    for i in ranked:
        if final[i] == 0:
            reason[i] = Reason.BELOW_CUTOFF.value if allowed(i) else Reason.ADVERTISER_CAP.value
    return SlateResult(final, reason)
