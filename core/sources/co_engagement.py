"""`co_engagement`: ads most co-clicked with the user's recent clicks (item-to-item).

Build: the users x ads click matrix of the training-side clicks, each ad's top-M neighbours by
shrunk cosine (`core.sources.cooccurrence`), stored as two NPY arrays. Request: the user's last
`history` clicks strictly before the request time (from the engine's feature store), every ad
scored by its summed similarity to them, clicked ads left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from core.data.request import Request, RequestBatch, request_arrays
from core.sources import cooccurrence as co
from core.sources.base import (
    CandidateSource,
    RetrieveOptions,
    SourceBuildContext,
    SourceExplanation,
    rank_in,
)
from core.store.artifacts import load_npy, save_npy

DEFAULTS = {"top_m": 50, "shrinkage": 10.0, "history": 100}


def training_click_matrix(ctx: SourceBuildContext):
    """The binary users x ads click matrix of the build context's training-side clicks."""
    imps = ctx.train_impressions
    clicks = imps[imps["clicked"].astype(bool).to_numpy()] if len(imps) else imps
    pos = ctx.positions(clicks["ad_id"].to_numpy()) if len(clicks) else np.empty(0, np.int64)
    keep = pos >= 0
    users, uniq = pd.factorize(clicks["user_id"].to_numpy(dtype=object)[keep]) if len(clicks) else \
        (np.empty(0, np.int64), [])
    return co.click_matrix(users, pos[keep], len(uniq), ctx.n_ads)


class CoEngagementSource(CandidateSource):
    name = "co_engagement"
    files = ("neighbours.npy", "similarities.npy")
    defaults: ClassVar[dict] = DEFAULTS
    relation = "co-clicks"  # what a neighbour weight means, in explain's words

    def __init__(self, params: dict, n_ads: int, neigh: np.ndarray, sims: np.ndarray):
        super().__init__({**self.defaults, **params}, n_ads)
        self.neigh, self.sims = neigh, sims
        for a in (neigh, sims):
            a.setflags(write=False)

    @classmethod
    def build(cls, ctx: SourceBuildContext, **params) -> "CoEngagementSource":
        p = {**cls.defaults, **params}
        X = training_click_matrix(ctx)
        neigh, sims = co.item_neighbours(X, int(p["top_m"]), float(p["shrinkage"]))
        src = cls(p, ctx.n_ads, neigh, sims)
        src.build_stats = {"users": int(X.shape[0]), "clicks": int(X.nnz)}
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

            raise ArtifactError(f"{directory}: {cls.name} neighbours {neigh.shape} / similarities {sims.shape} do not fit "
                                f"{n_ads} ads")
        return cls(params, n_ads, neigh, sims)

    def stats(self) -> dict:
        return {**super().stats(), **getattr(self, "build_stats", {}),
                "ads_with_neighbours": int((self.neigh[:, 0] >= 0).sum())}

    def histories(self, requests: pd.DataFrame) -> list[np.ndarray]:
        """Each request's user's last `history` clicks before the request (0: every click)."""
        b = request_arrays(requests)
        return self.runtime.features.click_histories(b.user_id, b.ts, int(self.params["history"]) or None)

    def history(self, request: Request) -> np.ndarray:
        """`histories` of one request (why-not explains per request)."""
        return self.histories(RequestBatch.of([request]))[0]

    def score_many(self, histories: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (positions [n, k] padded -1, scores) of each history, its own ads left out."""
        return co.score_histories(self.neigh, self.sims, histories, self.n_ads, k)

    def score_one(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every ad the history scores (positions, scores), best first, its own ads left out."""
        return co.score_history(self.neigh, self.sims, history, self.n_ads)

    def has_relation(self, ad_pos: int) -> bool:
        """Whether the ad has any neighbour at all in the training log."""
        return bool(self.neigh[ad_pos, 0] >= 0)

    def retrieve(self, requests, k, options=None):
        return self.score_many(self.histories(requests), k)

    def explain(self, request: Request, ad_pos: int, k: int, options: RetrieveOptions | None = None
                ) -> SourceExplanation:
        h = self.history(request)
        name = self.name
        if not len(h):
            return SourceExplanation(name, None, None, f"{name}: the user has no clicks before the request")
        if ad_pos in set(h.tolist()):
            return SourceExplanation(name, None, None,
                                     f"{name}: the user already clicked this ad (clicked ads are left out)")
        pos, sc = self.score_one(h)
        r = rank_in(pos, ad_pos)
        last = f"the user's last {len(h)} clicks" if len(h) > 1 else "the user's one click"
        have = "have" if len(h) > 1 else "has"
        if r is None:
            why = "is not among the top neighbours of any of them" if self.has_relation(ad_pos) else \
                f"has no {self.relation} in the training log"
            return SourceExplanation(name, None, None, f"{name}: {last} {have} no {self.relation} with this ad "
                                                       f"(the ad {why})")
        score = float(sc[r - 1])
        if r <= k:
            return SourceExplanation(name, r, score, f"{name}: rank {r:,} of {len(pos):,} ads with {self.relation} "
                                                     f"from {last}, score {score:.3f}, K = {k:,}", True)
        return SourceExplanation(name, r, score, f"{name}: rank {r:,} (score {score:.3f} vs "
                                                 f"K-th {float(sc[k - 1]):.3f}), K = {k:,}")

    def reachable(self) -> np.ndarray:
        out = np.zeros(self.n_ads, bool)
        out[self.neigh[self.neigh >= 0]] = True
        return out
