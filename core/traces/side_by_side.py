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


def _side(ads: list, stages: list, reasons: list, sources: list, positions: list) -> Side:
    order = {s: i for i, s in enumerate(STAGES_REACHED)}
    idx = np.array([order.get(s, -1) for s in stages], dtype=np.int64)
    counts = {s: int((idx >= i).sum()) for i, s in enumerate(STAGES_REACHED)}
    fates = Counter(fate(st, r) for st, r in zip(stages, reasons) if st != SLATE)
    slate = [a for _, a in sorted((p, a) for a, st, p in zip(ads, stages, positions)
                                  if st == SLATE and p is not None and not pd.isna(p))]
    slate += [a for a, st, p in zip(ads, stages, positions) if st == SLATE and (p is None or pd.isna(p))]
    srcs = Counter(s for xs in sources for s in xs)
    return Side(counts, dict(fates.most_common()), slate, dict(srcs.most_common()))


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
    lb, rb = _blocked(l_stage), _blocked(r_stage)
    lf = fate(l_stage, l_reasons) if l_stage else None
    rf = fate(r_stage, r_reasons) if r_stage else None
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
    if set(l_sources) != set(r_sources):
        return STAGES_REACHED[0], (f"same fate ({lf}), credited to different sources: production "
                                   f"{', '.join(l_sources) or 'none'}, the replay {', '.join(r_sources) or 'none'}")
    return None, f"both agree: {lf}"


def _num(values, i: int):
    if values is None or i < 0:
        return None
    v = values[i]
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def side_by_side(logged: LoggedRequest, trace: Trace, *, bids: np.ndarray | None = None,
                 known_reasons: set[str] | None = None) -> SideBySide:
    """The logged request beside `trace`, the replay of `logged.request` (see the module doc).
    `bids`: the engine's per-position bids (FunnelEngine.bid); `known_reasons`: the reason codes
    AdLens can give (core.traces.parity.modelled_reasons; the built-in ones when None)."""
    known_reasons = known_reasons if known_reasons is not None else modelled_reasons()
    known_sources = set(SOURCE_ORDER) | set(trace.source_names)
    c = logged.candidates
    lg = {k: c[k].tolist() for k in ("ad_id", "sources", "stage_reached", "reasons", "slate_position",
                                     "early_score", "ecpm")}
    lg["ad_id"] = [str(a) for a in lg["ad_id"]]
    lg["sources"] = [[str(s) for s in xs] for xs in lg["sources"]]
    lg["reasons"] = [[str(s) for s in xs] for xs in lg["reasons"]]
    lg["slate_position"] = [None if p is None or pd.isna(p) else int(p) for p in lg["slate_position"]]
    rp = logged_fields(trace, bids)
    rp["ad_id"] = [str(a) for a in rp["ad_id"]]
    where = {a: j for j, a in enumerate(rp["ad_id"])}
    seen: set[str] = set()
    rows = []

    def add(i: int, j: int) -> None:
        ls, rs = (lg["stage_reached"][i] if i >= 0 else None), (rp["stage_reached"][j] if j >= 0 else None)
        lr, rr = (lg["reasons"][i] if i >= 0 else []), (rp["reasons"][j] if j >= 0 else [])
        lsrc, rsrc = (lg["sources"][i] if i >= 0 else []), (rp["sources"][j] if j >= 0 else [])
        lp, rpos = (lg["slate_position"][i] if i >= 0 else None), (rp["slate_position"][j] if j >= 0 else None)
        at, text = parting(ls, lr, lp, rs, rr, rpos, lsrc, rsrc)
        odd = [f"source {s}" for s in lsrc if s not in known_sources] + \
              [f"reason {r}" for r in lr if r not in known_reasons]
        rows.append({
            "ad_id": lg["ad_id"][i] if i >= 0 else rp["ad_id"][j],
            "found_by": BOTH if i >= 0 and j >= 0 else LOGGED_ONLY if i >= 0 else REPLAY_ONLY,
            "parts_at": at, "parting": text,
            "logged_stage": ls, "replay_stage": rs,
            "logged_blocked_at": _BLOCK[_blocked(ls)], "replay_blocked_at": _BLOCK[_blocked(rs)],
            "logged_fate": fate(ls, lr) if ls else None, "replay_fate": fate(rs, rr) if rs else None,
            "logged_reasons": list(lr), "replay_reasons": list(rr),
            "logged_sources": list(lsrc), "replay_sources": list(rsrc),
            "logged_position": lp, "replay_position": rpos,
            "logged_score": _num(lg["early_score"], i), "replay_score": _num(rp.get("early_score"), j),
            "logged_ecpm": _num(lg["ecpm"], i), "replay_ecpm": _num(rp.get("ecpm"), j),
            "not_modelled": odd,
        })

    for i, ad in enumerate(lg["ad_id"]):
        if ad in seen:  # a log that repeats an ad: its first row speaks for it
            continue
        seen.add(ad)
        add(i, where.get(ad, -1))
    for j, ad in enumerate(rp["ad_id"]):
        if ad not in seen:
            add(-1, j)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for col in ("logged_position", "replay_position"):
        table[col] = pd.array(table[col].tolist(), dtype="Int64")
    unknown_src = sorted({s for xs in lg["sources"] for s in xs} - known_sources)
    unknown_rs = sorted({r for xs in lg["reasons"] for r in xs} - known_reasons)
    return SideBySide(
        logged.request_id, logged.request, trace.version_name,
        _side(lg["ad_id"], lg["stage_reached"], lg["reasons"], lg["sources"], lg["slate_position"]),
        _side(rp["ad_id"], rp["stage_reached"], rp["reasons"], rp["sources"], rp["slate_position"]),
        table, unknown_src, unknown_rs)


def replay_side_by_side(engine, logged: LoggedRequest, params: FunnelParams | None = None) -> SideBySide:
    """Replay `logged.request` on `engine` (a FunnelEngine) and put it beside the log."""
    trace = engine.run(logged.request, params)
    return side_by_side(logged, trace, bids=engine.bid, known_reasons=modelled_reasons(engine))


@dataclass
class LoggedWhyNot:
    """Why-not on a logged request: production's row first, then AdLens's verdict, then where they part."""

    request_id: str
    ad_id: str
    logged_row: dict | None  # production's logged candidate (CANDIDATE_COLUMNS), None: not logged
    logged_summary: str  # one line on what production did with the ad
    verdict: WhyNot
    parts_at: str | None
    parting: str
    not_modelled: list[str]


def logged_why_not(engine, logged: LoggedRequest, ad_id: str, params: FunnelParams | None = None) -> LoggedWhyNot:
    """Production's logged row for `ad_id`, AdLens's stage-by-stage verdict on the same request
    (core.funnel.explain.why_not) and the first stage where the two part (`side_by_side`)."""
    ad_id = str(ad_id)
    verdict = why_not(engine, logged.request, ad_id, params)
    sbs = side_by_side(logged, verdict.trace, bids=engine.bid, known_reasons=modelled_reasons(engine))
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
                            "neither production nor the replay retrieved it", [])
    return LoggedWhyNot(logged.request_id, ad_id, logged_row, summary, verdict, row["parts_at"], row["parting"],
                        list(row["not_modelled"]))


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
