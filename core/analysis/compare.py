"""Compare two versions on the same requests: what changes if we ship B instead of A, for whom, why.

Both versions run the same seeded sample of users in their usual contexts (core.funnel.context
.default_request) through the full funnel (core.funnel.engine.FunnelEngine); every metric is derived
from the two Traces. Versions may differ in tower, index type or catalog: ads present in only one
version are reported, not crashed on. Per version, `sources` gives each candidate source's share
of the slate, the slate ads only it found, and its recall of held-out clicks beside the merged
set's (core.analysis.sources). Versions that differ only in their funnel definition are a normal
comparison: `funnels` lists the rules added, removed and changed, and `rule_attribution` the share
of slates each of them changed (core.analysis.rule_diff).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.analysis.rank_metrics import gini, jaccard, overlap_at_k, rbo, total_variation
from core.analysis.rule_diff import funnel_diff, rule_attribution
from core.analysis.sources import slate_attribution, source_recall
from core.common.jsonio import to_jsonable
from core.common.progress import Progress, report
from core.data.request import Request, requests_from_impressions
from core.funnel.audience import sample_users
from core.funnel.engine import FunnelEngine
from core.funnel.params import FunnelParams
from core.funnel.reasons import Outcome, Reason, Stage
from core.funnel.rule_list import known_only
from core.funnel.trace import Trace
from core.index.ann import recall_at
from core.tower.split import heldout_mask, tower_split

STATIC_RULES = (Reason.POLICY_REJECTED, Reason.CAMPAIGN_INACTIVE, Reason.OUT_OF_SCHEDULE, Reason.BUDGET_EXHAUSTED)
"""Rules that do not depend on who asks: an ad passing them is 'eligible' for catalog coverage."""


@dataclass
class RequestDiff:
    """One request under A and B."""

    request: Request
    trace_a: Trace
    trace_b: Trace
    overlap: float  # overlap@K of the retrieved lists
    jaccard: float
    rbo: float
    slate_overlap: float
    gained: pd.DataFrame  # in B's slate, not A's
    lost: pd.DataFrame  # in A's slate, not B's, with lost_stage / lost_reason in B
    rank_shift: pd.DataFrame  # common retrieved ads: ad_id, rank_a, rank_b, shift

    def summary(self) -> dict:
        shift = self.rank_shift["shift"].abs()
        return {
            "user_id": self.request.user_id, "community_id": self.request.community_id,
            "placement": self.request.placement, "overlap": self.overlap, "jaccard": self.jaccard,
            "rbo": self.rbo, "slate_overlap": self.slate_overlap, "n_gained": len(self.gained),
            "n_lost": len(self.lost), "mean_abs_rank_shift": float(shift.mean()) if len(shift) else np.nan,
            "latency_a_ms": self.trace_a.stage_timings_ms.get("total", np.nan),
            "latency_b_ms": self.trace_b.stage_timings_ms.get("total", np.nan),
        }


def _slate_ids(t: Trace) -> list[str]:
    return list(t.slate["ad_id"])


def _ranked_ids(t: Trace) -> list[str]:
    return list(t.candidates.sort_values("ann_rank")["ad_id"])


def lost_why(ad_id: str, trace_b: Trace, engine_b: FunnelEngine) -> tuple[str, str]:
    """(stage, detail) explaining why an ad of A's slate is not in B's slate; the stage is the
    Trace's blocking_stage (core.funnel.reasons), or "inventory" when B does not hold the ad."""
    if engine_b.version.position_of([ad_id])[0] < 0:
        return Stage.INVENTORY.value, "not in version B's catalog"
    row = trace_b.row(ad_id)
    if row is None:
        return Stage.RETRIEVED.value, f"not in B's top-{trace_b.params.k}"
    stage = row["blocking_stage"]
    if row["outcome"] == Outcome.FILTERED.value:
        return stage, str(row["primary_reason"])
    if row["outcome"] == Outcome.ADVERTISER_CAP.value:
        return stage, str(Reason.ADVERTISER_CAP)
    if str(row["primary_reason"]) != Reason.BELOW_CUTOFF.value:  # a ranking-stage rule of the funnel
        return stage, str(row["primary_reason"])
    return stage, f"{Reason.BELOW_CUTOFF} (eCPM rank {row['rank_position']})"


