"""Parity's running counts (core.traces.parity): per request, each candidate's fate on both
sides, the rules, sources, quotas and early ranker that disagree (bounded: counters and a few
examples each), and the knock-on fates credited to them. See core.traces.parity for the rules.
Tests: tests/test_traces_parity.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np

from core.analysis.links import to_query_params
from core.funnel.reasons import Reason
from core.traces.schema import STAGES_REACHED

EXAMPLES = 3
SLATE, NOT_RETRIEVED, NOT_LOGGED = "slate", "not retrieved", "not logged"
AD_MISSING = "ad not in the version"
EARLY_RANKER = "early ranker"
RANKER_RHO = 0.999
"""A request's early-ranker orders differ when their Spearman correlation is below this (the same
ranker on the same features gives exactly 1)."""
POST_CODES = frozenset({Reason.BELOW_CUTOFF.value, Reason.ADVERTISER_CAP.value})
POST_FATES = POST_CODES | {SLATE, "eligible (no reason)", "ranked (no reason)"}
"""Fates of a candidate that passed eligibility: which one it gets follows from the ranking."""



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


def _ranks(values, scores) -> dict[str, int]:
    """Source -> rank from a candidate's aligned `sources` / `source_ranks` lists (empty when not logged)."""
    return dict(zip(values, scores)) if scores is not None and len(scores) == len(values) else {}


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when either side is constant."""
    from scipy.stats import rankdata  # here: scipy.stats costs ~0.5 s to import, on every dashboard start

    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


class Tally:
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
