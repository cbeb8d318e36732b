"""The fields a rule expression can read (core.funnel.expr), as arrays over a version's positions.

`FieldTable.build(facts, catalog)` is built once per engine, next to `AdFacts`: per-ad fields
(`ad.*`, `campaign.*`, `advertiser.*`) are read-only arrays indexed with candidate positions,
per-request fields (`request.*`, `user.*`) are one value each, and per-candidate values known only
while the funnel runs (`candidate.score`, `candidate.pctr`, ...) come from the engine. Extra
columns a team imported on ads, campaigns and users (kept by ingest in `extra_columns`) appear as
`ad.<column>`, `campaign.<column>`, `user.<column>`. `Env` is one evaluation: the candidates,
the request, and a cache so each field is gathered once however many rules read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.data.vocab import AGE_BUCKETS
from core.funnel.ad_facts import TIER_RANK, AdFacts, ListColumn, RequestContext
from core.funnel.expr import BOOL, LIST, NUM, STR, FieldSpec, RowLists

CANDIDATE_FIELDS: dict[str, tuple[str, str, str]] = {
    "candidate.score": (NUM, "eligibility", "tower similarity of the request's query and the ad"),
    "candidate.campaign_impressions_24h": (NUM, "eligibility",
                                           "the user's impressions of the ad's campaign in the 24 h before the request"),
    "candidate.pctr": (NUM, "ranking", "predicted CTR (known after early ranking)"),
    "candidate.ecpm": (NUM, "ranking", "eCPM (known after early ranking)"),
}
RANKING_ONLY = frozenset(k for k, v in CANDIDATE_FIELDS.items() if v[1] == "ranking")


@dataclass
class Env:
    """One evaluation: version positions, the request's context, per-candidate values."""

    table: "FieldTable"
    pos: np.ndarray
    ctx: RequestContext
    candidate: Mapping[str, np.ndarray] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict)

    def get(self, name: str):
        if name not in self._cache:
            self._cache[name] = self.table.specs[name].fetch(self)
        return self._cache[name]

    def shown(self, name: str, i: int = 0):
        """Field `name` for candidate i, as a plain value (for why-not)."""
        v = self.get(name)
        if isinstance(v, RowLists):
            return v.values(i)
        if isinstance(v, np.ndarray):
            x = v[i]
            return None if x is None or (isinstance(x, float) and np.isnan(x)) else x.item() if hasattr(x, "item") else x
        return list(v) if isinstance(v, tuple) else v


def _kind(values: pd.Series) -> str:
    s = values.dropna()
    if pd.api.types.is_bool_dtype(values) or (len(s) and s.map(lambda v: isinstance(v, (bool, np.bool_))).all()):
        return BOOL
    if pd.api.types.is_numeric_dtype(values):
        return NUM
    if len(s) and s.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).all():
        return LIST
    if len(s) and s.map(lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool)).all():
        return NUM
    return STR


