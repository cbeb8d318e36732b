"""`co_engagement`: ads most co-clicked with the user's recent clicks (item-to-item).

Build: the users x ads click matrix of the training-side clicks, each ad's top-M neighbours by
shrunk cosine (`core.sources.cooccurrence`), stored as two NPY arrays. Request: the user's last
`history` clicks strictly before the request time (from the engine's feature store), every ad
scored by its summed similarity to them, clicked ads left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.data.request import Request, requests_frame
from core.sources import cooccurrence as co
from core.sources.base import (
    CandidateSource,
    RetrieveOptions,
    SourceBuildContext,
    SourceExplanation,
    rank_in,
)
from core.store.artifacts import load_npy, save_npy

DEFAULTS = {"top_m": 50, "shrinkage": 10.0, "history": 20}


class CoEngagementSource(CandidateSource):
    name = "co_engagement"
    files = ("neighbours.npy", "similarities.npy")

    def __init__(self, params: dict, n_ads: int, neigh: np.ndarray, sims: np.ndarray):
        super().__init__({**DEFAULTS, **params}, n_ads)
        self.neigh, self.sims = neigh, sims
        for a in (neigh, sims):
            a.setflags(write=False)

    @classmethod
    def build(cls, ctx: SourceBuildContext, **params) -> "CoEngagementSource":
        p = {**DEFAULTS, **params}
        imps = ctx.train_impressions
        clicks = imps[imps["clicked"].astype(bool).to_numpy()] if len(imps) else imps
        pos = ctx.positions(clicks["ad_id"].to_numpy()) if len(clicks) else np.empty(0, np.int64)
        keep = pos >= 0
        users, uniq = pd.factorize(clicks["user_id"].to_numpy(dtype=object)[keep]) if len(clicks) else \
            (np.empty(0, np.int64), [])
        X = co.click_matrix(users, pos[keep], len(uniq), ctx.n_ads)
        neigh, sims = co.item_neighbours(X, int(p["top_m"]), float(p["shrinkage"]))
        src = cls(p, ctx.n_ads, neigh, sims)
        src.build_stats = {"users": int(len(uniq)), "clicks": int(X.nnz)}
        return src

    def save(self, directory: Path) -> None:
        save_npy(directory / "neighbours.npy", self.neigh)
        save_npy(directory / "similarities.npy", self.sims)

    @classmethod
    def load(cls, directory: Path, params: dict, n_ads: int) -> "CoEngagementSource":
        neigh = load_npy(directory / "neighbours.npy")
        sims = load_npy(directory / "similarities.npy")
        if neigh.shape != sims.shape or neigh.shape[0] != n_ads:
            from core.common.errors import ArtifactError

            raise ArtifactError(f"{directory}: neighbours {neigh.shape} / similarities {sims.shape} do not fit "
                                f"{n_ads} ads")
        return cls(params, n_ads, neigh, sims)

    def stats(self) -> dict:
        return {**super().stats(), **getattr(self, "build_stats", {}),
                "ads_with_neighbours": int((self.neigh[:, 0] >= 0).sum())}

    def histories(self, requests: pd.DataFrame) -> list[np.ndarray]:
        ts = pd.to_datetime(requests["ts"]).to_numpy(dtype="datetime64[ns]")  # the store's fast path
        return self.runtime.features.click_histories(requests["user_id"].to_numpy(dtype=object), ts,
                                                     int(self.params["history"]))

    def retrieve(self, requests, k, options=None):
        return co.score_histories(self.neigh, self.sims, self.histories(requests), self.n_ads, k)

    def explain(self, request: Request, ad_pos: int, k: int, options: RetrieveOptions | None = None
                ) -> SourceExplanation:
        h = self.histories(requests_frame([request]))[0]
        if not len(h):
            return SourceExplanation(self.name, None, None, "co_engagement: the user has no clicks before the request")
        if ad_pos in set(h.tolist()):
            return SourceExplanation(self.name, None, None,
                                     "co_engagement: the user already clicked this ad (clicked ads are left out)")
        pos, sc = co.score_history(self.neigh, self.sims, h, self.n_ads)
        r = rank_in(pos, ad_pos)
        last = f"the user's last {len(h)} clicks" if len(h) > 1 else "the user's one click"
        have = "have" if len(h) > 1 else "has"
        if r is None:
            why = "has no co-clicks in the training log" if self.neigh[ad_pos, 0] < 0 else \
                "is not among the top neighbours of any of them"
            return SourceExplanation(self.name, None, None, f"co_engagement: {last} {have} no co-clicks with this ad "
                                                            f"(the ad {why})")
        score = float(sc[r - 1])
        if r <= k:
            return SourceExplanation(self.name, r, score, f"co_engagement: rank {r:,} of {len(pos):,} co-clicked ads "
                                                          f"from {last}, score {score:.3f}, K = {k:,}", True)
        return SourceExplanation(self.name, r, score, f"co_engagement: rank {r:,} (score {score:.3f} vs "
                                                      f"K-th {float(sc[k - 1]):.3f}), K = {k:,}")

    def reachable(self) -> np.ndarray:
        out = np.zeros(self.n_ads, bool)
        out[self.neigh[self.neigh >= 0]] = True
        return out
