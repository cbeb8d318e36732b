"""The funnel for one request: sources -> merge -> eligibility -> early ranking -> diversity -> slate.

`FunnelEngine(version, catalog)` is built once per (version, catalog): it holds the feature store,
the per-ad eligibility arrays aligned to the version's positions, the frequency-cap index, the
version's candidate sources (core.sources) and the early ranker: the team's own when the version
has one (core.funnel.rankers), else AdLens's pCTR model (core.funnel.pctr). It is immutable afterwards (its arrays are read-only), so one engine can
serve every dashboard session and thread. `engine.run(request, params) -> Trace` is a pure
simulation: it never touches the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd

from core.common.timer import StageTimer
from core.data.features import FeatureStore
from core.data.request import Request, RequestBatch, requests_from_impressions
from core.data.vocab import UNKNOWN
from core.funnel.ad_facts import AdFacts, FrequencyIndex, RequestContext
from core.funnel.context import default_request, usual_contexts
from core.funnel.definition import Funnel, check_quota_sources, compile_funnel, version_definition
from core.funnel.fields import Env, FieldTable
from core.funnel.filters import EligibilityResult, active_rules, evaluate
from core.funnel.params import EXACT_RANKS_AUTO_MAX, FunnelParams
from core.funnel.pctr import PctrModel, feature_matrix, feature_names, fit_pctr
from core.funnel.pctr_cache import PctrCache
from core.funnel.ranker_features import RankerInputs
from core.funnel.rankers import EarlyRanker, version_ranker
from core.funnel.ranking import (
    DEFAULT_BID,
    DEFAULT_BID_TYPE,
    ecpm,
    rank_by_ecpm,
    select_slate,
)
from core.funnel.reasons import Outcome, Reason, Stage, blocking_stages
from core.funnel.rule_list import check_disabled, rule_list
from core.funnel.trace import Trace
from core.index.ann import pair_similarity, similarity
from core.sources.base import RetrieveOptions
from core.sources.merge import MergedCandidates, merge
from core.sources.registry import load_sources
from core.store.catalog import Catalog
from core.tower.query_encoder import l2_normalize

CALIBRATION_SAMPLES = 5_000
ADLENS_RANKER = {"kind": "adlens", "output": "probability",
                 "describe": "AdLens's pCTR model (logistic regression on logged impressions)"}


@dataclass(frozen=True)
class Priced:
    """Early ranking's values for some candidates: pCTR (NaN for a "score" ranker), eCPM (the
    ranking value), and with the team's ranker its raw output and its input matrix."""

    pctr: np.ndarray
    ecpm: np.ndarray
    raw: np.ndarray | None = None
    inputs: np.ndarray | None = None


def _obj(rows: pd.DataFrame, col: str, default) -> np.ndarray:
    s = rows[col].astype(object)
    out = s.where(s.notna(), default).to_numpy(dtype=object)
    out.setflags(write=False)
    return out


