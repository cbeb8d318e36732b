"""The funnel for one request: retrieve -> eligibility -> early ranking -> diversity -> slate.

`FunnelEngine(version, catalog)` is built once per (version, catalog): it holds the feature store,
the per-ad eligibility arrays aligned to the version's positions, the frequency-cap index and
the pCTR calibration. It is immutable afterwards (its arrays are read-only), so one engine can
serve every dashboard session and thread. `engine.run(request, params) -> Trace` is a pure
simulation: it never touches the database.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from core.data.features import FeatureStore
from core.data.request import REQUEST_COLUMNS, Request, requests_frame
from core.data.vocab import UNKNOWN
from core.funnel.ad_facts import AdFacts, FrequencyIndex, RequestContext
from core.funnel.context import default_request, usual_contexts
from core.funnel.filters import EligibilityResult, evaluate
from core.funnel.params import EXACT_RANKS_AUTO_MAX, FunnelParams
from core.funnel.ranking import (
    DEFAULT_BID,
    DEFAULT_BID_TYPE,
    Calibration,
    ecpm,
    fit_calibration,
    rank_by_ecpm,
    select_slate,
)
from core.funnel.reasons import Outcome, Reason, Stage, blocking_stages
from core.funnel.trace import Trace
from core.index.ann import pair_similarity, similarity
from core.store.catalog import Catalog
from core.tower.query_encoder import l2_normalize

CALIBRATION_SAMPLES = 5_000

def _obj(rows: pd.DataFrame, col: str, default) -> np.ndarray:
    s = rows[col].astype(object)
    out = s.where(s.notna(), default).to_numpy(dtype=object)
    out.setflags(write=False)
    return out


class FunnelEngine:
    """Everything needed to run requests against one version and one catalog (read-only)."""

    def __init__(self, version, catalog: Catalog, *, calibration_samples: int = CALIBRATION_SAMPLES,
                 seed: int = 0):
        t0 = time.perf_counter()
        self.version = version
        self.catalog = catalog
        self.features = FeatureStore(catalog, version.ad_ids, version.ad_text_vectors)
        self.facts = AdFacts.build(catalog, version.ad_ids)
        self.frequency = FrequencyIndex(catalog, self.facts.campaign_ids)
        rows = catalog.ads.set_index("ad_id", drop=False).reindex(pd.Index(version.ad_ids, dtype=object))
        has = self.facts.has_campaign
        self.advertiser_id = _obj(rows, "advertiser_id", None)
        self.advertiser_name = _obj(rows, "advertiser_name", None)
        self.vertical = _obj(rows, "vertical", UNKNOWN)
        self.title = _obj(rows, "title", "")
        # Display columns as pandas string arrays once, so a Trace takes rows instead of
        # converting Python strings on every request.
        self._display = {name: pd.array(values, dtype="str") for name, values in (
            ("ad_id", np.asarray(version.ad_ids, dtype=object)), ("advertiser_id", self.advertiser_id),
            ("advertiser_name", self.advertiser_name), ("campaign_id", self.facts.campaign_id),
            ("vertical", self.vertical), ("title", self.title))}
        # Ads without an advertiser are each their own group for the per-advertiser cap.
        self.cap_key = np.where(pd.isna(self.advertiser_id), "\0" + np.asarray(version.ad_ids, dtype=object),
                                self.advertiser_id).astype(object)
        bid = pd.to_numeric(rows["bid"], errors="coerce").to_numpy(dtype=np.float64)
        self.bid = np.where(has & ~np.isnan(bid), bid, DEFAULT_BID)
        self.bid_type = np.where(has, _obj(rows, "bid_type", DEFAULT_BID_TYPE), DEFAULT_BID_TYPE).astype(object)
        users = catalog.users
        self._age = dict(zip(users["user_id"], users["age_bucket"])) if len(users) else {}
        self._country = dict(zip(users["user_id"], users["country"])) if len(users) else {}
        comms = catalog.communities
        self._tier = dict(zip(comms["community_id"], comms["safety_tier"])) if len(comms) else {}
        self.usual = usual_contexts(catalog)
        self.user_ids = self.usual.user_ids
        self._catalog_ads = frozenset(catalog.ads["ad_id"])
        for arr in (self.cap_key, self.bid, self.bid_type):
            arr.setflags(write=False)
        self.calibration = self._calibrate(calibration_samples, seed)
        self.build_ms = (time.perf_counter() - t0) * 1e3

    # ---- building blocks (also used by explain/audience) ----------------------------------
    @property
    def n_ads(self) -> int:
        return len(self.version.ad_ids)

    def default_request(self, user_id: str, **overrides) -> Request:
        """`core.funnel.context.default_request` with this engine's precomputed usual contexts."""
        return default_request(self.catalog, user_id, usual=self.usual, **overrides)

    def in_catalog(self, ad_id: str) -> bool:
        return ad_id in self._catalog_ads

    def is_known_user(self, user_id: str) -> bool:
        """Whether the user has a profile or logged impressions."""
        return user_id in self.usual.known

    def _calibrate(self, n: int, seed: int) -> Calibration:
        imps = self.catalog.impressions
        if not len(imps) or n <= 0:
            return fit_calibration(np.empty(0), np.empty(0))
        pos = self.features.ad_positions(imps["ad_id"].to_numpy())
        keep = np.flatnonzero(pos >= 0)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(keep, size=min(n, len(keep)), replace=False)) if len(keep) else keep
        sub = imps.iloc[pick]
        frame = pd.DataFrame({
            "user_id": sub["user_id"].to_numpy(dtype=object),
            "community_id": sub["community_id"].astype(object).to_numpy(),
            "placement": sub["placement"].to_numpy(dtype=object),
            "device": sub["device"].to_numpy(dtype=object),
            "country": sub["user_id"].map(self._country).fillna(UNKNOWN).to_numpy(dtype=object),
            "ts": pd.to_datetime(sub["ts"]).to_numpy(),
        }, columns=list(REQUEST_COLUMNS))
        q = self.version.encoder.encode_requests(frame, self.features) if len(frame) else np.empty((0, 1))
        s = pair_similarity(self.version.ad_vectors[pos[pick]], q, self.metric) if len(frame) else np.empty(0)
        return fit_calibration(s, sub["clicked"].astype(bool).to_numpy())

    def request_context(self, request: Request) -> RequestContext:
        tier = self._tier.get(request.community_id) if request.community_id is not None else None
        return RequestContext.build(request, self._age.get(request.user_id, UNKNOWN), tier, self.frequency)

    def encode(self, request: Request) -> np.ndarray:
        """The request's query vector (d,) from the version's encoder."""
        return self.version.encoder.encode_requests(requests_frame([request]), self.features)[0]

    def describe_query(self, request: Request) -> dict:
        """What made the request's query vector: the encoder kind, plus what it used when it says
        (e.g. which imported request-vectors row, or that none matched)."""
        detail = self.version.encoder.describe_requests(requests_frame([request]), self.features)
        return {"encoder": self.version.encoder.kind, **(detail[0] if detail else {})}

    def eligibility(self, request: Request, positions: np.ndarray, params: FunnelParams) -> EligibilityResult:
        return evaluate(self.facts, positions, self.request_context(request), params.rules)

    def pricing(self, scores: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pCTR, eCPM) for candidates with these similarity scores (see core/ranking.py)."""
        p = self.calibration.pctr(scores)
        return p, ecpm(p, self.bid[positions], self.bid_type[positions])

    def exact_scores(self, q: np.ndarray) -> np.ndarray:
        """Similarity of the query to every ad in the version (the exact-search oracle)."""
        return similarity(self.version.ad_vectors, q, self.metric)[0]

    @property
    def metric(self) -> str:
        """The version's FAISS metric ("ip" or "l2"; scores are higher-is-better either way)."""
        return self.version.index.metric

    def _want_exact(self, params: FunnelParams) -> bool:
        if params.exact_ranks is not None:
            return bool(params.exact_ranks)
        return self.n_ads <= EXACT_RANKS_AUTO_MAX

    # ---- the funnel ------------------------------------------------------------------------
    def run(self, request: Request, params: FunnelParams | None = None) -> Trace:
        """Simulate `request` through every stage and return its Trace (never writes anything)."""
        params = params or FunnelParams()
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        q = self.encode(request)
        query_source = self.describe_query(request)
        t1 = time.perf_counter()
        t["encode"] = (t1 - t0) * 1e3
        shard_ms: dict[int, float] = {}
        scores, pos = self.version.search(q, params.k, params.search_params, stats=shard_ms)[0]
        t2 = time.perf_counter()
        t["retrieve"] = (t2 - t1) * 1e3
        n = len(pos)
        ann_rank = np.arange(1, n + 1)
        if self._want_exact(params):
            allscores = self.exact_scores(q)
            srt = np.sort(allscores)
            exact = len(srt) - np.searchsorted(srt, allscores[pos], side="right") + 1
            exact_col = pd.array(exact, dtype="Int64")
        elif getattr(self.version.index, "kind", None) == "flat":
            exact_col = pd.array(ann_rank, dtype="Int64")
        else:
            exact_col = pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool))
        t3 = time.perf_counter()
        t["exact_rank"] = (t3 - t2) * 1e3
        elig = self.eligibility(request, pos, params)
        eligible = elig.eligible
        t4 = time.perf_counter()
        t["eligibility"] = (t4 - t3) * 1e3
        pctr, ecpm_v = self.pricing(scores, pos)
        rank = rank_by_ecpm(ecpm_v, eligible, scores.astype(np.float64))
        t5 = time.perf_counter()
        t["ranking"] = (t5 - t4) * 1e3
        slate = select_slate(rank, params.n_ranked, self.cap_key[pos], params.max_per_advertiser,
                             params.slate_size, ecpm_v, l2_normalize(self.version.ad_vectors[pos])
                             if params.mmr_lambda is not None else None, params.mmr_lambda)
        t6 = time.perf_counter()
        t["diversity"] = (t6 - t5) * 1e3
        primary = np.where(eligible, slate.reason, elig.primary)
        outcome = np.full(n, Outcome.FILTERED.value, dtype=object)
        outcome[eligible & (slate.reason == Reason.BELOW_CUTOFF.value)] = Outcome.RANKED_OUT.value
        outcome[eligible & (slate.reason == Reason.ADVERTISER_CAP.value)] = Outcome.ADVERTISER_CAP.value
        outcome[slate.final_position > 0] = Outcome.SLATE.value
        frame = pd.DataFrame({
            **{name: arr.take(pos) for name, arr in self._display.items()},
            "score": scores.astype(np.float64),
            "ann_rank": ann_rank,
            "exact_rank": exact_col,
            "failed_reasons": elig.failed_lists(),
            "primary_reason": pd.array(primary, dtype="str"),
            "pctr": pctr,
            "ecpm": ecpm_v,
            "rank_position": pd.arrays.IntegerArray(rank, rank == 0),
            "final_position": pd.arrays.IntegerArray(slate.final_position, slate.final_position == 0),
            "outcome": pd.array(outcome, dtype="str"),
            "blocking_stage": blocking_stages(outcome, rank, params.n_ranked),
            "version_pos": pos,
            "shard": self.version.shard_of(pos),
        })
        t["assemble"] = (time.perf_counter() - t6) * 1e3
        n_elig = int(eligible.sum())
        counts = {
            Stage.INVENTORY: self.n_ads,
            Stage.RETRIEVED: n,
            Stage.ELIGIBLE: n_elig,
            Stage.RANKED: min(params.n_ranked, n_elig),
            Stage.SLATE: int((slate.final_position > 0).sum()),
        }
        t["total"] = (time.perf_counter() - t0) * 1e3
        cal = {"a": self.calibration.a, "b": self.calibration.b, "n": self.calibration.n,
               "positives": self.calibration.positives, "method": self.calibration.method}
        return Trace(request, self.version.name, self.version.checksum, params, frame, counts, t, cal, q,
                     query_source, shard_timings_ms=shard_ms, backend=self.version.backend_name)


def open_engine(settings, version_name: str, **kwargs) -> FunnelEngine:
    """Load version `version_name` and the catalog from the settings' database; build the engine."""
    from core.index.versions import load_version
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    version = load_version(settings, version_name)
    db = make_engine(settings.db_url)
    try:
        catalog = load_catalog(db)
    finally:
        db.dispose()
    return FunnelEngine(version, catalog, **kwargs)
