"""Why not this ad? Follow one ad through every funnel stage with numbers.

`why_not(engine, request, ad_id, params)` runs the funnel once (`engine.run`, so the verdict is
the Trace's) and adds what the Trace alone cannot say:
- sources: per candidate source of the version, the ad's rank and score there or why that source
  cannot return it ("co_engagement: the user's last 20 clicks have no co-clicks with this ad";
  "two_tower: exact rank 5,099, K = 500"); switched-off sources say so;
- retrieval: the ad's exact score and rank among all ads versus the K-th exact score (the gap);
  whether the ANN index returned it and, if not, why: for IVF its inverted list and that list's
  rank among the query's nearest centroids versus nprobe, and the smallest nprobe that retrieves
  it (verified by searching with it); for HNSW the smallest efSearch that does (found by
  searching with doubling then bisected values); the K exact search would need; for a sharded
  version the shard that holds the ad (its IVF list is the same in every shard: one quantizer);
- eligibility: every rule's outcome with concrete values (even when the ad was not retrieved);
- ranking: pCTR, eCPM and its eCPM position versus the top-N cutoff (counterfactual when it was
  not retrieved or not eligible); with the team's own early ranker also its output and inputs
  ("pCTR 0.0123 from your ranker (ranker.onnx); inputs: candidate.score=0.61, ...");
- diversity: the sibling ads of its advertiser that took the slate slots;
- a one-line summary naming the first stage the ad did not pass, or "shown at position p".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from core.common.errors import NotFoundError
from core.common.jsonio import to_jsonable
from core.data.request import Request
from core.funnel.context import example_ids
from core.funnel.engine import FunnelEngine
from core.funnel.filters import explain_rules
from core.funnel.params import FunnelParams
from core.funnel.reasons import Reason, Stage
from core.funnel.trace import Trace, ranker_text
from core.sources.base import RetrieveOptions, SourceExplanation
from core.sources.two_tower import explanation as two_tower_explanation


@dataclass
class RetrievalVerdict:
    """Retrieval numbers for one ad. Ranks are 1-based; `k_needed` = exact rank."""

    k: int
    index_kind: str
    score: float | None = None
    exact_rank: int | None = None
    kth_score: float | None = None
    gap: float | None = None
    ann_returned: bool = False
    ann_rank: int | None = None
    shard: int | None = None  # the shard holding the ad (sharded versions)
    n_shards: int = 1
    ivf_list: int | None = None
    list_rank: int | None = None
    nprobe: int | None = None
    min_nprobe: int | None = None
    ef_search: int | None = None
    min_ef_search: int | None = None
    k_needed: int | None = None
    verified: bool | None = None
    detail: str = ""


@dataclass
class StageVerdict:
    stage: str
    passed: bool | None  # None: not reached
    detail: str


@dataclass
class WhyNot:
    """The verdict for (request, ad) under one version and one set of funnel params."""

    ad_id: str
    request: Request
    version_name: str
    shown: bool
    final_position: int | None
    blocking_stage: str | None
    summary: str
    stages: list[StageVerdict]
    retrieval: RetrievalVerdict
    eligibility: list[dict]
    ranking: dict
    diversity: dict
    timings_ms: dict = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)  # per source: SourceExplanation.to_dict()
    trace: Trace | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("trace", "request", "stages", "retrieval")}
        d["request"] = self.request.to_dict()
        d["stages"] = [asdict(s) for s in self.stages]
        d["retrieval"] = asdict(self.retrieval)
        return to_jsonable(d)


def _merged_params(engine: FunnelEngine, params: FunnelParams) -> dict:
    return {**(getattr(engine.version, "search_params", None) or {}), **(params.search_params or {})}


def _returns(engine: FunnelEngine, q: np.ndarray, k: int, sp: dict, pos: int) -> bool:
    _, found = engine.version.search(q, k, sp)[0]  # through the serving backend
    return bool((found == pos).any())


def _smallest(start: int, cap: int, ok, give_up_after_first: bool = False) -> int | None:
    """Smallest value in [start, cap] with ok(value), searching start, then doubling, then
    bisecting between the last failure and the first success (assumes rough monotonicity)."""
    if ok(start):
        return start
    if give_up_after_first:
        return None
    lo = hi = start
    while True:
        if hi >= cap:
            return None
        lo, hi = hi, min(cap, hi * 2)
        if ok(hi):
            break
    while hi - lo > 1:  # lo fails, hi succeeds
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _ivf_counterfactual(engine: FunnelEngine, q, pos: int, params: FunnelParams, rv: RetrievalVerdict) -> None:
    import faiss  # only for the index's own default nprobe when no search param sets it

    index = engine.version.index
    sp = _merged_params(engine, params)
    rv.ivf_list = int(index.list_assignments()[pos])
    coarse = index.coarse_ranking(q)
    rv.list_rank = int(np.flatnonzero(coarse == rv.ivf_list)[0]) + 1
    rv.nprobe = int(sp.get("nprobe") or faiss.extract_index_ivf(index.faiss_index).nprobe)
    if rv.ann_returned:
        return
    # IVF-Flat scores are exact: below the list's rank the ad is never probed, and at that rank
    # it is retrieved iff it beats the K-th of the probed ads; more lists only add competitors.
    # Compressed codes (PQ) approximate scores, so there we keep searching.
    rv.min_nprobe = _smallest(rv.list_rank, index.nlist,
                              lambda n: _returns(engine, q, params.k, {**sp, "nprobe": n}, pos),
                              give_up_after_first=rv.index_kind == "ivf")
    rv.verified = rv.min_nprobe is not None


def _hnsw_counterfactual(engine: FunnelEngine, q, pos: int, params: FunnelParams, rv: RetrievalVerdict) -> None:
    import faiss

    index = engine.version.index
    sp = _merged_params(engine, params)
    try:
        default_ef = int(faiss.downcast_index(index.faiss_index).hnsw.efSearch)
    except AttributeError:
        default_ef = 16  # FAISS's default
    rv.ef_search = int(sp.get("efSearch") or default_ef)
    if rv.ann_returned:
        return
    # The current efSearch failed: search upwards from the next value (note that FAISS returns
    # fewer than k results when efSearch < k, so efSearch below K is a common cause).
    start = rv.ef_search + 1
    rv.min_ef_search = _smallest(start, max(index.ntotal, start),
                                 lambda ef: _returns(engine, q, params.k, {**sp, "efSearch": ef}, pos))
    rv.verified = rv.min_ef_search is not None


def _retrieval(engine: FunnelEngine, trace: Trace, pos: int, row, params: FunnelParams) -> RetrievalVerdict:
    kind = getattr(engine.version.index, "kind", "flat")
    rv = RetrievalVerdict(k=params.k, index_kind=kind)
    allscores = engine.exact_scores(trace.query)
    s = float(allscores[pos])
    rv.score, rv.exact_rank = s, int((allscores > s).sum()) + 1
    rv.k_needed = rv.exact_rank
    if params.k <= len(allscores):
        rv.kth_score = float(-np.partition(-allscores, params.k - 1)[params.k - 1])
        rv.gap = s - rv.kth_score
    rv.ann_returned = row is not None and not pd.isna(row["ann_rank"])
    rv.ann_rank = int(row["ann_rank"]) if rv.ann_returned else None
    rv.n_shards = int(getattr(engine.version, "n_shards", 1))
    if rv.n_shards > 1:
        rv.shard = int(engine.version.shard_of([pos])[0])
    if kind in ("ivf", "ivfpq"):
        _ivf_counterfactual(engine, trace.query, pos, params, rv)
    elif kind == "hnsw":
        _hnsw_counterfactual(engine, trace.query, pos, params, rv)
    rv.detail = _retrieval_detail(rv)
    return rv


def _retrieval_detail(rv: RetrievalVerdict) -> str:
    head = f"exact rank {rv.exact_rank} (score {rv.score:.4f}"
    head += f" vs K-th {rv.kth_score:.4f}, gap {rv.gap:+.4f})" if rv.kth_score is not None else ")"
    if rv.shard is not None:
        where = f" in IVF list {rv.ivf_list}" if rv.ivf_list is not None else ""
        head += f"; held by shard {rv.shard} of {rv.n_shards}{where}"
    if rv.ann_returned:
        return f"retrieved at ANN rank {rv.ann_rank} of K={rv.k}; {head}"
    parts = [f"not retrieved; {head}"]
    if rv.exact_rank > rv.k:
        parts.append(f"exact search would need K >= {rv.k_needed}")
    if rv.list_rank is not None:
        probe = f"its IVF list {rv.ivf_list} ranks {rv.list_rank} among the query's nearest centroids, nprobe={rv.nprobe}"
        parts.append(probe)
        if rv.min_nprobe is not None:
            parts.append(f"nprobe={rv.min_nprobe} retrieves it (verified)")
        else:
            parts.append("no nprobe retrieves it at this K")
    if rv.ef_search is not None:
        below = f" (below K={rv.k}: HNSW then returns fewer than K candidates)" if rv.ef_search < rv.k else ""
        parts.append(f"efSearch={rv.ef_search}{below}")
        parts.append(f"efSearch={rv.min_ef_search} retrieves it (verified)" if rv.min_ef_search is not None
                     else "no efSearch up to the catalog size retrieves it at this K")
    return "; ".join(parts)


def why_not(engine: FunnelEngine, request: Request, ad_id: str, params: FunnelParams | None = None) -> WhyNot:
    """Follow `ad_id` through every stage of `request`'s funnel (see the module docstring)."""
    params = engine.resolve_params(params)  # the version's learned quotas
    t0 = time.perf_counter()
    ad_id = str(ad_id)
    pos = int(engine.version.position_of([ad_id])[0])
    if not engine.in_catalog(ad_id) and pos < 0:
        raise NotFoundError(
            f"ad {ad_id!r} is in neither the catalog nor version {engine.version.name!r}; valid ids include "
            f"{example_ids(engine.version.ad_ids)} (`adlens inspect --version V --user U` lists retrieved ads)")
    if not engine.is_known_user(request.user_id):
        raise NotFoundError(
            f"user {request.user_id!r} has no profile and no impressions; valid ids include "
            f"{example_ids(engine.user_ids)} (`adlens status` shows the table counts)")
    trace = engine.run(request, params)
    t1 = time.perf_counter()
    if pos < 0:
        msg = f"not in version {engine.version.name} (the ad was added to the catalog after it was built)"
        empty = RetrievalVerdict(k=params.k, index_kind=getattr(engine.version.index, "kind", "?"), detail=msg)
        return WhyNot(ad_id, request, engine.version.name, False, None, Stage.INVENTORY.value, msg,
                      [StageVerdict(Stage.INVENTORY.value, False, msg)], empty, [], {}, {},
                      {"run": (t1 - t0) * 1e3, "total": (time.perf_counter() - t0) * 1e3}, trace)
    hit = np.flatnonzero(trace.candidates["version_pos"].to_numpy() == pos)
    row = trace.candidates.iloc[hit[0]] if len(hit) else None
    retrieval = _retrieval(engine, trace, pos, row, params)
    sources = source_explanations(engine, request, pos, params, trace.query, retrieval)
    t2 = time.perf_counter()
    ctx = engine.request_context(request)
    one = np.array([pos], np.int64)
    env = engine.field_env(request, one, {"score": np.array([retrieval.score], np.float64)})
    rules = explain_rules(engine.facts, pos, ctx, engine.active_rules(params), engine.funnel.rules, env)
    failed = [r for r in rules if r["enabled"] and r["failed"]]
    ranking = _ranking(engine, trace, pos, row, params, retrieval, eligible=not failed, request=request)
    late = _ranking_rules(engine, request, pos, params, retrieval, ranking)
    rules += late
    late_failed = [r for r in late if r["enabled"] and r["failed"]]
    diversity = _diversity(engine, trace, pos, params)
    stages, blocking, summary = _stages(trace, row, retrieval, failed, ranking, diversity, params, sources,
                                        late_failed)
    t3 = time.perf_counter()
    timings = {"run": (t1 - t0) * 1e3, "retrieval": (t2 - t1) * 1e3, "rest": (t3 - t2) * 1e3,
               "total": (t3 - t0) * 1e3}
    final = int(row["final_position"]) if row is not None and not pd.isna(row["final_position"]) else None
    return WhyNot(ad_id, request, engine.version.name, final is not None, final, blocking, summary, stages,
                  retrieval, rules, ranking, diversity, timings, [s.to_dict() for s in sources], trace)


