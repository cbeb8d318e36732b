"""The `CandidateSource` interface: one small base class, one module per source.

A source is *built* at `adlens build-index` time from the training-side impressions (the
version's tower split, `core.tower.split`; all impressions before the build for a version
without a learned tower) and the catalog, *saved* into the version folder (NPY/JSON, no pickle;
checksummed with the version's other files, its parameters listed in the manifest), *loaded*
with the version, and queried in batch:

    retrieve(requests, k) -> (positions int64 [n, k] padded -1, scores float32 [n, k])

in the version's ad positions, best first. `explain(request, ad_pos, k)` says where one ad
stands in the source for one request, or why the source cannot return it.

At load time a source is bound to a `SourceRuntime` (the version and the engine's feature
store), which gives it the request-time data: the query vector for two_tower, the user's click
history before the request for co_engagement. Loaded sources are read-only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from core.data.features import FeatureStore
from core.data.request import Request, RequestBatch
from core.store.catalog import Catalog

SOURCE_ORDER: tuple[str, ...] = ("two_tower", "co_engagement", "popular_in_context", "targeting", "ease")
"""Every source name in merge order (the union lists two_tower's candidates first)."""


@dataclass(frozen=True)
class SourceExplanation:
    """One ad in one source for one request: its rank and score there, or why not (`reason`)."""

    source: str
    rank: int | None
    score: float | None
    reason: str
    found: bool = False  # within the source's quota K for this request

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SourceBuildContext:
    """What a source is built from (read-only): the version's ads and the training-side log."""

    ad_ids: np.ndarray               # the version's ad ids (position order)
    catalog: Catalog                 # at build-index time
    train_impressions: pd.DataFrame  # training side of the split (all impressions without one)
    train_requests: pd.DataFrame     # the logged request of each training impression (row order)
    build_ts: datetime
    split: dict | None = None        # the tower's split, recorded in the manifest

    @property
    def n_ads(self) -> int:
        return len(self.ad_ids)

    def positions(self, ad_ids) -> np.ndarray:
        """Version position of each ad id (-1 for ads not in the version)."""
        return pd.Index(np.asarray(self.ad_ids, dtype=object)).get_indexer(
            pd.Index(np.asarray(ad_ids, dtype=object)))


@dataclass
class SourceRuntime:
    """Request-time inputs shared by every source of one engine."""

    version: Any  # core.index.versions.Version (or a Version-shaped object)
    features: FeatureStore


@dataclass
class RetrieveOptions:
    """Per-call extras: the requests' query vectors (already encoded by the engine) and ANN params."""

    queries: np.ndarray | None = None
    search_params: dict | None = None
    stats: dict | None = None  # filled by two_tower with the ANN's per-shard times ({shard: ms})
    extra: dict = field(default_factory=dict)


def pad(rows: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-request (positions, scores) into [n, k] arrays padded with -1 / 0."""
    pos = np.full((len(rows), k), -1, np.int64)
    sc = np.zeros((len(rows), k), np.float32)
    for i, (p, s) in enumerate(rows):
        m = min(k, len(p))
        pos[i, :m] = p[:m]
        sc[i, :m] = s[:m]
    return pos, sc


def rank_in(ordered: np.ndarray, ad_pos: int) -> int | None:
    """1-based rank of `ad_pos` in a best-first position array (None when absent)."""
    hit = np.flatnonzero(np.asarray(ordered) == ad_pos)
    return int(hit[0]) + 1 if len(hit) else None


class CandidateSource(ABC):
    """One candidate source (see the module docstring). `params` are recorded in the manifest."""

    name: ClassVar[str]
    files: ClassVar[tuple[str, ...]] = ()  # what `save` writes into its folder

    def __init__(self, params: dict, n_ads: int):
        self.params = dict(params)
        self.n_ads = int(n_ads)
        self.runtime: SourceRuntime | None = None

    @classmethod
    def skip_reason(cls, ctx: SourceBuildContext, **params) -> str | None:
        """Why this source cannot be built for `ctx` (None: it can); the build skips it with this message."""
        return None

    @classmethod
    @abstractmethod
    def build(cls, ctx: SourceBuildContext, **params) -> "CandidateSource":
        """Fit the source from the training-side log and the catalog."""

    def save(self, directory: Path) -> None:
        """Write the source's arrays into `directory` (NPY/JSON only)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, params: dict, n_ads: int) -> "CandidateSource":
        """Read what `save` wrote (the manifest's checksums were verified by the version loader)."""

    def bind(self, runtime: SourceRuntime) -> "CandidateSource":
        self.runtime = runtime
        return self

    def stats(self) -> dict:
        """Build statistics for the manifest (counts, coverage)."""
        return {"reachable_ads": int(self.reachable().sum())}

    @abstractmethod
    def retrieve(self, requests: "pd.DataFrame | RequestBatch", k: int, options: RetrieveOptions | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per request (a requests frame or RequestBatch, read through request_arrays):
        (positions int64 [n, k] padded -1, scores float32 [n, k]), best first."""

    @abstractmethod
    def explain(self, request: Request, ad_pos: int, k: int, options: RetrieveOptions | None = None
                ) -> SourceExplanation:
        """Where `ad_pos` stands in this source for `request` with quota `k`, or why it cannot."""

    @abstractmethod
    def reachable(self) -> np.ndarray:
        """Boolean [n_ads]: ads this source can return for some request (its coverage)."""
