"""One logged request beside AdLens's replay of it (the dashboard's Logged mode, why-not on a
logged request).

`side_by_side(logged, trace)` puts the replay in the log's terms with core.traces.export.logged_fields
(the one Trace -> log mapping) and returns each side's stage counts, reasons and slate, and ONE
table of every ad either side touched (TABLE_COLUMNS): `found_by` both / logged only / replay only,
each side's last stage reached and the stage that blocked it, reasons, sources, scores and slate
position, and `parts_at`: the first stage where the two sides' fates differ (None where they agree).
A candidate's fate and the agreement rule are parity's (core.traces.parity.fate: a logged non-slate
ad without a reason agrees with a replay that stopped at the same stage). Sources and reason codes
AdLens does not model are kept verbatim and listed in `not_modelled`.

`logged_why_not(engine, logged, ad_id)`: production's logged row for the ad first, then the
existing why-not verdict (core.funnel.explain) on the logged request, then where the two part.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.common.errors import NotFoundError
from core.data.request import Request
from core.funnel.explain import WhyNot, why_not
from core.funnel.params import FunnelParams
from core.funnel.trace import Trace
from core.sources.base import SOURCE_ORDER
from core.traces.export import logged_fields
from core.traces.logged import LoggedRequest
from core.traces.parity import SLATE, fate, modelled_reasons
from core.traces.schema import STAGES_REACHED

BOTH, LOGGED_ONLY, REPLAY_ONLY = "both", "logged only", "replay only"
NOT_MODELLED = "not modelled by AdLens"
SHOWN = "shown"
"""`*_blocked_at` of an ad in that side's slate (it passed every stage)."""
TABLE_COLUMNS: tuple[str, ...] = (
    "ad_id", "found_by", "parts_at", "parting", "logged_stage", "replay_stage", "logged_blocked_at",
    "replay_blocked_at", "logged_fate", "replay_fate", "logged_reasons", "replay_reasons", "logged_sources",
    "replay_sources", "logged_position", "replay_position", "logged_score", "replay_score", "logged_ecpm",
    "replay_ecpm", "not_modelled")
_SIDE_COLUMNS = ("stage", "blocked_at", "fate", "reasons", "sources", "position", "score", "ecpm")
_BLOCK = (*STAGES_REACHED, SHOWN)  # blocked_at by index: 0 = never retrieved ... 4 = shown
_SAYS = {"logged": "production", "replay": "the replay"}
STAGE_WORDS = {"retrieved": "retrieval", "eligible": "eligibility", "ranked": "early ranking", "slate": "the slate"}
"""A blocking stage in a sentence ("dropped it at eligibility")."""


@dataclass
class Side:
    """One side of a request in the log's terms."""

    stage_counts: dict[str, int]  # candidates that reached at least each stage
    reason_counts: dict[str, int]  # fate of every non-slate candidate (first reason) -> n
    slate: list[str]  # ad ids in slate order
    sources: dict[str, int]  # source -> candidates it is credited with


@dataclass
class SideBySide:
    request_id: str
    request: Request
    version: str
    logged: Side
    replay: Side
    table: pd.DataFrame  # TABLE_COLUMNS, one row per ad either side touched (logged order, then replay-only)
    unknown_sources: list[str] = field(default_factory=list)
    unknown_reasons: list[str] = field(default_factory=list)

    def found_by_counts(self) -> dict[str, int]:
        n = self.table["found_by"].value_counts()
        return {k: int(n.get(k, 0)) for k in (BOTH, LOGGED_ONLY, REPLAY_ONLY)}

    def parting_counts(self) -> dict[str, int]:
        """First stage where the two sides part -> ads (agreeing ads are left out)."""
        n = self.table["parts_at"].dropna().value_counts()
        return {s: int(n[s]) for s in STAGES_REACHED if s in n}

    def slates_equal(self) -> bool:
        return self.logged.slate == self.replay.slate

    def row(self, ad_id: str) -> dict | None:
        hit = self.table.index[self.table["ad_id"] == str(ad_id)]
        return None if not len(hit) else self.table.loc[hit[0]].to_dict()


def _side(ads: list, stages: list, fates: list, sources: list, positions: list) -> Side:
    order = {s: i for i, s in enumerate(STAGES_REACHED)}
    idx = np.array([order.get(s, -1) for s in stages], dtype=np.int64)
    counts = {s: int((idx >= i).sum()) for i, s in enumerate(STAGES_REACHED)}
    reasons = Counter(f for f in fates if f != SLATE)
    shown = [(p, a) for a, st, p in zip(ads, stages, positions) if st == SLATE]
    slate = [a for _, a in sorted((p, a) for p, a in shown if p is not None)] + [a for p, a in shown if p is None]
    srcs = Counter(s for xs in sources for s in xs)
    return Side(counts, dict(reasons.most_common()), slate, dict(srcs.most_common()))


def _blocked(stage: str | None) -> int:
    """0 (never retrieved) .. 4 (shown): the index in _BLOCK of the first stage not passed."""
    return 0 if stage is None else STAGES_REACHED.index(stage) + 1 if stage in STAGES_REACHED else 0


