"""`targeting`: ads whose campaigns explicitly include the request's community.

Build: community -> the ads whose campaign's `include_communities` names it (from the catalog
at build-index time), each list ordered by the ad's smoothed training-side CTR,
(clicks + PRIOR_WEIGHT * global CTR) / (impressions + PRIOR_WEIGHT), which is also its score.
Stored as CSR arrays. A request on the home feed (no community) gets nothing from this source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.data.request import Request, request_arrays
from core.sources.base import (
    CandidateSource,
    RetrieveOptions,
    SourceBuildContext,
    SourceExplanation,
    pad,
)
from core.store.artifacts import load_npy, save_npy

PRIOR_WEIGHT = 20.0


def smoothed_ctr(ctx: SourceBuildContext) -> np.ndarray:
    """Per-ad smoothed CTR on the training side (the global CTR for ads never shown)."""
    imps = ctx.train_impressions
    pos = ctx.positions(imps["ad_id"].to_numpy()) if len(imps) else np.empty(0, np.int64)
    ok = pos >= 0
    clicked = imps["clicked"].astype(bool).to_numpy()[ok] if len(imps) else np.zeros(0, bool)
    shown = np.bincount(pos[ok], minlength=ctx.n_ads).astype(np.float64)
    clicks = np.bincount(pos[ok], weights=clicked.astype(np.float64), minlength=ctx.n_ads)
    prior = clicks.sum() / shown.sum() if shown.sum() else 0.01
    return ((clicks + PRIOR_WEIGHT * prior) / (shown + PRIOR_WEIGHT)).astype(np.float32)


class TargetingSource(CandidateSource):
    name = "targeting"
    files = ("communities.npy", "indptr.npy", "positions.npy", "scores.npy")

    def __init__(self, params: dict, n_ads: int, communities: np.ndarray, indptr: np.ndarray, pos: np.ndarray,
                 scores: np.ndarray):
        super().__init__(params, n_ads)
        self.communities, self.indptr, self.pos, self.scores = communities, indptr, pos, scores
        for a in (indptr, pos, scores):
            a.setflags(write=False)
        self._slot = {str(c): i for i, c in enumerate(communities)}

    @classmethod
    def build(cls, ctx: SourceBuildContext, **params) -> "TargetingSource":
        ads = ctx.catalog.ads
        rows = ads.set_index("ad_id").reindex(pd.Index(np.asarray(ctx.ad_ids, dtype=object)))
        inc = rows["include_communities"] if "include_communities" in rows else pd.Series([None] * len(rows))
        ctr = smoothed_ctr(ctx)
        pairs: dict[str, list[int]] = {}
        for p, lst in enumerate(inc.to_numpy(dtype=object)):
            if isinstance(lst, (list, tuple, np.ndarray)):
                for c in lst:
                    pairs.setdefault(str(c), []).append(p)
        comms = np.array(sorted(pairs), dtype=str)
        lists = []
        for c in comms:
            p = np.asarray(pairs[str(c)], np.int64)
            lists.append(p[np.lexsort((p, -ctr[p]))])
        pos = np.concatenate(lists) if lists else np.empty(0, np.int64)
        indptr = np.r_[0, np.cumsum([len(x) for x in lists])].astype(np.int64)
        return cls(params, ctx.n_ads, comms, indptr, pos, ctr[pos] if len(pos) else np.empty(0, np.float32))

    def save(self, directory: Path) -> None:
        for name, arr in zip(self.files, (self.communities, self.indptr, self.pos, self.scores)):
            save_npy(directory / name, arr)

    @classmethod
    def load(cls, directory: Path, params: dict, n_ads: int) -> "TargetingSource":
        return cls(params, n_ads, *[load_npy(directory / f) for f in cls.files])

    def stats(self) -> dict:
        return {**super().stats(), "communities": int(len(self.communities))}

    def ranked(self, community_id) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) of the ads targeting `community_id`, best first."""
        slot = self._slot.get(str(community_id)) if community_id is not None and not pd.isna(community_id) else None
        if slot is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        a, b = self.indptr[slot], self.indptr[slot + 1]
        return self.pos[a:b], self.scores[a:b]

    def retrieve(self, requests, k, options=None):
        return pad([self.ranked(c) for c in request_arrays(requests).community_id], k)

    def explain(self, request: Request, ad_pos: int, k: int, options: RetrieveOptions | None = None
                ) -> SourceExplanation:
        if request.community_id is None:
            return SourceExplanation(self.name, None, None, "targeting: the home feed has no community to target")
        pos, sc = self.ranked(request.community_id)
        hit = np.flatnonzero(pos == ad_pos)
        if not len(hit):
            return SourceExplanation(self.name, None, None, f"targeting: the ad's campaign does not include "
                                                            f"community {request.community_id}")
        r = int(hit[0]) + 1
        found = r <= k
        tail = f"K = {k:,}" if found else f"> K = {k:,}"
        return SourceExplanation(self.name, r, float(sc[hit[0]]),
                                 f"targeting: rank {r:,} of {len(pos):,} ads targeting community "
                                 f"{request.community_id} (smoothed CTR {float(sc[hit[0]]):.4f}), {tail}", found)

    def reachable(self) -> np.ndarray:
        out = np.zeros(self.n_ads, bool)
        out[self.pos] = True
        return out