def source_explanations(engine: FunnelEngine, request: Request, pos: int, params: FunnelParams,
                        query: np.ndarray | None = None, retrieval: RetrievalVerdict | None = None
                        ) -> list[SourceExplanation]:
    """Per source of the version: where the ad at version position `pos` stands for `request`.
    With the two_tower run's `retrieval` verdict, two_tower's answer reuses its exact and ANN
    ranks (no second scan of the catalog)."""
    opts = RetrieveOptions(queries=None if query is None else query[None, :], search_params=params.search_params)
    out = []
    for name, src in engine.sources.items():
        if name == "two_tower" and retrieval is not None and params.enabled(name):
            e = two_tower_explanation(retrieval.ann_rank, retrieval.exact_rank, retrieval.score, params.k)
        else:
            e = src.explain(request, pos, params.quota(name), opts)
        if not params.enabled(name):
            e = SourceExplanation(name, e.rank, e.score, f"{name}: switched off for this request ({e.reason})")
        out.append(e)
    return out


def _ranking_rules(engine, request, pos, params, rv, ranking) -> list[dict]:
    """The funnel's ranking-stage rules for the ad (they read its pCTR and eCPM)."""
    if not engine.funnel.ranking:
        return []
    cand = {"score": np.array([rv.score], np.float64), "pctr": np.array([ranking["pctr"]], np.float64),
            "ecpm": np.array([ranking["ecpm"]], np.float64)}
    env = engine.field_env(request, np.array([pos], np.int64), cand)
    on = tuple(c for c in engine.funnel.ranking_order if c not in params.disabled_rules)
    rows = explain_rules(engine.facts, pos, env.ctx, on, engine.funnel.ranking, env)
    return [{**r, "stage": Stage.RANKED.value} for r in rows]