def diff_traces(ta: Trace, tb: Trace, engine_b: FunnelEngine, k: int | None = None) -> RequestDiff:
    """Per-request comparison of two traces of the same request."""
    k = k or max(ta.params.k, tb.params.k)
    ra, rb = _ranked_ids(ta), _ranked_ids(tb)
    sa, sb = _slate_ids(ta), _slate_ids(tb)
    cols = ["ad_id", "advertiser_id", "advertiser_name", "vertical", "title"]
    gained = tb.slate[~tb.slate["ad_id"].isin(sa)][cols + ["final_position"]].reset_index(drop=True)
    lost = ta.slate[~ta.slate["ad_id"].isin(sb)][cols + ["final_position"]].reset_index(drop=True)
    why = [lost_why(a, tb, engine_b) for a in lost["ad_id"]]
    lost["lost_stage"] = [w[0] for w in why]
    lost["lost_reason"] = [w[1] for w in why]
    a_rank = ta.candidates.set_index("ad_id")["ann_rank"]
    b_rank = tb.candidates.set_index("ad_id")["ann_rank"]
    common = a_rank.index.intersection(b_rank.index)
    shift = pd.DataFrame({"ad_id": common, "rank_a": a_rank[common].to_numpy(), "rank_b": b_rank[common].to_numpy()})
    shift["shift"] = shift["rank_b"].astype(float) - shift["rank_a"].astype(float)
    denom = max(len(sa), len(sb))
    return RequestDiff(
        request=ta.request, trace_a=ta, trace_b=tb, overlap=overlap_at_k(ra, rb, k), jaccard=jaccard(ra, rb),
        rbo=rbo(ra, rb), slate_overlap=len(set(sa) & set(sb)) / denom if denom else 1.0,
        gained=gained, lost=lost, rank_shift=shift,
    )


@dataclass
class CompareReport:
    version_a: str
    version_b: str
    k: int
    seed: int
    per_request: pd.DataFrame
    summary: dict
    recall_vs_exact: dict
    recall_vs_clicks: dict
    coverage: dict
    concentration: dict
    vertical_mix: pd.DataFrame
    vertical_tvd: float
    stage_counts: pd.DataFrame
    latency_ms: dict
    catalog_diff: dict
    lost_by_stage: dict
    gained_by_vertical: dict
    seconds: float
    diffs: list[RequestDiff] = field(default_factory=list, repr=False)
    sources: dict = field(default_factory=dict)  # per version: slate share, only-source slate ads, recall
    differences: dict = field(default_factory=dict)  # how the versions' funnels differ (version_differences)
    funnels: dict = field(default_factory=dict)  # the funnel definitions' difference (core.analysis.rule_diff)
    rule_attribution: list = field(default_factory=list)  # per differing rule: share of slates it changed

    @property
    def most_changed(self) -> pd.DataFrame:
        """Requests sorted by how much they changed (lowest RBO, then lowest slate overlap)."""
        return self.per_request.sort_values(["rbo", "slate_overlap"], kind="stable").reset_index(drop=True)

    def to_dict(self) -> dict:
        d = {k: v for k, v in vars(self).items() if k not in ("diffs", "per_request", "vertical_mix", "stage_counts")}
        d["per_request"] = self.per_request.to_dict("records")
        d["most_changed"] = self.most_changed.head(20).to_dict("records")
        d["vertical_mix"] = self.vertical_mix.to_dict("records")
        d["stage_counts"] = self.stage_counts.to_dict("records")
        return to_jsonable(d)


def version_differences(engine_a: FunnelEngine, engine_b: FunnelEngine) -> dict:
    """What ranks early and which funnel definition runs in A and B, and `changed`: the names of
    those that differ (two versions that differ only there are a normal comparison)."""
    def funnel(e: FunnelEngine) -> dict:
        d = e.funnel.describe()
        return {"source": d["source"], "sha256": d["sha256"]}

    ranker = {"a": engine_a.ranker_info, "b": engine_b.ranker_info}
    fun = {"a": funnel(engine_a), "b": funnel(engine_b)}
    changed = [name for name, pair, key in (("early_ranker", ranker, "fingerprint"), ("funnel", fun, "sha256"))
               if (pair["a"].get("kind"), pair["a"].get(key)) != (pair["b"].get("kind"), pair["b"].get(key))]
    return {"early_ranker": ranker, "funnel": fun, "changed": changed}


def _static_eligible(engine: FunnelEngine, request: Request) -> np.ndarray:
    pos = np.arange(engine.n_ads)
    static = tuple(c.value for c in STATIC_RULES if c.value in engine.funnel.rules)  # a definition may drop some
    res = engine.eligibility(request, pos, FunnelParams(rule_order=static))
    return res.eligible


