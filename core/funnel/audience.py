"""Who can see my ad? One ad across a seeded sample of users in their usual contexts.

For each sampled user, `default_request` gives the usual context and `engine.run` the Trace;
the ad's row says whether it was retrieved, by which candidate sources (and at what ANN rank)
and what happened next: `source_counts` says through which sources the ad reaches users. The
eligibility rules are also evaluated for users whose request did not retrieve the ad, so
"survives eligibility" covers every sampled user, not only those that retrieved it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.common.errors import NotFoundError
from core.common.jsonio import to_jsonable
from core.common.progress import Progress, report
from core.funnel.context import example_ids
from core.funnel.engine import FunnelEngine
from core.funnel.params import FunnelParams
from core.funnel.reasons import Outcome, Stage

USER_COLUMNS = ("user_id", "community_id", "device", "country", "retrieved", "sources", "ann_rank", "eligible",
                "failed_reasons", "outcome", "final_position", "blocking_stage")


@dataclass
class AudienceReport:
    """Aggregates over `n_users` sampled users; `users` has one row per user (USER_COLUMNS)."""

    ad_id: str
    version_name: str
    n_users: int
    retrieved: int
    eligible: int
    retrieved_and_eligible: int
    in_slate: int
    rank_quantiles: dict
    primary_reason_counts: dict
    failed_reason_counts: dict
    blocking_stage_counts: dict
    slate_positions: dict
    source_counts: dict = field(default_factory=dict)  # source -> users it retrieved the ad for (+ slate, only)
    users: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    def to_dict(self) -> dict:
        d = {k: v for k, v in vars(self).items() if k != "users"}
        d["users"] = self.users.astype(object).where(self.users.notna(), None).to_dict("records")
        return to_jsonable(d)


def sample_users(engine: FunnelEngine, n_users: int, seed: int = 0) -> list[str]:
    """A seeded sample of known user ids (profiles or impressions), in sorted order."""
    ids = np.asarray(sorted(map(str, engine.user_ids)), dtype=object)
    if len(ids) <= n_users:
        return list(ids)
    pick = np.random.default_rng(seed).choice(len(ids), size=n_users, replace=False)
    return list(ids[np.sort(pick)])


def audience(engine: FunnelEngine, ad_id: str, n_users: int = 200, seed: int = 0,
             params: FunnelParams | None = None, progress: Progress | None = None) -> AudienceReport:
    """How often, and at what rank, `ad_id` is retrieved for sampled users; how often it survives
    eligibility, which reasons block it, and how often it reaches the slate. `progress(fraction, step)`
    is called after each user."""
    params = engine.resolve_params(params)  # the version's learned quotas
    ad_id = str(ad_id)
    pos = int(engine.version.position_of([ad_id])[0])
    if pos < 0:
        raise NotFoundError(
            f"ad {ad_id!r} is not in version {engine.version.name!r}; valid ids include "
            f"{example_ids(engine.version.ad_ids)}")
    rows = []
    users = sample_users(engine, n_users, seed)
    for i, uid in enumerate(users):
        report(progress, i / max(len(users), 1), f"Running the funnel for sampled user {i + 1} of {len(users)}")
        req = engine.default_request(uid)
        trace = engine.run(req, params)
        row = trace.row(ad_id)
        elig = engine.eligibility(req, np.array([pos]), params)
        failed = elig.failed_lists()[0]
        if row is None:
            outcome, final, stage, found = Outcome.NOT_RETRIEVED.value, None, Stage.RETRIEVED.value, ()
        else:
            outcome, found = str(row["outcome"]), tuple(row["sources"])
            final = None if pd.isna(row["final_position"]) else int(row["final_position"])
            stage = row["blocking_stage"]
        rows.append({"user_id": uid, "community_id": req.community_id, "device": req.device,
                     "country": req.country, "retrieved": row is not None, "sources": found,
                     "ann_rank": None if row is None or pd.isna(row["ann_rank"]) else int(row["ann_rank"]),
                     "eligible": not failed,
                     "failed_reasons": failed, "outcome": outcome, "final_position": final,
                     "blocking_stage": stage})
    users = pd.DataFrame(rows, columns=list(USER_COLUMNS))
    n = len(users)
    ranks = users["ann_rank"].dropna().astype(float)
    quant = {f"p{int(q * 100)}": float(ranks.quantile(q)) for q in (0.1, 0.5, 0.9)} if len(ranks) else {}
    primary = Counter(f[0] for f in users["failed_reasons"] if f)
    every = Counter(code for f in users["failed_reasons"] for code in f)
    stages = Counter("shown" if pd.isna(s) else s for s in users["blocking_stage"])
    positions = Counter(int(p) for p in users["final_position"].dropna())
    return AudienceReport(
        ad_id=ad_id, version_name=engine.version.name, n_users=n,
        retrieved=int(users["retrieved"].sum()) if n else 0,
        eligible=int(users["eligible"].sum()) if n else 0,
        retrieved_and_eligible=int((users["retrieved"] & users["eligible"]).sum()) if n else 0,
        in_slate=int((users["outcome"] == Outcome.SLATE.value).sum()) if n else 0,
        rank_quantiles=quant,
        primary_reason_counts=dict(primary.most_common()),
        failed_reason_counts=dict(every.most_common()),
        blocking_stage_counts=dict(stages.most_common()),
        slate_positions=dict(sorted(positions.items())),
        source_counts=_via_sources(users, engine.sources),
        users=users,
    )


def _via_sources(users: pd.DataFrame, sources) -> dict:
    """Per source: users for whom it retrieved the ad, of those how many saw it in the slate, and
    how many it alone retrieved it for."""
    out = {}
    for name in sources:
        via = users["sources"].map(lambda s, n=name: n in s) if len(users) else pd.Series(dtype=bool)
        only = users["sources"].map(lambda s, n=name: s == (n,)) if len(users) else pd.Series(dtype=bool)
        out[name] = {"retrieved": int(via.sum()), "slate": int((via & (users["outcome"] == "slate")).sum()),
                     "only_this_source": int(only.sum())}
    return out