def _fate_text(side: str, blocked: int, fate_: str | None) -> str:
    who = _SAYS[side]
    if blocked == 0:
        return f"{who} never retrieved it"
    if blocked == len(STAGES_REACHED):
        return f"{who} showed it"
    return f"{who} dropped it at {STAGE_WORDS[_BLOCK[blocked]]} ({fate_})"


def parting(l_stage: str | None, l_reasons, l_pos, r_stage: str | None, r_reasons, r_pos,
            l_sources=(), r_sources=()) -> tuple[str | None, str]:
    """(first stage where the two sides part or None, one sentence). A side's stage is None when
    it never had the ad; reasons and sources are that side's lists."""
    lf = fate(l_stage, l_reasons) if l_stage else None
    rf = fate(r_stage, r_reasons) if r_stage else None
    same_sources = l_sources == r_sources or set(l_sources) == set(r_sources)
    if l_stage == r_stage and lf == rf and l_pos == r_pos and same_sources:
        return None, f"both agree: {lf}"  # the common case, first
    lb, rb = _blocked(l_stage), _blocked(r_stage)
    if l_stage is None or r_stage is None:
        only = "production" if r_stage is None else "the replay"
        other = _fate_text("replay" if r_stage is not None else "logged", max(lb, rb), lf or rf)
        return STAGES_REACHED[0], f"only {only} retrieved it; {other}"
    if lb != rb:
        at = _BLOCK[min(lb, rb)]
        return at, f"they part at {STAGE_WORDS[at]}: {_fate_text('logged', lb, lf)}, {_fate_text('replay', rb, rf)}"
    if lf != rf and len(l_reasons) and lf != SLATE:
        return _BLOCK[lb], f"both dropped it at {STAGE_WORDS[_BLOCK[lb]]}, production for {lf}, the replay for {rf}"
    if lf == SLATE and l_pos != r_pos and l_pos is not None and r_pos is not None:
        return SLATE, f"both showed it, production at position {l_pos}, the replay at {r_pos}"
    same = lf if lf == rf else f"{lf}; the replay: {rf}"  # a log without a reason agrees by stage
    if not same_sources:
        return STAGES_REACHED[0], (f"same fate ({same}), credited to different sources: production "
                                   f"{', '.join(l_sources) or 'none'}, the replay {', '.join(r_sources) or 'none'}")
    return None, f"both agree: {same}"


def _pick(values, idx: np.ndarray) -> np.ndarray:
    """values[idx] as floats, NaN where idx is -1 (that side never had the ad)."""
    v = np.append(np.asarray(values, dtype=np.float64), np.nan)
    return v[idx]


def _positions(values) -> list:
    return [None if p is None or p != p else int(p) for p in values]  # p != p: NaN


def side_by_side(logged: LoggedRequest, trace: Trace, *, known_reasons: set[str] | None = None) -> SideBySide:
    """The logged request beside `trace`, the replay of `logged.request` (see the module doc).
    `known_reasons`: the reason codes AdLens can give (core.traces.parity.modelled_reasons; the
    built-in ones when None)."""
    known_reasons = known_reasons if known_reasons is not None else modelled_reasons()
    known_sources = set(SOURCE_ORDER) | set(trace.source_names)
    c = logged.candidates
    # the log's lists are strings already (core.traces.validate); the replay's in the log's terms
    l_ad, l_src, l_st, l_rs = (c[k].tolist() for k in ("ad_id", "sources", "stage_reached", "reasons"))
    l_src, l_rs = [list(x) for x in l_src], [list(x) for x in l_rs]
    l_pos = _positions(pd.to_numeric(c["slate_position"]).to_numpy(dtype=np.float64, na_value=np.nan).tolist())
    rp = logged_fields(trace, scores=False)
    r_ad, r_src, r_st, r_rs = rp["ad_id"], rp["sources"], rp["stage_reached"], rp["reasons"]
    r_pos = _positions(rp["slate_position"])
    l_fate = [fate(st, r) for st, r in zip(l_st, l_rs)]
    r_fate = [fate(st, r) for st, r in zip(r_st, r_rs)]
    where = {a: j for j, a in enumerate(r_ad)}
    first = {}
    for i, a in enumerate(l_ad):  # a log that repeats an ad: its first row speaks for it
        first.setdefault(a, i)
    li = list(first.values()) + [-1] * sum(a not in first for a in r_ad)
    ri = [where.get(l_ad[i], -1) for i in first.values()] + [j for j, a in enumerate(r_ad) if a not in first]

    def col(values, idx, empty=None):
        return [values[k] if k >= 0 else empty for k in idx]

    ls, rs = col(l_st, li), col(r_st, ri)
    lr, rr = col(l_rs, li, []), col(r_rs, ri, [])
    lsrc, rsrc = col(l_src, li, []), col(r_src, ri, [])
    lp, rpos = col(l_pos, li), col(r_pos, ri)
    parts = [parting(*x) for x in zip(ls, lr, lp, rs, rr, rpos, lsrc, rsrc)]
    li_a, ri_a = np.array(li, dtype=np.int64), np.array(ri, dtype=np.int64)
    tc = trace.candidates
    table = pd.DataFrame({
        "ad_id": [l_ad[i] if i >= 0 else r_ad[j] for i, j in zip(li, ri)],
        "found_by": [BOTH if i >= 0 and j >= 0 else LOGGED_ONLY if i >= 0 else REPLAY_ONLY for i, j in zip(li, ri)],
        "parts_at": [p[0] for p in parts], "parting": [p[1] for p in parts],
        "logged_stage": ls, "replay_stage": rs,
        "logged_blocked_at": [_BLOCK[_blocked(x)] for x in ls], "replay_blocked_at": [_BLOCK[_blocked(x)] for x in rs],
        "logged_fate": col(l_fate, li), "replay_fate": col(r_fate, ri),
        "logged_reasons": lr, "replay_reasons": rr, "logged_sources": lsrc, "replay_sources": rsrc,
        "logged_position": pd.array(lp, dtype="Int64"), "replay_position": pd.array(rpos, dtype="Int64"),
        # the replay's early score and eCPM are the Trace's pCTR and eCPM, as logged_fields writes them
        "logged_score": _pick(c["early_score"], li_a), "replay_score": _pick(tc["pctr"], ri_a),
        "logged_ecpm": _pick(c["ecpm"], li_a), "replay_ecpm": _pick(tc["ecpm"], ri_a),
        "not_modelled": [[f"source {x}" for x in a if x not in known_sources] +
                         [f"reason {x}" for x in b if x not in known_reasons] for a, b in zip(lsrc, lr)],
    }, columns=list(TABLE_COLUMNS))
    unknown_src = sorted({s for xs in l_src for s in xs} - known_sources)
    unknown_rs = sorted({r for xs in l_rs for r in xs} - known_reasons)
    return SideBySide(logged.request_id, logged.request, trace.version_name,
                      _side(l_ad, l_st, l_fate, l_src, l_pos), _side(r_ad, r_st, r_fate, r_src, r_pos),
                      table, unknown_src, unknown_rs)