def _recall_vs_exact(engine: FunnelEngine, traces: Sequence[Trace], k: int) -> float:
    """Recall@k of the retrieved candidates against the version's exact search (ties counted, as
    in the manifest and Health: core.index.ann.recall_at)."""
    if not traces:
        return float("nan")
    queries = np.stack([np.asarray(t.query, np.float32) for t in traces])
    approx = [(t.candidates["score"].to_numpy()[:k], t.candidates["version_pos"].to_numpy()[:k]) for t in traces]
    exact = engine.version.exact_search(queries, k)
    return recall_at(approx, exact, k, vectors=engine.version.ad_vectors, queries=queries,
                     metric=engine.version.index.metric)


def _recall_vs_clicks(engine: FunnelEngine, clicks: pd.DataFrame, ad_ids: np.ndarray, k: int) -> dict:
    """Hit rate@k of logged held-out clicks: is the clicked ad in the version's top-k?"""
    if len(clicks) == 0:
        return {"n_clicks": 0, f"recall@{k}": None}
    q = engine.version.encoder.encode_requests(clicks, engine.features)
    pos = engine.version.position_of(ad_ids)
    hits = [p >= 0 and p in set(r[1]) for p, r in zip(pos, engine.version.search(q, k))]
    return {"n_clicks": int(len(clicks)), f"recall@{k}": float(np.mean(hits)),
            "clicked_ads_missing_from_version": int((pos < 0).sum())}


def _holdout_clicks(engines: Sequence[FunnelEngine], n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A sample of logged clicks that no compared version's tower trained on: the held-out side of
    every tower's own split (core.tower.split), or the default time split without a tower."""
    engine = engines[0]
    imps = engine.catalog.impressions
    if not len(imps):
        return pd.DataFrame(), np.array([], dtype=object)
    held_out = heldout_mask(imps, [tower_split(e.version.manifest.tower_metrics, imps) for e in engines])
    late = imps[held_out & imps["clicked"].astype(bool).to_numpy()]
    picked = late.sample(n=min(n, len(late)), random_state=seed) if len(late) else late
    return requests_from_impressions(picked, engine.catalog.users), picked["ad_id"].to_numpy(dtype=object)


def _distribution(per: pd.DataFrame, col: str) -> dict:
    s = per[col].dropna() if len(per) else pd.Series(dtype=float)
    if not len(s):
        return {}
    return {"mean": float(s.mean()), **{f"p{q}": float(s.quantile(q / 100)) for q in (10, 50, 90)}}


def _summary(per: pd.DataFrame) -> dict:
    summary = {c: _distribution(per, c) for c in ("overlap", "jaccard", "rbo", "slate_overlap", "n_gained",
                                                   "n_lost", "mean_abs_rank_shift")}
    summary["identical_slates"] = int((per["slate_overlap"] == 1.0).sum()) if len(per) else 0
    return summary


def _exposure(eng: FunnelEngine, traces: list[Trace], user_ids: list[str], clicks: pd.DataFrame,
              clicked_ads: np.ndarray, params: FunnelParams) -> dict:
    """What one version shows over the sampled requests: coverage, concentration, verticals,
    latency, recall (vs exact and vs held-out clicks) and the sources' shares."""
    slate_ads = Counter(a for t in traces for a in t.slate["ad_id"])
    slate_adv = Counter(a for t in traces for a in t.slate["advertiser_id"].dropna())
    retrieved = {a for t in traces for a in t.candidates["ad_id"]}
    elig = _static_eligible(eng, eng.default_request(user_ids[0])) if user_ids else np.zeros(0, bool)
    elig_ids = set(np.asarray(eng.version.ad_ids, dtype=object)[elig])
    adv_all = {a for a in eng.advertiser_id if a is not None}
    return {
        "coverage": {"eligible_ads": len(elig_ids),
                     "slate_coverage": len(set(slate_ads) & elig_ids) / max(1, len(elig_ids)),
                     "retrieved_coverage": len(retrieved & elig_ids) / max(1, len(elig_ids))},
        "concentration": {
            "gini_ads": gini([slate_ads.get(a, 0) for a in elig_ids]),
            "gini_advertisers": gini([slate_adv.get(a, 0) for a in adv_all]),
            "distinct_slate_ads": len(slate_ads), "distinct_slate_advertisers": len(slate_adv)},
        "verticals": Counter(v for t in traces for v in t.slate["vertical"]),
        "latency": np.array([t.stage_timings_ms.get("total", np.nan) for t in traces]),
        "recall_vs_exact": _recall_vs_exact(eng, traces, params.k),
        "recall_vs_clicks": _recall_vs_clicks(eng, clicks, clicked_ads, params.k),
        "sources": {**slate_attribution(traces, tuple(eng.sources)),
                    "recall_vs_clicks": source_recall(eng, clicks, clicked_ads, params)},
    }


def _vertical_mix(va: Counter, vb: Counter) -> pd.DataFrame:
    na, nb = sum(va.values()) or 1, sum(vb.values()) or 1
    mix = pd.DataFrame({"vertical": sorted(set(va) | set(vb))})
    mix["share_a"] = mix["vertical"].map(lambda v: va.get(v, 0) / na)
    mix["share_b"] = mix["vertical"].map(lambda v: vb.get(v, 0) / nb)
    mix["delta"] = mix["share_b"] - mix["share_a"]
    return mix.sort_values("delta", key=np.abs, ascending=False, kind="stable").reset_index(drop=True)


def _stage_counts(ta: list[Trace], tb: list[Trace]) -> pd.DataFrame:
    return pd.DataFrame({
        "stage": [s.value for s in Stage],
        "mean_a": [float(np.mean([t.stage_counts[s] for t in ta])) if ta else np.nan for s in Stage],
        "mean_b": [float(np.mean([t.stage_counts[s] for t in tb])) if tb else np.nan for s in Stage],
    })


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.nanpercentile(x, q)) if len(x) else float("nan")


