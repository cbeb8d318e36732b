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
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
from scipy.stats import rankdata

from core.analysis.links import to_query_params
from core.common.errors import AdLensError, NotFoundError
from core.common.progress import Progress, report
from core.funnel.params import FunnelParams
from core.funnel.reasons import BUILTIN_REASONS, Reason
from core.sources.base import SOURCE_ORDER
from core.traces.export import logged_fields
from core.traces.logged import count_logged_requests, iter_logged_requests, sample_request_ids
from core.traces.schema import STAGES_REACHED

EXAMPLES = 3
TOP = 10
VERDICT_TOP = 3
SLATE, NOT_RETRIEVED, NOT_LOGGED = "slate", "not retrieved", "not logged"
AD_MISSING = "ad not in the version"
EARLY_RANKER = "early ranker"
RANKER_RHO = 0.999
"""A request's early-ranker orders differ when their Spearman correlation is below this (the same
ranker on the same features gives exactly 1)."""
POST_CODES = frozenset({Reason.BELOW_CUTOFF.value, Reason.ADVERTISER_CAP.value})
POST_FATES = POST_CODES | {SLATE, "eligible (no reason)", "ranked (no reason)"}
"""Fates of a candidate that passed eligibility: which one it gets follows from the ranking."""


def modelled_reasons(engine=None) -> set[str]:
    """Reason codes AdLens can give: the built-in ones and, with `engine`, its funnel
    definition's own (compared as strings: reason codes are an open vocabulary)."""
    funnel = getattr(engine, "funnel", None)
    return set(BUILTIN_REASONS) | {str(c) for c in (funnel.codes if funnel is not None else ())}


def fate(stage: str, reasons) -> str:
    """A candidate's fate in one word: slate, its first reason, or its stage when no reason is logged."""
    if stage == SLATE:
        return SLATE
    return str(reasons[0]) if len(reasons) else f"{stage} (no reason)"


@dataclass
class Example:
    request_id: str
    ad_id: str
    logged: str  # the logged fate (or "not logged")
    replayed: str  # the replay's fate (or "not retrieved")
    link: str  # dashboard deep link: ?request=...&version=...&ad=...


@dataclass
class Disagreement:
    """A rule or source the two sides disagree on: `logged_only` candidates where production gave
    it (the replay did not), `replay_only` where the replay gave it (production did not)."""

    kind: str  # "rule", "source", "data", "quota" (name: a source) or "ranker" (name: EARLY_RANKER)
    name: str
    modelled: bool  # whether AdLens has this rule / source at all
    logged_only: int = 0
    replay_only: int = 0
    count: int = 0
    fate_changes: int = 0  # of them, fates it changed (a source: ads only one side retrieved)
    slate_changes: int = 0  # of them, candidates in exactly one side's slate
    examples: list[Example] = field(default_factory=list)
    label_text: str = ""  # label(), filled when the report is finished (for JSON readers)
    knock_on: int = 0  # post-eligibility fates changed in requests where this difference was found
    knock_on_slate: int = 0  # of them, candidates in exactly one side's slate
    requests: int = 0  # requests where it was found
    spearman: float | None = None  # ranker: mean Spearman of logged vs replayed order, over compared requests
    compared_requests: int = 0  # ranker: requests with at least 3 comparable candidates
    logged_max_rank: int | None = None  # quota: the largest logged rank of the source
    replay_quota: int | None = None  # quota: the candidates the replay takes from it

    @property
    def slates_moved(self) -> int:
        """Candidates in exactly one side's slate, directly or as a knock-on."""
        return self.slate_changes + self.knock_on_slate

    def label(self) -> str:
        if self.kind == "data":
            return f"logged ads the version lacks ({AD_MISSING})"
        if self.kind == "ranker":
            rho = "-" if self.spearman is None else f"{self.spearman:.2f}"
            return (f"the early ranker orders eligible ads differently (Spearman {rho}; differs in "
                    f"{self.requests:,} of {self.compared_requests:,} requests)")
        if self.kind == "quota":
            return f"source {self.name}: logged ranks up to {self.logged_max_rank}, replay quota {self.replay_quota}"
        side = "logged" if self.logged_only >= self.replay_only else "replayed"
        what = "reason" if self.kind == "rule" else "source"
        return f"{side} {what} {self.name}" + ("" if self.modelled else ", which AdLens does not model")


