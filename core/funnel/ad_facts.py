"""Eligibility inputs as arrays: per-ad campaign facts, the frequency index and per-request context.

Built once per (version, catalog) by the funnel engine, read-only afterwards; the rules in
core/filters.py index these arrays with candidate positions (no SQL, no per-row Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from core.data.request import Request
from core.data.vocab import AGE_BUCKETS, CampaignStatus, PolicyStatus, SafetyTier
from core.store.catalog import Catalog

DAY_NS = 24 * 3600 * 10**9
I64_MIN, I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
TIER_RANK = {t.value: t.rank for t in SafetyTier}


def ts_ns(value) -> int:
    """A naive-UTC timestamp as int64 nanoseconds."""
    return int(pd.Timestamp(value).as_unit("ns").value)


def _ns_array(series: pd.Series, fill: int) -> np.ndarray:
    dt = pd.to_datetime(series)
    out = dt.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    out[dt.isna().to_numpy()] = fill
    return out


def fmt_ns(v: int) -> str:
    return pd.Timestamp(v).isoformat(sep=" ")


class ListColumn:
    """A list-valued column as CSR arrays (string values coded once), for vectorised membership."""

    def __init__(self, lists) -> None:
        vocab: dict[str, int] = {}
        lengths = np.zeros(len(lists), np.int64)
        codes: list[int] = []
        for i, v in enumerate(lists):
            if isinstance(v, (list, tuple, np.ndarray)):
                for x in v:
                    codes.append(vocab.setdefault(str(x), len(vocab)))
                lengths[i] = len(v)
        self.vocab = vocab
        self.names = np.array(list(vocab), dtype=object)
        self.indptr = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        self.codes = np.asarray(codes, dtype=np.int64)
        # the transpose (value -> sorted positions): membership is one binary search per candidate
        owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        order = np.lexsort((owner, self.codes))
        self._holders = owner[order]
        self._holders_ptr = np.searchsorted(self.codes[order], np.arange(len(vocab) + 1)).astype(np.int64)

    def nonempty(self, pos: np.ndarray) -> np.ndarray:
        return self.indptr[pos + 1] > self.indptr[pos]

    def contains(self, pos: np.ndarray, value: str | None) -> np.ndarray:
        """For each position, whether its list contains `value`."""
        code = self.vocab.get(value) if value is not None else None
        if code is None or not len(pos):
            return np.zeros(len(pos), bool)
        holders = self._holders[self._holders_ptr[code]:self._holders_ptr[code + 1]]
        if not len(holders):
            return np.zeros(len(pos), bool)
        idx = np.minimum(np.searchsorted(holders, pos), len(holders) - 1)
        return holders[idx] == pos

    @cached_property
    def _pair_keys(self) -> np.ndarray:
        """Sorted (position, value code) pairs as one int64 key, for row-wise membership."""
        owner = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), np.diff(self.indptr))
        return np.sort(owner * max(len(self.vocab), 1) + self.codes)

    def contains_each(self, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
        """For each i, whether the list at pos[i] contains values[i] (None: no)."""
        if not len(pos) or not len(self.codes):
            return np.zeros(len(pos), bool)
        vals = pd.Series(values, dtype=object).where(pd.notna(pd.Series(values, dtype=object)), None)
        code = pd.Index(list(self.vocab)).get_indexer(vals.map(lambda v: None if v is None else str(v)))
        key = np.asarray(pos, np.int64) * max(len(self.vocab), 1) + code
        keys = self._pair_keys
        idx = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return (code >= 0) & (keys[idx] == key)

    def values(self, p: int) -> list[str]:
        return [str(x) for x in self.names[self.codes[self.indptr[p]:self.indptr[p + 1]]]]


@dataclass(frozen=True)
class AdFacts:
    """Per-ad eligibility inputs aligned to `ad_ids` (a version's positions). Read-only arrays."""

    ad_ids: np.ndarray
    in_catalog: np.ndarray
    has_campaign: np.ndarray
    campaign_id: np.ndarray       # object, None without campaign
    campaign_code: np.ndarray     # int64 code into `campaign_ids`, -1 without campaign
    campaign_ids: np.ndarray      # sorted unique campaign ids (code -> id)
    policy_status: np.ndarray
    status: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    daily_budget: np.ndarray      # float, NaN = unlimited
    spend_today: np.ndarray
    frequency_cap: np.ndarray     # float, NaN = none
    age_min: np.ndarray           # float, NaN = open
    age_max: np.ndarray
    brand_safety: np.ndarray      # tier name
    brand_rank: np.ndarray
    countries: ListColumn
    devices: ListColumn
    include: ListColumn
    exclude: ListColumn

    @cached_property
    def approved(self) -> np.ndarray:
        """policy_status == approved, per position (compared once, not per request)."""
        return self.policy_status == PolicyStatus.APPROVED.value

    @cached_property
    def inactive(self) -> np.ndarray:
        """Has a campaign whose status is not active, per position."""
        return self.has_campaign & (self.status != CampaignStatus.ACTIVE.value)

    @classmethod
    def build(cls, catalog: Catalog, ad_ids: np.ndarray) -> "AdFacts":
        ad_ids = np.asarray(ad_ids, dtype=object)
        ads = catalog.ads.set_index("ad_id", drop=False)
        rows = ads.reindex(pd.Index(ad_ids, dtype=object))
        in_cat = pd.Index(ads.index).get_indexer(pd.Index(ad_ids, dtype=object)) >= 0
        camp = rows["campaign_id"].astype(object)
        has_camp = (camp.notna() & rows["status"].notna()).to_numpy()  # campaign row must exist
        campaign_ids = np.array(sorted(catalog.campaigns["campaign_id"].astype(str)), dtype=object) \
            if len(catalog.campaigns) else np.empty(0, object)
        code = pd.Index(campaign_ids).get_indexer(camp.where(has_camp, None).to_numpy(dtype=object))

        def obj(col: str, default) -> np.ndarray:
            s = rows[col].astype(object) if col in rows else pd.Series([None] * len(rows), dtype=object)
            return np.array(s.where(s.notna(), default).to_numpy(dtype=object), dtype=object)

        def num(col: str) -> np.ndarray:
            return pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=np.float64)

        brand = obj("brand_safety", SafetyTier.NSFW.value)
        brand[~has_camp] = SafetyTier.NSFW.value
        facts = cls(
            ad_ids=ad_ids,
            in_catalog=in_cat,
            has_campaign=has_camp,
            campaign_id=np.where(has_camp, camp.to_numpy(dtype=object), None),
            campaign_code=code.astype(np.int64),
            campaign_ids=campaign_ids,
            policy_status=obj("policy_status", "(not in catalog)"),
            status=obj("status", CampaignStatus.ACTIVE.value),
            start_ns=_ns_array(rows["start_ts"], I64_MIN),
            end_ns=_ns_array(rows["end_ts"], I64_MAX),
            daily_budget=num("daily_budget"),
            spend_today=np.nan_to_num(num("spend_today"), nan=0.0),
            frequency_cap=num("frequency_cap"),
            age_min=num("age_min"),
            age_max=num("age_max"),
            brand_safety=brand,
            brand_rank=pd.Series(brand, dtype=object).map(TIER_RANK).fillna(SafetyTier.NSFW.rank)
            .to_numpy(dtype=np.int64),
            countries=ListColumn(rows["target_countries"].to_numpy(dtype=object)),
            devices=ListColumn(rows["target_devices"].to_numpy(dtype=object)),
            include=ListColumn(rows["include_communities"].to_numpy(dtype=object)),
            exclude=ListColumn(rows["exclude_communities"].to_numpy(dtype=object)),
        )
        for v in vars(facts).values():
            if isinstance(v, np.ndarray):
                v.setflags(write=False)
        return facts