def _ranking(engine, trace, pos, row, params, rv, eligible: bool, request: Request | None = None) -> dict:
    c = trace.candidates
    rank = c["rank_position"].to_numpy(dtype=np.float64, na_value=np.nan)
    ecpm_all = c["ecpm"].to_numpy(dtype=np.float64)
    elig = ~np.isnan(rank)
    own = {}
    if row is not None:
        pctr, ecpm_v = float(row["pctr"]), float(row["ecpm"])
        if "ranker_score" in c:
            own = {"ranker_score": float(row["ranker_score"]), "ranker_inputs": dict(row["ranker_inputs"])}
    else:  # not retrieved: priced as if no source had returned it
        priced = engine.price(np.array([rv.score]), np.array([pos]), request=request)
        pctr, ecpm_v = float(priced.pctr[0]), float(priced.ecpm[0])
        if priced.raw is not None:
            own = {"ranker_score": float(priced.raw[0]),
                   "ranker_inputs": dict(zip(engine.ranker.features, priced.inputs[0].astype(float).tolist()))}
    if own:
        own["ranker"] = trace.ranker
        own["ranker_text"] = ranker_text(trace.ranker, pctr, ecpm_v, own["ranker_score"], own["ranker_inputs"])
    if row is not None and not pd.isna(row["rank_position"]):
        position, hypothetical = int(row["rank_position"]), False
    else:  # where it would rank among this request's eligible candidates
        position, hypothetical = int((ecpm_all[elig] > ecpm_v).sum()) + 1, True
    at_cutoff = np.flatnonzero(rank == params.n_ranked)
    cutoff = float(ecpm_all[at_cutoff[0]]) if len(at_cutoff) else None
    return {"pctr": pctr, "ecpm": ecpm_v, "rank_position": position, "hypothetical": hypothetical,
            "eligible": eligible, "n_ranked": params.n_ranked, "n_eligible": int(elig.sum()),
            "cutoff_ecpm": cutoff, "bid": float(engine.bid[pos]), "bid_type": str(engine.bid_type[pos]),
            "formula": "CPC: 1000 x pCTR x bid; CPM: bid; pCTR = sigmoid(sum of coefficient x feature + intercept)"
            if not own else _own_formula(trace.ranker), "calibration": trace.calibration, **own}