@dataclass
class Recall:
    n: int = 0  # logged candidates (that reached the stage / that the source found)
    hit: int = 0  # of them, the replay also retrieved (brought to the stage)
    recall: float | None = None


@dataclass
class SourceRecall:
    name: str
    modelled: bool
    n: int = 0  # logged candidates this source is credited with
    retrieved: int = 0  # the replay retrieved them (by any source)
    same_source: int = 0  # the replay's own source of that name found them
    recall: float | None = None


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


def _ranks(values, scores) -> dict[str, int]:
    """Source -> rank from a candidate's aligned `sources` / `source_ranks` lists (empty when not logged)."""
    return dict(zip(values, scores)) if scores is not None and len(scores) == len(values) else {}


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


class _Tally:
    """The running counts of one parity run (bounded: counters and a few examples per name).
    `quotas`: the replay's quota of each of the version's sources."""

    def __init__(self, version: str, modelled_sources: set[str], modelled_rules: set[str],
                 quotas: dict[str, int] | None = None):
        self.version, self.known_src, self.known_rules = version, modelled_sources, modelled_rules
        self.quotas = dict(quotas or {})
        self.dis: dict[tuple[str, str], Disagreement] = {}
        self.stage = {s: Recall() for s in STAGES_REACHED}
        self.src: dict[str, SourceRecall] = {}
        self.conf: dict[str, dict[str, int]] = {}
        self.jaccard = self.overlap = 0.0
        self.rho_sum, self.rho_n = 0.0, 0
        self.logged_max: dict[str, int] = {}  # source -> its largest logged rank
        self.causes: set[tuple[str, str]] = set()  # the differences found in the current request
        self.rep = None

    def _get(self, kind: str, name: str) -> Disagreement:
        d = self.dis.get((kind, name))
        if d is None:
            modelled = name in (self.known_rules if kind == "rule" else self.known_src) \
                if kind in ("rule", "source") else True
            d = self.dis[(kind, name)] = Disagreement(kind, name, modelled)
        return d

    def _example(self, d: Disagreement, rid: str, ad: str, lf: str, rf: str) -> None:
        if len(d.examples) < EXAMPLES:
            link = "?" + urlencode(to_query_params(request=rid, version=self.version, ad=ad))
            d.examples.append(Example(rid, ad, lf, rf, link))

    def _hit(self, kind: str, name: str, side: str, rid: str, ad: str, lf: str, rf: str,
             changed: bool = True) -> None:
        d = self._get(kind, name)
        self.causes.add((kind, name))
        setattr(d, side, getattr(d, side) + 1)
        d.count += 1
        d.fate_changes += changed
        d.slate_changes += (lf == SLATE) != (rf == SLATE)
        self._example(d, rid, ad, lf, rf)

    def _source_hits(self, names, ranks: dict, other_max: dict | None, side: str, rid: str, ad: str,
                     lf: str, rf: str, changed: bool) -> None:
        """Sources one side credits and the other does not: a quota difference where the rank lies
        beyond what the other side takes from that source, else a source difference."""
        for name in sorted(names):
            r = ranks.get(name)
            limit = self.quotas.get(name) if other_max is None else other_max.get(name)
            quota = r is not None and limit is not None and limit > 0 and r > limit
            self._hit("quota" if quota else "source", name, side, rid, ad, lf, rf, changed)

    def add(self, rid: str, logged: dict, ls_: list[str], replay: dict, in_version) -> None:
        """One request: `logged` and `replay` hold the columns ad_id, sources, stage_reached, reasons
        (lists; the replay's from logged_fields) and, when known, source_ranks, ecpm and early_score;
        `ls_` the logged slate in order."""
        rep = self.rep
        self.causes = set()
        l_ad, l_src, l_st, l_rs = logged["ad_id"], logged["sources"], logged["stage_reached"], logged["reasons"]
        r_ad, r_src, r_st, r_rs = replay["ad_id"], replay["sources"], replay["stage_reached"], replay["reasons"]
        n_l = len(l_ad)
        l_rk = [_ranks(s, r) for s, r in zip(l_src, logged.get("source_ranks") or [None] * n_l)]
        r_rk = [_ranks(s, r) for s, r in zip(r_src, replay.get("source_ranks") or [None] * len(r_ad))]
        req_max: dict[str, int] = {}  # the largest logged rank of each source in this request
        for rk in l_rk:
            for name, r in rk.items():
                if r is not None and r > req_max.get(name, 0):
                    req_max[name] = int(r)
        for name, r in req_max.items():
            self.logged_max[name] = max(self.logged_max.get(name, 0), r)
        rep.n_logged_candidates += n_l
        rep.n_replay_candidates += len(r_ad)
        where = {a: j for j, a in enumerate(r_ad)}
        idx = [where.get(a, -1) for a in l_ad]
        lf = [fate(st, r) for st, r in zip(l_st, l_rs)]
        r_fate = [fate(st, r) for st, r in zip(r_st, r_rs)]
        rf = [r_fate[j] if j >= 0 else NOT_RETRIEVED for j in idx]
        for (x, y), k in Counter(zip(lf, rf)).items():
            row = self.conf.setdefault(x, {})
            row[y] = row.get(y, 0) + k
        order = {s: i for i, s in enumerate(STAGES_REACHED)}
        r_stage = np.array([order.get(s, -1) for s in r_st] + [-1], dtype=np.int64)  # [-1]: not retrieved
        li = np.array([order.get(s, -1) for s in l_st], dtype=np.int64)
        ri = r_stage[np.array(idx, dtype=np.int64)] if idx else li
        for i, s in enumerate(STAGES_REACHED):
            reached = li >= i
            self.stage[s].n += int(reached.sum())
            self.stage[s].hit += int((ri[reached] >= i).sum())
        deferred = []  # (k, j): post-eligibility fates that differ, credited once the request's causes are known
        comparable = []  # (k, j): eligible on both sides through the same sources (the ranker's comparison)
        for k, (ad, ls, j) in enumerate(zip(l_ad, l_src, idx)):
            rs = r_src[j] if j >= 0 else ()
            same = ls == rs
            for name in ls:
                sr = self.src.get(name) or self.src.setdefault(name, SourceRecall(name, name in self.known_src))
                sr.n += 1
                sr.retrieved += j >= 0
                sr.same_source += same or name in rs
            if j >= 0 and lf[k] in POST_FATES and rf[k] in POST_FATES and set(ls) == set(rs):
                comparable.append((k, j))
            # a log without a reason for a non-slate ad is compared by the stage reached alone
            agree = lf[k] == rf[k] or (j >= 0 and not len(l_rs[k]) and l_st[k] != SLATE and r_st[j] == l_st[k])
            if same and agree:
                continue
            if j < 0 and ad not in in_version:
                self._hit("data", AD_MISSING, "logged_only", rid, ad, lf[k], rf[k])
                continue
            if not agree and j >= 0:
                if lf[k] in POST_FATES and rf[k] in POST_FATES:
                    deferred.append((k, j))
                else:  # a reason code beats the other side's post-eligibility fate (its consequence)
                    l_code = lf[k] != SLATE and len(l_rs[k]) > 0
                    r_code = rf[k] != SLATE and len(r_rs[j]) > 0
                    l_real, r_real = l_code and lf[k] not in POST_CODES, r_code and rf[k] not in POST_CODES
                    if l_code and (l_real or not r_real):
                        self._hit("rule", lf[k], "logged_only", rid, ad, lf[k], rf[k])
                    if r_code and (r_real or not l_real):
                        self._hit("rule", rf[k], "replay_only", rid, ad, lf[k], rf[k])
            if not same:
                self._source_hits(set(ls) - set(rs), l_rk[k], None, "logged_only", rid, ad, lf[k], rf[k], j < 0)
                if j >= 0:
                    self._source_hits(set(rs) - set(ls), r_rk[j], req_max, "replay_only", rid, ad, lf[k], rf[k],
                                      False)
        if sum(j >= 0 for j in idx) < len(r_ad):  # the replay retrieved ads the log lacks
            seen = set(l_ad)
            for j, (ad, rs, f) in enumerate(zip(r_ad, r_src, r_fate)):
                if ad in seen:
                    continue
                row = self.conf.setdefault(NOT_LOGGED, {})
                row[f] = row.get(f, 0) + 1
                self._source_hits(set(rs), r_rk[j], req_max, "replay_only", rid, ad, NOT_LOGGED, f, True)
        self._compare_ranker(rid, comparable, logged, replay, l_ad, lf, rf)
        self._credit(rid, deferred, l_ad, l_rs, r_rs, lf, rf)
        rsl = sorted((p, a) for a, st, p in zip(r_ad, r_st, replay["slate_position"]) if st == SLATE and p is not None)
        rsl = [a for _, a in rsl]
        a, b = set(ls_), set(rsl)
        rep.slates_equal += ls_ == rsl
        rep.slate_sets_equal += a == b
        self.jaccard += len(a & b) / len(a | b) if a | b else 1.0
        self.overlap += len(a & b) / len(a) if a else float(not b)

    def _compare_ranker(self, rid: str, comparable: list, logged: dict, replay: dict, l_ad, lf, rf) -> None:
        """Spearman of the logged vs replayed eCPM (else early score) over `comparable` candidates."""
        if len(comparable) < 3:
            return
        k, j = np.array([c[0] for c in comparable]), np.array([c[1] for c in comparable])
        x = y = None
        for lkey, rkey in (("ecpm", "ecpm"), ("early_score", "early_score")):
            if logged.get(lkey) is None or replay.get(rkey) is None:
                continue
            lx = np.asarray(logged[lkey], dtype=np.float64)[k]
            ry = np.asarray(replay[rkey], dtype=np.float64)[j]
            if np.isfinite(lx).all() and np.isfinite(ry).all():
                x, y = lx, ry
                break
        if x is None:
            return
        rho = spearman(x, y)
        if rho is None:
            return
        self.rho_sum += rho
        self.rho_n += 1
        if rho < RANKER_RHO:
            d = self._get("ranker", EARLY_RANKER)
            self.causes.add(("ranker", EARLY_RANKER))
            d.count += len(comparable)

    def _credit(self, rid: str, deferred: list, l_ad, l_rs, r_rs, lf, rf) -> None:
        """Knock-on fates to every difference of this request; without one, to their own codes."""
        causes = [self.dis[c] for c in sorted(self.causes)]
        for k, j in deferred:
            moved = (lf[k] == SLATE) != (rf[k] == SLATE)
            if causes:
                for d in causes:
                    d.knock_on += 1
                    d.knock_on_slate += moved
                    if d.kind == "ranker" and moved:
                        self._example(d, rid, l_ad[k], lf[k], rf[k])
                continue
            if lf[k] != SLATE and len(l_rs[k]):
                self._hit("rule", lf[k], "logged_only", rid, l_ad[k], lf[k], rf[k])
            if rf[k] != SLATE and len(r_rs[j]):
                self._hit("rule", rf[k], "replay_only", rid, l_ad[k], lf[k], rf[k])
        for c in self.causes:
            self.dis[c].requests += 1


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
    tally = _Tally(version, set(SOURCE_ORDER), known_rules, {n: resolved.quota(n) for n in engine.sources
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
            replay = logged_fields(engine.run(lr.request, params))
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


def _finish(rep: ParityReport, tally: _Tally, unknown_src: list[str], unknown_rules: list[str]) -> None:
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
