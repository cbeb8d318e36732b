"""Parity: how far AdLens's replay reproduces what production logged (`adlens parity`).

Over N logged requests (a seeded sample, streamed in file order: memory holds one request and the
running counts), each request is replayed on a version with the default funnel and both sides are
put in the log's terms by core.traces.export.logged_fields (the one Trace -> log mapping). Per
candidate, each side's *fate* is its stage and first reason: "slate", a reason code (GEO_MISMATCH,
BELOW_CUTOFF, ...), or "not retrieved" / "not logged" when that side never had the ad (a logged
non-slate ad without a reason agrees with a replay that stopped at the same stage). Measured:
slate overlap (exact slate, same set, Jaccard, overlap@slate), the replay's recall of the logged
candidates (overall, per logged stage, per logged source), a confusion table logged fate ->
replayed fate, and the rules and sources that disagree most, each with example deep links.

A rule disagrees where exactly one side gives it as the candidate's fate; a source disagrees
where one side credits it with finding the ad and the other does not. A *quota* differs where a
source's rank on one side lies beyond what the other side takes from it (a logged rank above the
replay's quota; a replayed rank above the largest rank the log holds for that source in that
request). The *early ranker* differs where, among candidates both sides found eligible through the
same sources, the logged eCPM (else early score) orders them differently from the replay's
(Spearman rank correlation per request below RANKER_RHO; the mean over requests is reported).
A post-eligibility fate (slate, BELOW_CUTOFF, ADVERTISER_CAP) that differs on a candidate both
sides found eligible is a knock-on effect: it is credited (`knock_on`, `knock_on_slate`) to every
other difference found in that request, and reported as a rule of its own only in a request
without one. They are ranked by the slates they move (directly and as knock-on), then the fates
they change, then how many candidates they touch. Names AdLens does not have
(sources outside core.sources, reason codes neither built in, core.funnel.reasons, nor in the
version's funnel definition, core.funnel.definition) are flagged "not modelled". Logged ads the version lacks are counted apart (the replay cannot find them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from core.common.errors import AdLensError, NotFoundError
from core.common.progress import Progress, report
from core.funnel.params import FunnelParams
from core.funnel.reasons import BUILTIN_REASONS
from core.sources.base import SOURCE_ORDER
from core.traces.export import logged_fields
from core.traces.logged import count_logged_requests, iter_logged_requests, sample_request_ids
from core.traces.parity_tally import (  # noqa: F401  (re-exported: the report's parts live there)
    AD_MISSING,
    EARLY_RANKER,
    EXAMPLES,
    NOT_LOGGED,
    NOT_RETRIEVED,
    RANKER_RHO,
    SLATE,
    Disagreement,
    Example,
    Recall,
    SourceRecall,
    Tally,
    fate,
    spearman,
)

TOP = 10
VERDICT_TOP = 3


def modelled_reasons(engine=None) -> set[str]:
    """Reason codes AdLens can give: the built-in ones and, with `engine`, its funnel
    definition's own (compared as strings: reason codes are an open vocabulary)."""
    funnel = getattr(engine, "funnel", None)
    return set(BUILTIN_REASONS) | {str(c) for c in (funnel.codes if funnel is not None else ())}


@dataclass
class ParityReport:
    version: str
    n_requests: int
    seed: int
    n_logged_candidates: int = 0
    n_replay_candidates: int = 0
    slates_equal: int = 0  # the same ads in the same order
    slate_sets_equal: int = 0
    mean_jaccard: float | None = None
    mean_overlap: float | None = None  # |logged slate ∩ replay slate| / |logged slate|
    slates_equal_rate: float | None = None
    recall: Recall = field(default_factory=Recall)
    stage_recall: dict[str, Recall] = field(default_factory=dict)
    source_recall: list[SourceRecall] = field(default_factory=list)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # logged fate -> replayed fate -> n
    disagreements: list[Disagreement] = field(default_factory=list)  # most first
    unknown_sources: list[str] = field(default_factory=list)
    unknown_reasons: list[str] = field(default_factory=list)
    not_replayed: list[str] = field(default_factory=list)  # "request: why" (e.g. an unknown user)
    seconds: float = 0.0
    verdict: str = ""


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %" if x in (0.0, 1.0) or 0.01 < x < 0.99 else f"{100 * x:.1f} %"



def require_traces(db) -> None:
    """NotFoundError with the fix when no logged traces are imported."""
    if count_logged_requests(db) == 0:
        raise NotFoundError("no logged traces are imported yet: import them with `adlens import-traces DIR` "
                            "(format: data/README.md; `adlens export-traces` writes an example)")


