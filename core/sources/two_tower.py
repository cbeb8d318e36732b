"""`two_tower`: the version's ANN search over the learned (or history-mean) query vectors.

Unchanged behaviour: it calls only `version.search(queries, k, params)` (in-process FAISS or
sharded/Ray-backed behind the same call). Nothing to build or save: the index is the version's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.data.request import Request, RequestBatch
from core.index.ann import similarity
from core.sources.base import (
    CandidateSource,
    RetrieveOptions,
    SourceBuildContext,
    SourceExplanation,
    pad,
)


class TwoTowerSource(CandidateSource):
    name = "two_tower"

    @classmethod
    def build(cls, ctx: SourceBuildContext, **params) -> "TwoTowerSource":
        return cls(params, ctx.n_ads)

    @classmethod
    def load(cls, directory: Path, params: dict, n_ads: int) -> "TwoTowerSource":
        return cls(params, n_ads)

    def queries(self, requests: pd.DataFrame, options: RetrieveOptions | None) -> np.ndarray:
        if options is not None and options.queries is not None:
            return np.atleast_2d(np.asarray(options.queries, dtype=np.float32))
        rt = self.runtime
        return rt.version.encoder.encode(requests, rt.features)

    def retrieve(self, requests, k, options=None):
        q = self.queries(requests, options)
        params = options.search_params if options is not None else None
        stats = options.stats if options is not None else None
        res = self.runtime.version.search(q, k, params, stats=stats) if stats is not None else \
            self.runtime.version.search(q, k, params)
        return pad([(p, s) for s, p in res], k)

    def explain(self, request: Request, ad_pos: int, k: int, options: RetrieveOptions | None = None
                ) -> SourceExplanation:
        batch = RequestBatch.of([request])
        q = self.queries(batch, options)[0]
        version = self.runtime.version
        scores = similarity(version.ad_vectors, q, getattr(version.index, "metric", "ip"))[0]
        s = float(scores[ad_pos])
        pos, _ = self.retrieve(batch, k, RetrieveOptions(
            queries=q[None, :], search_params=options.search_params if options else None))
        hit = np.flatnonzero(pos[0] == ad_pos)
        return explanation(int(hit[0]) + 1 if len(hit) else None, int((scores > s).sum()) + 1, s, k)

    def reachable(self) -> np.ndarray:
        return np.ones(self.n_ads, bool)


def explanation(ann_rank: int | None, exact_rank: int, score: float, k: int) -> SourceExplanation:
    """two_tower's verdict from the ANN rank (None: not returned) and the exact rank at quota K."""
    if ann_rank is not None:
        return SourceExplanation(TwoTowerSource.name, ann_rank, score,
                                 f"two_tower: ANN rank {ann_rank:,}, exact rank {exact_rank:,}, K = {k:,}", True)
    why = f"exact rank {exact_rank:,}, K = {k:,}" if exact_rank > k else \
        f"exact rank {exact_rank:,} is within K = {k:,} but the ANN index missed it"
    return SourceExplanation(TwoTowerSource.name, None, score, f"two_tower: {why}", False)