class FieldTable:
    """Every field with its spec; per-ad arrays aligned to the version's positions."""

    def __init__(self, specs: dict[str, FieldSpec]):
        self.specs = specs

    def docs(self) -> dict[str, str]:
        return {k: f"{v.type}{'' if v.per_row else ', per request'}" for k, v in sorted(self.specs.items())}

    @classmethod
    def build(cls, facts: AdFacts, catalog) -> "FieldTable":
        specs: dict[str, FieldSpec] = {}

        def per_ad(name: str, arr, type_: str | None = None, doc: str = "") -> None:
            if isinstance(arr, ListColumn):
                specs[name] = FieldSpec(name, LIST, True, lambda env, c=arr: RowLists(c, env.pos), doc)
                return
            arr = np.asarray(arr)
            arr.setflags(write=False)
            t = type_ or (NUM if arr.dtype.kind in "fiu" else BOOL if arr.dtype.kind == "b" else STR)
            specs[name] = FieldSpec(name, t, True, lambda env, a=arr: a[env.pos], doc)

        def per_request(name: str, type_: str, get, doc: str = "") -> None:
            specs[name] = FieldSpec(name, type_, False, get, doc)

        rows = catalog.ads.set_index("ad_id", drop=False).reindex(pd.Index(facts.ad_ids, dtype=object))

        def obj(col: str, default=None) -> np.ndarray:
            if col not in rows:
                return np.full(len(rows), default, dtype=object)
            s = rows[col].astype(object)
            return np.array(s.where(s.notna(), default).to_numpy(dtype=object), dtype=object)

        def num(col: str) -> np.ndarray:
            return pd.to_numeric(rows[col], errors="coerce").to_numpy(np.float64) if col in rows \
                else np.full(len(rows), np.nan)

        has = facts.has_campaign
        per_ad("ad.ad_id", facts.ad_ids.astype(object), STR)
        per_ad("ad.campaign_id", facts.campaign_id, STR)
        per_ad("ad.advertiser_id", np.where(has, obj("advertiser_id"), None), STR)
        for col in ("title", "body", "call_to_action", "landing_domain", "vertical"):
            per_ad(f"ad.{col}", obj(col), STR)
        per_ad("ad.policy_status", facts.policy_status, STR)
        per_ad("ad.in_catalog", facts.in_catalog, BOOL)
        per_ad("campaign.exists", has, BOOL, "the ad has a campaign (campaign rules apply)")
        per_ad("campaign.name", np.where(has, obj("campaign_name"), None), STR)
        per_ad("campaign.status", facts.status, STR)
        per_ad("campaign.start_ts", facts.start_ns, NUM, "ns since 1970 (no start: the earliest time)")
        per_ad("campaign.end_ts", facts.end_ns, NUM, "ns since 1970 (no end: the latest time)")
        for name in ("daily_budget", "spend_today", "frequency_cap", "age_min", "age_max"):
            per_ad(f"campaign.{name}", getattr(facts, name), NUM)
        per_ad("campaign.bid", np.where(has, num("bid"), np.nan), NUM)
        per_ad("campaign.bid_type", np.where(has, obj("bid_type"), None), STR)
        for name, col in (("target_countries", facts.countries), ("target_devices", facts.devices),
                          ("include_communities", facts.include), ("exclude_communities", facts.exclude)):
            per_ad(f"campaign.{name}", col)
        per_ad("advertiser.name", np.where(has, obj("advertiser_name"), None), STR)
        per_ad("advertiser.vertical", np.where(has, obj("advertiser_vertical"), None), STR)
        per_ad("advertiser.brand_safety", facts.brand_safety, STR)
        per_ad("advertiser.brand_safety_rank", facts.brand_rank, NUM, "safe 0 < sensitive 1 < mature 2 < nsfw 3")

        req = {"user_id": STR, "country": STR, "device": STR, "community_id": STR, "placement": STR}
        for name, t in req.items():
            per_request(f"request.{name}", t, lambda env, n=name: getattr(env.ctx.request, n))
        per_request("request.ts", NUM, lambda env: env.ctx.ts_ns, "ns since 1970")
        per_request("request.community_safety_tier", STR, lambda env: env.ctx.community_tier)
        per_request("request.community_safety_rank", NUM, lambda env: float(TIER_RANK.get(env.ctx.community_tier, 0)),
                    "the home feed counts as safe (0)")

        users = catalog.users.set_index("user_id", drop=False) if len(catalog.users) else pd.DataFrame()
        profile = users.to_dict("index") if len(users) else {}

        def user_value(env, col, type_):
            v = profile.get(env.ctx.request.user_id, {}).get(col)
            if type_ == LIST:
                return tuple(str(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else ()
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return np.nan if type_ == NUM else None
            return float(v) if type_ == NUM else bool(v) if type_ == BOOL else str(v)

        for name, t in (("country", STR), ("device", STR), ("communities", LIST)):
            per_request(f"user.{name}", t, lambda env, c=name, t=t: user_value(env, c, t))
        per_request("user.age_bucket", STR, lambda env: env.ctx.age_bucket)
        per_request("user.age_min", NUM, lambda env: float(AGE_BUCKETS.get(env.ctx.age_bucket, (np.nan,))[0]),
                    "lower end of the age bucket (unknown: missing)")
        per_request("user.age_max", NUM, lambda env: float(AGE_BUCKETS.get(env.ctx.age_bucket, (0, np.nan))[1]))

        for name, (t, stage, doc) in CANDIDATE_FIELDS.items():
            key = name.split(".", 1)[1]
            getter = (lambda env, c=facts.campaign_code: _impressions(env, c)) \
                if key == "campaign_impressions_24h" else (lambda env, k=key: _candidate(env, k))
            specs[name] = FieldSpec(name, t, True, getter, doc, stage)

        # extra columns the team imported (core.data.ingest keeps them)
        extra = getattr(catalog, "extra", None) or {}
        for table, prefix in (("ads", "ad"), ("campaigns", "campaign")):
            frame = extra.get(table)
            if frame is None or not len(frame.columns):
                continue
            key = "ad_id" if table == "ads" else "campaign_id"
            ids = facts.ad_ids if table == "ads" else np.where(has, facts.campaign_id, None)
            aligned = frame.reindex(pd.Index(ids, dtype=object))
            for col in frame.columns:
                name = f"{prefix}.{col}"
                if name in specs or col == key:
                    continue
                t = _kind(frame[col])
                values = aligned[col]
                if t == LIST:
                    per_ad(name, ListColumn(values.to_numpy(dtype=object)))
                elif t == NUM:
                    per_ad(name, pd.to_numeric(values, errors="coerce").to_numpy(np.float64), NUM)
                elif t == BOOL:
                    per_ad(name, values.fillna(False).astype(bool).to_numpy(), BOOL)
                else:
                    per_ad(name, np.array(values.astype(object).where(values.notna(), None), dtype=object), STR)
        uframe = extra.get("users")
        if uframe is not None and len(uframe.columns):
            uprof = uframe.to_dict("index")
            for col in uframe.columns:
                name = f"user.{col}"
                if name in specs:
                    continue
                t = _kind(uframe[col])
                per_request(name, t, lambda env, c=col, t=t: _user_extra(uprof, env, c, t))
        return cls(specs)


def _user_extra(prof: dict, env: Env, col: str, t: str):
    v = prof.get(env.ctx.request.user_id, {}).get(col)
    if t == LIST:
        return tuple(str(x) for x in v) if isinstance(v, (list, tuple, np.ndarray)) else ()
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan if t == NUM else False if t == BOOL else None
    return float(v) if t == NUM else bool(v) if t == BOOL else str(v)


def _candidate(env: Env, key: str) -> np.ndarray:
    v = env.candidate.get(key)
    if v is None:
        raise KeyError(f"candidate.{key} is not known at this stage")
    return np.asarray(v, dtype=np.float64)


def _impressions(env: Env, campaign_code: np.ndarray) -> np.ndarray:
    codes = campaign_code[env.pos]
    return env.ctx.frequency.counts(env.ctx.request.user_id, env.ctx.ts_ns, codes).astype(np.float64)