def _own_formula(ranker: dict) -> str:
    if ranker.get("output") == "score":
        return "your ranker's score is the ranking value (eCPM column); pCTR is not known"
    return "CPC: 1000 x pCTR x bid; CPM: bid; pCTR = your ranker's output"


def _diversity(engine, trace, pos, params) -> dict:
    c = trace.candidates
    vpos = c["version_pos"].to_numpy()
    sib = (engine.cap_key[vpos] == engine.cap_key[pos]) & (vpos != pos)
    final = c["final_position"].to_numpy(dtype=np.float64, na_value=np.nan)
    in_slate = np.flatnonzero(sib & ~np.isnan(final))
    in_slate = in_slate[np.argsort(final[in_slate])]
    ecpm_all = c["ecpm"].to_numpy()
    return {"advertiser_id": engine.advertiser_id[pos], "advertiser_name": engine.advertiser_name[pos],
            "max_per_advertiser": params.max_per_advertiser,
            "siblings_in_slate": [{"ad_id": str(engine.version.ad_ids[vpos[i]]), "title": engine.title[vpos[i]],
                                   "final_position": int(final[i]), "ecpm": float(ecpm_all[i])} for i in in_slate],
            "siblings_retrieved": int(sib.sum())}


def _retrieved_detail(row, rv, sources) -> str:
    if len(sources) <= 1:
        return rv.detail
    if row is not None:
        return "found by " + ", ".join(f"{s.source} (rank {s.rank:,})" for s in sources if s.found)
    return "not found by any source: " + "; ".join(s.reason for s in sources)