def replay_side_by_side(engine, logged: LoggedRequest, params: FunnelParams | None = None) -> SideBySide:
    """Replay `logged.request` on `engine` (a FunnelEngine) and put it beside the log."""
    trace = engine.run(logged.request, params)
    return side_by_side(logged, trace, known_reasons=modelled_reasons(engine))


@dataclass
class LoggedWhyNot:
    """Why-not on a logged request: production's row first, then AdLens's verdict, then where they part."""

    request_id: str
    ad_id: str
    logged_row: dict | None  # production's logged candidate (CANDIDATE_COLUMNS), None: not logged
    logged_summary: str  # one line on what production did with the ad
    verdict: WhyNot | None  # None: the ad is in neither AdLens's catalog nor the version (`unknown_ad`)
    parts_at: str | None
    parting: str
    not_modelled: list[str]
    unknown_ad: str = ""  # why AdLens cannot follow the ad, when it cannot


def logged_why_not(engine, logged: LoggedRequest, ad_id: str, params: FunnelParams | None = None) -> LoggedWhyNot:
    """Production's logged row for `ad_id`, AdLens's stage-by-stage verdict on the same request
    (core.funnel.explain.why_not) and the first stage where the two part (`side_by_side`)."""
    ad_id = str(ad_id)
    unknown = ""
    try:
        verdict = why_not(engine, logged.request, ad_id, params)
        trace = verdict.trace
    except NotFoundError as exc:  # an ad production logged that AdLens has never seen
        if engine.in_catalog(ad_id) or int(engine.version.position_of([ad_id])[0]) >= 0:
            raise  # something else is unknown (the user): say so
        verdict, unknown, trace = None, str(exc), engine.run(logged.request, params)
    sbs = side_by_side(logged, trace, known_reasons=modelled_reasons(engine))
    hit = logged.candidates.index[logged.candidates["ad_id"].astype(str) == ad_id]
    logged_row = None if not len(hit) else _plain(logged.candidates.loc[hit[0]].to_dict())
    row = sbs.row(ad_id)
    if logged_row is None:
        summary = "production did not log this ad for this request (it never retrieved it)"
    else:
        b = _blocked(logged_row["stage_reached"])
        summary = _fate_text("logged", b, fate(logged_row["stage_reached"], logged_row["reasons"]))
        if b == len(STAGES_REACHED) and logged_row.get("slate_position") is not None:
            summary += f" at position {logged_row['slate_position']}"
        summary = summary[0].upper() + summary[1:]
    if row is None:  # neither side had it
        return LoggedWhyNot(logged.request_id, ad_id, None, summary, verdict, None,
                            "neither production nor the replay retrieved it", [], unknown)
    return LoggedWhyNot(logged.request_id, ad_id, logged_row, summary, verdict, row["parts_at"], row["parting"],
                        list(row["not_modelled"]), unknown)


def _plain(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, (list, tuple, np.ndarray)):
            out[k] = list(v)
        elif v is None or (not isinstance(v, str) and pd.isna(v)):
            out[k] = None
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out