def compare_versions(
    engine_a: FunnelEngine,
    engine_b: FunnelEngine,
    *,
    users: Sequence[str] | None = None,
    n_users: int = 100,
    seed: int = 0,
    params: FunnelParams | None = None,
    n_clicks: int = 500,
    progress: Progress | None = None,
) -> CompareReport:
    """Run the same requests through A and B and compare everything (see module docstring); a
    rule `params` switches off is switched off in each version whose funnel has it."""
    t0 = time.perf_counter()
    params = params or FunnelParams()
    k = params.k
    user_ids = list(users) if users is not None else sample_users(engine_a, n_users, seed)
    diffs: list[RequestDiff] = []
    pa, pb = known_only(params, engine_a.rule_infos), known_only(params, engine_b.rule_infos)
    for i, uid in enumerate(user_ids):
        req = engine_a.default_request(uid)
        diffs.append(diff_traces(engine_a.run(req, pa), engine_b.run(req, pb), engine_b, k))
        report(progress, (i + 1) / max(len(user_ids), 1) * 0.9, f"Ran request {i + 1} of {len(user_ids)} through A and B")
    per = pd.DataFrame([d.summary() for d in diffs])
    ta, tb = [d.trace_a for d in diffs], [d.trace_b for d in diffs]
    clicks, clicked_ads = _holdout_clicks([engine_a, engine_b], n_clicks, seed)
    exposure = {label: _exposure(eng, traces, user_ids, clicks, clicked_ads, params)
                for label, traces, eng in (("a", ta, engine_a), ("b", tb, engine_b))}
    va, vb = exposure["a"]["verticals"], exposure["b"]["verticals"]
    ids_a = set(np.asarray(engine_a.version.ad_ids, dtype=object))
    ids_b = set(np.asarray(engine_b.version.ad_ids, dtype=object))
    only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
    lost_all = pd.concat([d.lost for d in diffs], ignore_index=True) if diffs else pd.DataFrame()
    gained_all = pd.concat([d.gained for d in diffs], ignore_index=True) if diffs else pd.DataFrame()
    both = {key: {lab: exposure[lab][key] for lab in ("a", "b")}
            for key in ("recall_vs_exact", "recall_vs_clicks", "coverage", "concentration", "sources")}
    fdiff = funnel_diff(engine_a, engine_b)
    report(progress, 1.0, "Done")
    return CompareReport(
        version_a=engine_a.version.name, version_b=engine_b.version.name, k=k, seed=seed,
        per_request=per, summary=_summary(per), **both,
        vertical_mix=_vertical_mix(va, vb), vertical_tvd=total_variation(va, vb), stage_counts=_stage_counts(ta, tb),
        latency_ms={lab: {"p50": _pct(exposure[lab]["latency"], 50), "p99": _pct(exposure[lab]["latency"], 99)}
                    for lab in ("a", "b")},
        catalog_diff={"only_in_a": len(only_a), "only_in_b": len(only_b),
                      "examples_only_in_a": only_a[:10], "examples_only_in_b": only_b[:10]},
        lost_by_stage=lost_all["lost_stage"].value_counts().to_dict() if len(lost_all) else {},
        gained_by_vertical=gained_all["vertical"].value_counts().to_dict() if len(gained_all) else {},
        seconds=time.perf_counter() - t0, diffs=diffs, differences=version_differences(engine_a, engine_b),
        funnels=fdiff, rule_attribution=rule_attribution(diffs, fdiff),
    )