def _stages(trace, row, rv, failed, ranking, diversity, params, sources=(), late_failed=()):
    stages = [StageVerdict(Stage.INVENTORY.value, True, f"in version {trace.version_name}")]
    retrieved = _retrieved_detail(row, rv, sources)
    stages.append(StageVerdict(Stage.RETRIEVED.value, row is not None, retrieved))
    elig_detail = ("passes every enabled rule" if not failed else
                   "; ".join(f"{r['code']}: {r['detail']}" for r in failed))
    rk = ranking
    cutoff = f"cutoff N={params.n_ranked}" + (f" (eCPM {rk['cutoff_ecpm']:.4f})" if rk["cutoff_ecpm"] is not None else "")
    head = (f"{rk['ranker_text']}; eCPM {rk['ecpm']:.4f}" if rk.get("ranker_text") else
            f"pCTR {rk['pctr']:.4f}, eCPM {rk['ecpm']:.4f}")
    rank_detail = (f"{head} ({rk['bid_type']} bid {rk['bid']:g}); "
                   + (f"would rank {rk['rank_position']} among the {rk['n_eligible']} eligible candidates if it "
                      f"reached this stage" if rk["hypothetical"] else
                      f"ranks {rk['rank_position']} of {rk['n_eligible']} eligible") + f"; {cutoff}")
    sibs = diversity["siblings_in_slate"]
    sib_txt = ", ".join(f"{s['ad_id']} (#{s['final_position']})" for s in sibs) or "none"
    adv = diversity["advertiser_id"]
    adv_txt = "no advertiser (the ad is its own group)" if adv is None or pd.isna(adv) else f"advertiser {adv}"
    div_detail = f"{adv_txt}: cap {params.max_per_advertiser}, slots taken by {sib_txt}"
    if row is None:
        hint = f" (it would also fail {', '.join(r['code'] for r in failed)})" if failed else ""
        stages += [StageVerdict(Stage.ELIGIBLE.value, None if not failed else False, elig_detail),
                   StageVerdict(Stage.RANKED.value, None, rank_detail),
                   StageVerdict(Stage.SLATE.value, None, div_detail)]
        return stages, Stage.RETRIEVED.value, f"blocked at retrieval: {retrieved}{hint}"
    stages.append(StageVerdict(Stage.ELIGIBLE.value, not failed, elig_detail))
    if failed:
        first = failed[0]
        stages += [StageVerdict(Stage.RANKED.value, None, rank_detail), StageVerdict(Stage.SLATE.value, None, div_detail)]
        more = f" (+{len(failed) - 1} more rule(s))" if len(failed) > 1 else ""
        return stages, Stage.ELIGIBLE.value, f"filtered: {first['code']} — {first['detail']}{more}"
    if late_failed:  # a ranking-stage rule of the funnel definition removed it
        first = late_failed[0]
        detail = "; ".join(f"{r['code']}: {r['detail']}" for r in late_failed)
        stages += [StageVerdict(Stage.RANKED.value, False, f"{detail}; {rank_detail}"),
                   StageVerdict(Stage.SLATE.value, None, div_detail)]
        return stages, Stage.RANKED.value, f"ranked out: {first['code']} — {first['detail']}"
    ranked = int(row["rank_position"]) <= params.n_ranked
    stages.append(StageVerdict(Stage.RANKED.value, bool(ranked), rank_detail))
    if not ranked:
        stages.append(StageVerdict(Stage.SLATE.value, None, div_detail))
        return stages, Stage.RANKED.value, (f"ranked out: eCPM rank {rk['rank_position']} > N={params.n_ranked} "
                                            f"(eCPM {rk['ecpm']:.4f} vs cutoff {rk['cutoff_ecpm']:.4f})")
    if row["outcome"] == "slate":
        stages.append(StageVerdict(Stage.SLATE.value, True, f"slate position {int(row['final_position'])}; {div_detail}"))
        return stages, None, f"shown at position {int(row['final_position'])}"
    if row["primary_reason"] == Reason.ADVERTISER_CAP.value:
        stages.append(StageVerdict(Stage.SLATE.value, False, div_detail))
        return stages, Stage.SLATE.value, (f"advertiser cap: {diversity['advertiser_id']} already has "
                                           f"{params.max_per_advertiser} slot(s): {sib_txt}")
    full = f"slate of {params.slate_size} filled by higher-eCPM ads (eCPM rank {rk['rank_position']})"
    stages.append(StageVerdict(Stage.SLATE.value, False, full))
    return stages, Stage.SLATE.value, f"slate full: {full}"