class FunnelEngine:
    """Everything needed to run requests against one version and one catalog (read-only)."""

    def __init__(self, version, catalog: Catalog, *, calibration_samples: int = CALIBRATION_SAMPLES,
                 seed: int = 0, funnel_definition=None, pctr_cache: PctrCache | None = None,
                 ranker: EarlyRanker | None = None):
        """`pctr_cache`: where the fitted pCTR model is kept (core.funnel.pctr_cache; the caller
        vouches that it names this version and this catalog). `ranker`: the early ranker (default:
        the version's own, core.funnel.rankers, else AdLens's pCTR model)."""
        t0 = time.perf_counter()
        self.version = version
        self.catalog = catalog
        self.features = FeatureStore(catalog, version.ad_ids, version.ad_text_vectors)
        self.facts = AdFacts.build(catalog, version.ad_ids)
        self.frequency = FrequencyIndex(catalog, self.facts.campaign_ids)
        # the version's own funnel definition (core.funnel.definition), or one given for a what-if
        defn = funnel_definition if funnel_definition is not None else version_definition(version)
        self.ranker = ranker if ranker is not None else version_ranker(version)
        self.fields = FieldTable.build(self.facts, catalog) if defn is not None or self.ranker else None
        self.funnel: Funnel = compile_funnel(defn, self.fields)
        self.rule_infos = rule_list(defn)  # every rule in order: code, stage, kind, description
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
        comms = catalog.communities
        self._tier = dict(zip(comms["community_id"], comms["safety_tier"])) if len(comms) else {}
        self.usual = usual_contexts(catalog)
        self.user_ids = self.usual.user_ids
        self._catalog_ads = frozenset(catalog.ads["ad_id"])
        for arr in (self.cap_key, self.bid, self.bid_type):
            arr.setflags(write=False)
        self.sources = load_sources(version, self.features)
        check_quota_sources(self.funnel, tuple(self.sources), version.name)
        self.ranker_inputs = None if self.ranker is None else RankerInputs(
            self.ranker.features, self.fields, tuple(self.sources), where=f"ranker {self.ranker.describe()}")
        # AdLens's pCTR model is fitted only when it ranks (nothing else reads it)
        self.calibration = None if self.ranker is not None else \
            self._cached_calibration(calibration_samples, seed, pctr_cache)
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

    def _cached_calibration(self, n: int, seed: int, cache: PctrCache | None) -> PctrModel:
        if cache is None:
            return self._calibrate(n, seed)
        defaults = self.resolve_params(None)  # the quotas _calibrate replays at
        key = cache.key(n=n, seed=seed, features=list(feature_names(tuple(self.sources))),
                        quotas={name: defaults.quota(name) for name in self.sources})
        model = cache.load(key)
        if model is None:
            model = self._calibrate(n, seed)
            cache.save(key, model)
        return model

    def _calibrate(self, n: int, seed: int) -> PctrModel:
        """Fit the pCTR model on a seeded sample of logged impressions (see core.funnel.pctr)."""
        names = feature_names(tuple(self.sources))
        imps = self.catalog.impressions
        if not len(imps) or n <= 0:
            return fit_pctr(np.empty((0, len(names))), np.empty(0), names)
        pos = self.features.ad_positions(imps["ad_id"].to_numpy())
        keep = np.flatnonzero(pos >= 0)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(keep, size=min(n, len(keep)), replace=False)) if len(keep) else keep
        sub = imps.iloc[pick]
        if not len(sub):
            return fit_pctr(np.empty((0, len(names))), np.empty(0), names)
        frame = requests_from_impressions(sub, self.catalog.users)
        shown = pos[pick]
        q = self.version.encoder.encode_requests(frame, self.features)
        s = pair_similarity(self.version.ad_vectors[shown], q, self.metric)
        found, scores = {}, {}
        clicked = sub["clicked"].astype(bool).to_numpy()
        # replay each logged request through every source, unless the sample is one class (every
        # impression clicked, as in rating logs): then the model is a constant rate whatever the features
        if names != ("score",) and 0 < clicked.sum() < len(clicked):
            defaults = self.resolve_params(None)
            for name, src in self.sources.items():
                got, sc = src.retrieve(frame, defaults.quota(name), RetrieveOptions(queries=q))
                hit = got == shown[:, None]
                found[name] = hit.any(axis=1)
                scores[name] = np.where(found[name], (sc * hit).sum(axis=1), np.nan)
        X = feature_matrix(names, s, found, scores)
        return fit_pctr(X, clicked, names)

    def resolve_params(self, params: FunnelParams | None) -> FunnelParams:
        """`params` (default: FunnelParams()) over this version's quotas: the learned ones, if it
        has any, under its funnel definition's [quotas] (core.funnel.definition)."""
        counts = getattr(getattr(self.version, "manifest", None), "quota_counts", None)
        return (params or FunnelParams()).over_version_quotas({**(counts or {}), **self.funnel.quotas} or None)

    def request_context(self, request: Request) -> RequestContext:
        tier = self._tier.get(request.community_id) if request.community_id is not None else None
        return RequestContext.build(request, self._age.get(request.user_id, UNKNOWN), tier, self.frequency)

    def encode(self, request: Request) -> np.ndarray:
        """The request's query vector (d,) from the version's encoder."""
        return self.version.encoder.encode(RequestBatch.of([request]), self.features)[0]

    def describe_query(self, request: Request) -> dict:
        """What made the request's query vector: the encoder kind, plus what it used when it says
        (e.g. which imported request-vectors row, or that none matched)."""
        return self._describe(RequestBatch.of([request]))

    def _describe(self, requests: pd.DataFrame | RequestBatch) -> dict:
        detail = self.version.encoder.describe(requests, self.features)
        return {"encoder": self.version.encoder.kind, **(detail[0] if detail else {})}

    def active_rules(self, params: FunnelParams) -> tuple[str, ...]:
        """The eligibility rules `params` enables, in order, out of this engine's funnel."""
        check_disabled(params.disabled_rules, self.rule_infos)
        order = self.funnel.all_order if params.rule_order is None else params.rule_order
        off = tuple(dict.fromkeys((*self.funnel.off, *params.disabled_rules)))
        return active_rules(order, tuple(c for c in off if c in self.funnel.rules or c not in self.funnel.ranking),
                            known=tuple(self.funnel.rules))

    def field_env(self, request: Request, positions: np.ndarray, candidate: dict | None = None) -> Env | None:
        """The expression rules' field cache for these candidates (None: only built-in rules)."""
        if self.fields is None:
            return None
        return Env(self.fields, np.asarray(positions, np.int64), self.request_context(request), candidate or {})

    def eligibility(self, request: Request, positions: np.ndarray, params: FunnelParams,
                    candidate: dict | None = None) -> EligibilityResult:
        """Every enabled eligibility rule on every candidate; `candidate` holds per-candidate
        values expression rules may read (e.g. {"score": tower similarities})."""
        ctx = self.request_context(request)
        env = None if self.fields is None else Env(self.fields, np.asarray(positions, np.int64), ctx, candidate or {})
        return evaluate(self.facts, positions, ctx, self.active_rules(params), self.funnel.rules, env)

    def ranking_rules(self, request: Request, positions: np.ndarray, params: FunnelParams,
                      candidate: dict) -> EligibilityResult | None:
        """The funnel's ranking-stage rules (they read pCTR and eCPM), or None when it has none."""
        codes = tuple(c for c in self.funnel.ranking_order if c not in params.disabled_rules)
        if not codes:
            return None
        env = self.field_env(request, positions, candidate)
        return evaluate(self.facts, positions, env.ctx, codes, self.funnel.ranking, env)

    @property
    def ranker_info(self) -> dict:
        """What ranks early: the team's ranker (kind, file, fingerprint, output kind) or AdLens's."""
        return dict(ADLENS_RANKER) if self.ranker is None else {**self.ranker.info(), "source": "your ranker"}

    def pricing(self, scores: np.ndarray, positions: np.ndarray, found: dict | None = None,
                source_scores: dict | None = None, *, request: Request | None = None,
                ranks: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(pCTR, eCPM) for candidates with these tower similarities and, per source, found-by
        flags, scores and ranks (missing: not found by that source); see `price`."""
        priced = self.price(scores, positions, found, source_scores, request=request, ranks=ranks)
        return priced.pctr, priced.ecpm

    def price(self, scores: np.ndarray, positions: np.ndarray, found: dict | None = None,
              source_scores: dict | None = None, *, request: Request | None = None,
              ranks: dict | None = None) -> Priced:
        """Early ranking's values: AdLens's pCTR model (core.funnel.pctr) x bid, or the version's
        ranker on its features (core.funnel.ranker_features; needs the `request`)."""
        positions = np.asarray(positions, np.int64)
        scores = np.asarray(scores, np.float64)
        if self.ranker is None:
            X = feature_matrix(self.calibration.features, scores, found or {}, source_scores or {})
            p = self.calibration.pctr(X)
            return Priced(p, ecpm(p, self.bid[positions], self.bid_type[positions]))
        if request is None:
            raise TypeError("pricing with the version's own ranker needs the request (its features read it)")
        env = Env(self.fields, positions, self.request_context(request), {"score": scores})
        X = self.ranker_inputs.matrix(env, scores, found, ranks, source_scores)
        raw = self.ranker.score(X)
        if self.ranker.output == "score":
            return Priced(np.full(len(raw), np.nan), raw, raw, X)
        return Priced(raw, ecpm(raw, self.bid[positions], self.bid_type[positions]), raw, X)

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
    def retrieve(self, requests: pd.DataFrame | RequestBatch, q: np.ndarray, params: FunnelParams,
                 timer: StageTimer | None = None, shard_ms: dict | None = None) -> MergedCandidates:
        """Every enabled source's top quota for the one request in `requests`, merged with attribution
        (each source's time is lapped as `retrieve:<name>`, the union as `merge`; the ANN's
        per-shard times go into `shard_ms`)."""
        opts = RetrieveOptions(queries=q[None, :], search_params=params.search_params, stats=shard_ms)
        results = {}
        for name, src in self.sources.items():
            if params.enabled(name):
                pos, sc = src.retrieve(requests, params.quota(name), opts)
                results[name] = (pos[0], sc[0])
                if timer:
                    timer.lap(f"retrieve:{name}")
        merged = merge(results)
        if timer:
            timer.lap("merge")
        return merged

    def _tower_scores(self, q: np.ndarray, merged: MergedCandidates) -> np.ndarray:
        """The tower similarity of every candidate: the ANN score where two_tower found it (as
        before sources existed), the exact inner product for the others."""
        found = merged.found("two_tower")
        if found.all():
            return merged.score["two_tower"]
        out = np.empty(len(merged), np.float64)
        if "two_tower" in merged.score:
            out[found] = merged.score["two_tower"][found]
        rest = merged.positions[~found]  # only the other sources' ads need the inner product
        out[~found] = pair_similarity(self.version.ad_vectors[rest], np.broadcast_to(q, (len(rest), len(q))),
                                      self.metric)
        return out

    def _exact_ranks(self, q: np.ndarray, merged: MergedCandidates, params: FunnelParams) -> pd.arrays.IntegerArray:
        n = len(merged)
        if self._want_exact(params):
            allscores = self.exact_scores(q)
            srt = np.sort(allscores)
            return pd.array(len(srt) - np.searchsorted(srt, allscores[merged.positions], side="right") + 1,
                            dtype="Int64")
        ann = merged.rank.get("two_tower", np.zeros(n, np.int64))
        if getattr(self.version.index, "kind", None) == "flat":  # a Flat index is exact
            return pd.arrays.IntegerArray(ann, ann == 0)
        return pd.arrays.IntegerArray(np.zeros(n, np.int64), np.ones(n, bool))

    def run(self, request: Request, params: FunnelParams | None = None) -> Trace:
        """Simulate `request` through every stage and return its Trace (never writes anything)."""
        params = self.resolve_params(params)
        timer = StageTimer()
        batch = RequestBatch.of([request])
        q = self.version.encoder.encode(batch, self.features)[0]
        query_source = self._describe(batch)
        timer.lap("encode")
        shard_ms: dict[int, float] = {}
        merged = self.retrieve(batch, q, params, timer, shard_ms)
        pos = merged.positions
        scores = self._tower_scores(q, merged)
        exact_col = self._exact_ranks(q, merged, params)
        timer.lap("exact_rank")
        elig = self.eligibility(request, pos, params, {"score": scores})
        eligible = elig.eligible
        timer.lap("eligibility")
        priced = self.price(scores, pos, {n: merged.found(n) for n in merged.ran}, merged.score,
                            request=request, ranks=merged.rank)
        pctr, ecpm_v = priced.pctr, priced.ecpm
        late = self.ranking_rules(request, pos, params, {"score": scores, "pctr": pctr, "ecpm": ecpm_v})
        rankable = eligible if late is None else eligible & late.eligible
        rank = rank_by_ecpm(ecpm_v, rankable, scores)
        timer.lap("ranking")
        slate = select_slate(rank, params.n_ranked, self.cap_key[pos], params.max_per_advertiser,
                             params.slate_size, ecpm_v, l2_normalize(self.version.ad_vectors[pos])
                             if params.mmr_lambda is not None else None, params.mmr_lambda)
        timer.lap("diversity")
        # the candidates frame is built on first use (Trace.candidates), outside the funnel's timings
        if params.rule_order is None:  # the Trace says which order ran
            params = replace(params, rule_order=self.funnel.all_order)
        table = partial(self._assemble, merged, scores, exact_col, elig, pctr, ecpm_v, rank, slate, params, late,
                        priced)
        n_elig = int(eligible.sum())
        counts = {
            Stage.INVENTORY: self.n_ads,
            Stage.RETRIEVED: len(pos),
            Stage.ELIGIBLE: n_elig,
            Stage.RANKED: min(params.n_ranked, int(rankable.sum())),
            Stage.SLATE: int((slate.final_position > 0).sum()),
        }
        return Trace(request, self.version.name, self.version.checksum, params, table, counts, timer.done(),
                     {} if self.calibration is None else self.calibration.to_dict(), q, query_source,
                     shard_timings_ms=shard_ms, backend=self.version.backend_name, source_names=tuple(self.sources),
                     sources_ran=merged.ran, ranker=self.ranker_info)

    def _assemble(self, merged: MergedCandidates, scores, exact_col, elig, pctr, ecpm_v, rank, slate,
                  params: FunnelParams, late: EligibilityResult | None = None,
                  priced: Priced | None = None) -> pd.DataFrame:
        pos = merged.positions
        n = len(pos)
        eligible = elig.eligible
        primary = np.where(eligible, slate.reason, elig.primary)
        outcome = np.full(n, Outcome.FILTERED.value, dtype=object)
        failed = elig.failed_lists()
        if late is not None:  # ranking-stage rules: an eligible ad they fail is ranked out
            dropped = eligible & ~late.eligible
            primary = np.where(dropped, late.primary, primary)
            outcome[dropped] = Outcome.RANKED_OUT.value
            failed = [a + b if ok else a for a, b, ok in zip(failed, late.failed_lists(), eligible.tolist())]
        outcome[eligible & (slate.reason == Reason.BELOW_CUTOFF.value)] = Outcome.RANKED_OUT.value
        outcome[eligible & (slate.reason == Reason.ADVERTISER_CAP.value)] = Outcome.ADVERTISER_CAP.value
        outcome[slate.final_position > 0] = Outcome.SLATE.value
        ann = merged.rank.get("two_tower", np.zeros(n, np.int64))
        columns = {
            **{name: arr.take(pos) for name, arr in self._display.items()},
            "score": scores,
            "ann_rank": pd.arrays.IntegerArray(ann, ann == 0),
            "exact_rank": exact_col,
            "failed_reasons": failed,
            "primary_reason": pd.array(primary, dtype="str"),
            "pctr": pctr,
            "ecpm": ecpm_v,
            "rank_position": pd.arrays.IntegerArray(rank, rank == 0),
            "final_position": pd.arrays.IntegerArray(slate.final_position, slate.final_position == 0),
            "outcome": pd.array(outcome, dtype="str"),
            "blocking_stage": blocking_stages(outcome, rank, params.n_ranked),
            "version_pos": pos,
            "shard": self.version.shard_of(pos),
            "sources": merged.source_sets(),
        }
        for name in self.sources:
            r = merged.rank.get(name, np.zeros(n, np.int64))
            columns[f"rank_{name}"] = pd.arrays.IntegerArray(r, r == 0)
            columns[f"score_{name}"] = merged.score.get(name, np.full(n, np.nan))
        if priced is not None and priced.inputs is not None:  # the team's ranker: its output and inputs
            columns["ranker_score"] = priced.raw
            names = self.ranker.features
            columns["ranker_inputs"] = [dict(zip(names, row)) for row in priced.inputs.astype(np.float64).tolist()]
        return pd.DataFrame(columns)


def open_engine(settings, version_name: str, **kwargs) -> FunnelEngine:
    """Load version `version_name` and the catalog from the settings' database; build the engine
    (the impressions snapshot and the fitted pCTR model kept in the workspace's cache)."""
    from core.funnel.pctr_cache import pctr_cache
    from core.index.versions import load_version
    from core.store.catalog import catalog_stamp, load_catalog
    from core.store.db import make_engine

    version = load_version(settings, version_name)
    db = make_engine(settings.db_url)
    try:
        stamp = catalog_stamp(db)
        catalog = load_catalog(db, snapshot_dir=settings.cache_dir, stamp=stamp)
    finally:
        db.dispose()
    kwargs.setdefault("pctr_cache", pctr_cache(settings.cache_dir, version, settings.db_url, stamp))
    return FunnelEngine(version, catalog, **kwargs)