class FrequencyIndex:
    """Every user's impressions sorted by time, with the campaign of each, so counting one
    user's impressions per campaign in a 24 h window is a binary search plus a tiny count."""

    def __init__(self, catalog: Catalog, campaign_ids: np.ndarray):
        imps = catalog.impressions
        if len(imps):
            imps = imps.sort_values(["user_id", "ts"], kind="stable")
            camp_of_ad = catalog.ads.set_index("ad_id")["campaign_id"]
            camp = imps["ad_id"].map(camp_of_ad)
            self._camp = pd.Index(campaign_ids).get_indexer(camp.astype(object).to_numpy()).astype(np.int64)
            self._ts = _ns_array(imps["ts"], I64_MIN)
            users = imps["user_id"].to_numpy(dtype=object)
            bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
            self._slices = {users[a]: (int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])}
        else:
            self._camp, self._ts, self._slices = np.empty(0, np.int64), np.empty(0, np.int64), {}

    def counts(self, user_id: str, at_ns: int, campaign_codes: np.ndarray) -> np.ndarray:
        """Impressions of `user_id` per campaign code in [at - 24 h, at)."""
        out = np.zeros(len(campaign_codes), np.int64)
        sl = self._slices.get(user_id)
        if sl is None:
            return out
        a, b = sl
        ts = self._ts[a:b]
        lo, hi = np.searchsorted(ts, [at_ns - DAY_NS, at_ns], side="left")
        window = self._camp[a + lo:a + hi]
        window = window[window >= 0]
        if not len(window):
            return out
        uniq, cnt = np.unique(window, return_counts=True)
        idx = np.clip(np.searchsorted(uniq, campaign_codes), 0, len(uniq) - 1)
        hit = uniq[idx] == campaign_codes
        out[hit] = cnt[idx[hit]]
        return out


@dataclass(frozen=True)
class RequestContext:
    """What one request contributes to the rules (computed once per request)."""

    request: Request
    ts_ns: int
    age_bucket: str
    community_tier: str
    frequency: FrequencyIndex

    @classmethod
    def build(cls, request: Request, age_bucket: str, community_tier: str | None,
              frequency: FrequencyIndex) -> "RequestContext":
        tier = community_tier if request.community_id is not None and community_tier else SafetyTier.SAFE.value
        return cls(request, ts_ns(request.ts), str(age_bucket), tier, frequency)

    @property
    def age_range(self) -> tuple[int, int] | None:
        return AGE_BUCKETS.get(self.age_bucket)

    @property
    def community_label(self) -> str:
        c = self.request.community_id
        return f"community {c}" if c is not None else "home feed (no community)"