def run_parity(settings, db, engine, *, n_requests: int = 1000, seed: int = 0, params: FunnelParams | None = None,
               progress: Progress | None = None) -> ParityReport:
    """Replay a seeded sample of `n_requests` logged requests on `engine`'s version and compare
    (see the module doc). `db`: the workspace's SQLAlchemy engine; `engine`: a FunnelEngine."""
    if n_requests < 1:
        raise AdLensError(f"--requests must be at least 1 (got {n_requests})")
    t0 = time.perf_counter()
    require_traces(db)
    params = params or FunnelParams()
    ids = sample_request_ids(db, n_requests, seed)
    version = engine.version.name
    known_rules = modelled_reasons(engine)
    resolved = engine.resolve_params(params)
    tally = Tally(version, set(SOURCE_ORDER), known_rules, {n: resolved.quota(n) for n in engine.sources
                                                            if resolved.enabled(n)})
    rep = tally.rep = ParityReport(version, len(ids), seed)
    in_version = frozenset(engine.version.ad_ids)
    report(progress, 0.0, f"replay {len(ids):,} logged requests on {version}")
    unknown_src: set[str] = set()
    unknown_rules: set[str] = set()
    for i, lr in enumerate(iter_logged_requests(settings, db, ids)):
        c = lr.candidates
        unknown_src.update(lr.unknown_sources())
        unknown_rules.update(str(x) for xs in c["reasons"] for x in xs if str(x) not in known_rules)
        try:
            replay = logged_fields(engine.run(lr.request, params), scores="ranking")
        except AdLensError as exc:
            rep.n_requests -= 1
            if len(rep.not_replayed) < 20:
                rep.not_replayed.append(f"{lr.request_id}: {exc}")
            continue
        logged = {k: c[k].tolist() for k in ("ad_id", "sources", "stage_reached", "reasons", "source_ranks")}
        logged.update({k: c[k].to_numpy(dtype=np.float64, na_value=np.nan) for k in ("ecpm", "early_score")})
        tally.add(lr.request_id, logged, lr.slate()["ad_id"].tolist(), replay, in_version)
        report(progress, (i + 1) / len(ids), f"replay request {i + 1:,} of {len(ids):,}")
    _finish(rep, tally, sorted(unknown_src), sorted(unknown_rules))
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _finish(rep: ParityReport, tally: Tally, unknown_src: list[str], unknown_rules: list[str]) -> None:
    n = rep.n_requests
    if n:
        rep.mean_jaccard, rep.mean_overlap = tally.jaccard / n, tally.overlap / n
        rep.slates_equal_rate = rep.slates_equal / n
    for r in tally.stage.values():
        r.recall = r.hit / r.n if r.n else None
    rep.stage_recall = tally.stage
    rep.recall = Recall(tally.stage["retrieved"].n, tally.stage["retrieved"].hit, tally.stage["retrieved"].recall)
    for s in tally.src.values():
        s.recall = s.retrieved / s.n if s.n else None
    rep.source_recall = sorted(tally.src.values(), key=lambda s: (-s.n, s.name))
    rep.confusion = {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in
                     sorted(tally.conf.items(), key=lambda kv: -sum(kv[1].values()))}
    for d in tally.dis.values():
        if d.kind == "ranker":
            d.spearman = round(tally.rho_sum / tally.rho_n, 4) if tally.rho_n else None
            d.compared_requests = tally.rho_n
        elif d.kind == "quota":
            d.logged_max_rank, d.replay_quota = tally.logged_max.get(d.name), tally.quotas.get(d.name)
    # what moved slates first, then what changed fates, then the rest (a source credited differently)
    rep.disagreements = sorted(tally.dis.values(), key=lambda d: (-d.slates_moved, -d.fate_changes - d.knock_on,
                                                                  -d.count, d.kind, d.name))
    for d in rep.disagreements:
        d.label_text = d.label()
    rep.unknown_sources, rep.unknown_reasons = unknown_src, unknown_rules
    rep.verdict = verdict(rep)


def verdict(rep: ParityReport) -> str:
    """One line a reader can act on."""
    if not rep.n_requests:
        return f"no logged request could be replayed on {rep.version} (see not_replayed)"
    slates = f"the replay on {rep.version} reproduces {percent(rep.slates_equal_rate)} of {rep.n_requests:,} logged " \
             f"slates (recall of logged candidates {percent(rep.recall.recall)})"
    if not rep.disagreements:
        return slates + "; every logged candidate's stage, reason and sources agree"
    # every difference that moves slates among the first VERDICT_TOP, else the first one
    top = [d for d in rep.disagreements[:VERDICT_TOP] if d.slates_moved] or rep.disagreements[:1]
    more = len(rep.disagreements) - len(top)
    return (f"{slates}; most disagreements: "
            + "; ".join(d.label() + ("" if d.kind == "ranker" else f" ({d.count:,} candidates)") for d in top)
            + (f"; {more} more difference(s)" if more else ""))
