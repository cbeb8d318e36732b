"""A deterministic, realistic synthetic dataset in the import format (core/schema.py).

    python -m core.demo.generate --out DIR [--ads N --users M --seed S --format parquet|csv]
    python -m core.demo.generate --sample data/sample      # the small CSV sample kept in the repository

The story (hidden parts come back with `generate_dataset(..., return_truth=True)`):
- 34 verticals x 4 sub-themes (vocabularies in core/demo/copy.py). Communities: one per vertical,
  one or two per sub-theme, plus general ones (news, memes, ...; some sensitive, mature or nsfw).
- Users: country and age shape a prior over verticals; each user holds 1-6 interest verticals
  (Dirichlet weights) with a concentrated sub-theme mix inside each, and subscribes mostly to the
  communities of those interests. Some sign up during the window or are barely active (cold).
- Advertisers (Zipf-like popularity) own campaigns, each focused on one product of a sub-theme;
  campaigns exercise every eligibility rule (status, schedule, budget, geo, age, device, community
  include/exclude, brand safety, frequency caps with users at their cap in the last 24 h).
- Impressions over `days` days ending at `end`: placement; community None on the home feed (as in
  core.data.request.Request), otherwise mostly one the user subscribes to; device mostly the user's.
  65 % of slots show an ad relevant to the community or the user, 35 % a popular ad, sampled by
  ad popularity among ads eligible for the request (a small share stays ineligible, as in logs).
- Clicks: logistic in the user's interest in the ad's vertical and sub-theme, the request
  community's affinity to them (context), local hour, user propensity and ad quality.
- Structure each candidate source needs (`_planted`): user **cohorts** that click a shared set
  of ads drawn from unrelated verticals (co-click structure text similarity cannot see);
  **trending** ads, one per chosen community, shown and clicked much more there in the last
  days; campaigns whose targeting **includes** specific communities; and copy that overlaps
  across verticals as real ad copy does (so the map shows neighbouring and mixed regions, not one
  island per vertical): products shared by sub-themes of neighbouring verticals
  (copy.SHARED_PRODUCTS: travel rewards cards in travel and in banking), a shared vocabulary of
  features, benefits and audiences (copy.SHARED_*), advertisers that also sell in a neighbouring
  vertical in their own house style, and campaigns that borrow a neighbouring vertical's words.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.progress import Progress, report
from core.data.schema import LIST_SEPARATOR, TABLES, Table
from core.data.vocab import AGE_BUCKETS, SafetyTier
from core.demo import copy as T
from core.store.artifacts import write_via_temp

DEMO_END = datetime(2026, 11, 1)
SAMPLE = {"n_ads": 300, "n_users": 150, "impressions_per_user": 25.0}
DAY = 86_400

COUNTRY_P = {"US": .34, "GB": .09, "CA": .06, "DE": .07, "FR": .05, "IN": .10, "BR": .07, "AU": .04,
             "MX": .03, "ES": .03, "IT": .03, "NL": .02, "JP": .02, "SE": .015, "PL": .015}
UTC_OFFSET = {"US": -5, "GB": 0, "CA": -5, "DE": 1, "FR": 1, "IN": 5, "BR": -3, "AU": 10, "MX": -6,
              "ES": 1, "IT": 1, "NL": 1, "JP": 9, "SE": 1, "PL": 1}
COUNTRIES = list(COUNTRY_P)
AGES = [*AGE_BUCKETS, "unknown"]
AGE_P = [.04, .22, .31, .19, .12, .07, .03, .02]
DEVICES = ["ios", "android", "desktop", "mobile_web"]
DEVICE_P = [.38, .38, .17, .07]
PLACEMENTS = ["home_feed", "community_feed", "conversation"]
PLACEMENT_P = [.4, .4, .2]
TIERS = [t.value for t in SafetyTier]
HOUR_P = np.array([1.2, .7, .4, .3, .3, .4, .8, 1.5, 2, 2.2, 2.3, 2.5, 2.8, 2.6, 2.4, 2.5, 2.7, 3,
                   3.5, 4, 4.3, 4.2, 3.5, 2.2])
GEO_SETS = [["US"], ["US", "CA"], ["GB"], ["US", "GB", "CA", "AU"], ["DE", "AT", "CH"], ["FR"], ["IN"],
            ["BR"], ["DE", "FR", "ES", "IT", "NL"], ["JP"], ["MX", "ES"], ["GB", "IE"]]
GEO_P = [.22, .14, .1, .1, .08, .05, .07, .06, .06, .03, .04, .05]
AGE_RANGES = [(18, 24), (18, 34), (25, 44), (25, 54), (35, 64), (45, None), (13, 24), (18, 54), (25, None)]
DEVICE_SETS = [["ios"], ["android"], ["ios", "android"], ["desktop"], ["desktop", "mobile_web"]]
HIGH_BID = {"fintech": 1.8, "insurance": 2.0, "banking": 1.8, "b2b_software": 1.7, "crypto": 1.6,
            "real_estate": 1.7, "luxury": 1.5, "jobs": 1.3}
# Click model: logit = B0 + weights . (interest, context) features + user propensity + ad quality.
CLICK_B0, W_IV, W_IS, W_CV, W_CS, W_IVCV, W_HOUR = -6.0, 1.6, 0.6, 0.7, 1.0, 0.5, 0.3
# Planted structure (see the module docstring): logit boosts and the share of slots it fills.
W_COHORT, W_TREND = 3.5, 3.0
COHORT_USERS, COHORT_SIZE, COHORT_SLOT = 0.4, 6, 0.05  # share of users in a cohort, ads per cohort, slots
TREND_DAYS, TREND_SLOT = 3, 0.2  # trending window before the end, share of the community's slots
MULTI_VERTICAL, MIXED_COPY, INCLUDE_SHARE = 0.3, 0.35, 0.06


def _seconds(dt: datetime) -> int:
    return int(dt.timestamp()) if dt.tzinfo else int((dt - datetime(1970, 1, 1)).total_seconds())


def _ts(sec: np.ndarray) -> np.ndarray:
    return (np.asarray(sec, np.int64) * 1_000_000_000).astype("datetime64[ns]")


def _split(rng: np.random.Generator, total: int, n: int, weights: np.ndarray) -> np.ndarray:
    """`n` counts >= 1 summing to `total`, the surplus drawn in proportion to `weights`."""
    return 1 + rng.multinomial(total - n, weights / weights.sum())


def _row_sampler(w: np.ndarray):
    """Draw one column per row from row-wise weights: returns f(rows, u) -> columns."""
    w = np.asarray(w, np.float64) + 1e-12
    keys = (np.cumsum(w, 1) / w.sum(1, keepdims=True) + np.arange(len(w))[:, None]).ravel()
    n = w.shape[1]
    return lambda rows, u: np.minimum(np.searchsorted(keys, rows + u, side="right") - rows * n, n - 1)


def _group_sampler(groups: np.ndarray, weights: np.ndarray, n_groups: int):
    """Draw a member of a group by weight: returns (f(group, u) -> member indices, group sizes)."""
    order = np.lexsort((np.arange(len(groups)), groups))
    g, w = groups[order], weights[order].astype(np.float64)
    sizes = np.bincount(g, minlength=n_groups)
    tot = np.bincount(g, weights=w, minlength=n_groups)
    cum = np.cumsum(w) - np.repeat(np.cumsum(tot) - tot, sizes)
    keys = g + cum / np.maximum(tot[g], 1e-300)
    ends = np.cumsum(sizes) - 1
    return (lambda grp, u: order[np.minimum(np.searchsorted(keys, grp + u, side="right"), ends[grp])]), sizes


# ------------------------------------------------------------------------------------------ world
def _world() -> dict:
    """Verticals, sub-themes and communities with their affinity matrices (no randomness)."""
    vkeys = [v.key for v in T.VERTICALS]
    vidx = {k: i for i, k in enumerate(vkeys)}
    sub_names = [f"{v.key}/{s.key}" for v in T.VERTICALS for s in v.subthemes]
    sub_vert = np.array([i for i, v in enumerate(T.VERTICALS) for _ in v.subthemes])
    rows = []  # slug, topic, tier, vertical, sub-theme, size, related
    for i, v in enumerate(T.VERTICALS):
        rows.append((v.community, v.topic, "safe", i, -1, 3.0, v.related))
        for s in v.subthemes:
            j = sub_names.index(f"{v.key}/{s.key}")
            for k, c in enumerate(s.communities):
                slug, _, tier = c.partition(":")
                rows.append((slug, v.topic, tier or "safe", i, j, 1.0 if k == 0 else 0.6, v.related))
    for c, topic, rel in T.GENERAL_COMMUNITIES:
        slug, _, tier = c.partition(":")
        tier = tier or "safe"
        size = {"safe": 4.0, "sensitive": 3.0, "mature": 1.5}.get(tier, 1.0)
        rows.append((slug, topic, tier, -1, -1, size, T.weights(rel)))
    nc, nv, ns = len(rows), len(vkeys), len(sub_names)
    A, B = np.zeros((nc, nv)), np.zeros((nc, ns))
    for c, (_, _, _, v, s, _, rel) in enumerate(rows):
        for k, a in rel.items():
            A[c, vidx[k]] = 0.5 * a if v >= 0 else a
        if v >= 0:
            A[c, v] = 1.0
            B[c, sub_vert == v] = 0.5
        if s >= 0:
            B[c, s] = 1.0
    n_sub = np.bincount(sub_vert)[sub_vert]
    C = B + 0.3 * A[:, sub_vert] / n_sub + 0.002  # what a relevance slot shows in a community
    return {
        "vkeys": vkeys, "sub_names": sub_names, "sub_vert": sub_vert,
        "comm_ids": np.array([f"c_{r[0]}" for r in rows]), "comm_names": [f"r/{r[0]}" for r in rows],
        "comm_topics": [r[1] for r in rows], "comm_tiers": [r[2] for r in rows],
        "comm_rank": np.array([TIERS.index(r[2]) for r in rows]), "comm_vert": np.array([r[3] for r in rows]),
        "comm_sub": np.array([r[4] for r in rows]), "comm_size": np.array([r[5] for r in rows]),
        "A": A, "B": B, "C": C / C.sum(1, keepdims=True),
        "hours": np.array([[h in v.hours for h in range(24)] for v in T.VERTICALS]),
    }


# ------------------------------------------------------------------------------------------ users
def _users(rng: np.random.Generator, n: int, w: dict, end_s: int, days: int) -> dict:
    nv, ns = len(w["vkeys"]), len(w["sub_names"])
    country = rng.choice(len(COUNTRIES), n, p=np.array(list(COUNTRY_P.values())) / sum(COUNTRY_P.values()))
    age = rng.choice(len(AGES), n, p=AGE_P)
    dev_p = np.tile(DEVICE_P, (n, 1))
    dev_p[np.isin(country, [COUNTRIES.index(c) for c in ("IN", "BR", "MX")])] = [.12, .7, .1, .08]
    device = (dev_p.cumsum(1) < rng.random((n, 1))).sum(1)
    device = np.where(rng.random(n) < 0.01, -1, device)  # a few unknown devices
    age_w = np.array([np.array(v.age) / np.mean(v.age) for v in T.VERTICALS])  # (nv, 7)
    for i, v in enumerate(T.VERTICALS):
        if v.min_age:
            age_w[i, 0] = 0.0
    age_w = np.hstack([age_w, age_w.mean(1, keepdims=True)])
    ctry_w = np.array([[v.countries.get(c, 1.0) for c in COUNTRIES] for v in T.VERTICALS])
    prior = age_w[:, age].T * ctry_w[:, country].T + 1e-9
    k = np.clip(1 + rng.poisson(1.8, n), 1, 6)
    keys = np.log(prior) + rng.gumbel(size=(n, nv))
    rank = np.argsort(np.argsort(-keys, 1), 1)
    interest = rng.gamma(1.0, size=(n, nv)) * (rank < k[:, None])
    interest /= interest.sum(1, keepdims=True)
    starts = np.flatnonzero(np.r_[True, np.diff(w["sub_vert"]) != 0])
    share = rng.gamma(0.4, size=(n, ns)) + 1e-6
    share /= np.add.reduceat(share, starts, axis=1)[:, w["sub_vert"]]
    sub_interest = interest[:, w["sub_vert"]] * share
    general = (w["comm_vert"] < 0).astype(float)
    score = w["comm_size"] * (0.01 + 0.2 * general + 4 * sub_interest @ w["B"].T + 1.5 * interest @ w["A"].T)
    m = np.clip(2 + rng.poisson(6, n), 2, 25)
    crank = np.argsort(np.argsort(-(np.log(score) + rng.gumbel(size=score.shape)), 1), 1)
    subs = crank < m[:, None]
    new = rng.random(n) < 0.18  # signed up during the window: impressions start at signup
    signup = np.where(new, end_s - rng.random(n) * days * DAY,
                      end_s - days * DAY - rng.exponential(400, n).clip(0, 2500) * DAY).astype(np.int64)
    return {"country": country, "age": age, "device": device, "interest": interest, "share": share,
            "sub_interest": sub_interest, "subs": subs, "visit": score * subs, "signup": signup,
            "propensity": rng.normal(0, 0.5, n), "activity": rng.lognormal(0, 0.9, n)}


# ---------------------------------------------------------------------------------------- catalog
def _brand(a: str, b: str) -> str:
    return a + b if b[:1].islower() else f"{a} {b}"


def _advertiser_names(rng: np.random.Generator, adv_vert: np.ndarray) -> tuple[list[str], list[str]]:
    used: set[str] = set()
    pools: dict[int, list[str]] = {}
    for i, v in enumerate(T.VERTICALS):
        groups = [[_brand(a, b) for a in v.brand_a for b in v.brand_b],
                  [_brand(a, b) for a in T.GENERIC_BRAND_A for b in v.brand_b],
                  [_brand(a, b) for a in v.brand_a for b in T.GENERIC_BRAND_B]]
        pools[i] = [g[j] for g in groups for j in rng.permutation(len(g))]
    names, domains, cursor = [], [], dict.fromkeys(pools, 0)
    for v in adv_vert.tolist():
        pool, name = pools[v], None
        while cursor[v] < len(pool) and name is None:
            cand = pool[cursor[v]]
            cursor[v] += 1
            if cand not in used and T.slug(cand) not in used:
                name = cand
        if name is None:  # pools exhausted (hundreds of advertisers per vertical): number them
            name = f"{pool[len(names) % len(pool)]} {len(names) + 1}"
        used.update((name, T.slug(name)))
        names.append(name)
        domains.append(f"{T.slug(name)}.example")
    return names, domains


def _neighbours(rng: np.random.Generator, verts: np.ndarray) -> np.ndarray:
    """One related vertical per entry of `verts`, drawn by the relation's weight."""
    keys = {v.key: i for i, v in enumerate(T.VERTICALS)}
    out = np.empty(len(verts), np.int64)
    for j, (v, u) in enumerate(zip(verts.tolist(), rng.random(len(verts)).tolist())):
        rel = T.VERTICALS[v].related
        ks, ws = [keys[k] for k in rel], np.array(list(rel.values()))
        out[j] = ks[min(int(np.searchsorted(np.cumsum(ws) / ws.sum(), u, "right")), len(ks) - 1)]
    return out


@dataclass
class _Advertisers:
    """Who advertises: vertical, brand, Zipf-like popularity, brand-safety tier, and each
    advertiser's Gamma preference over the sub-themes of its vertical."""

    vert: np.ndarray
    names: list[str]
    domains: list[str]
    pop: np.ndarray
    safety: np.ndarray
    pref: np.ndarray  # (advertisers, most sub-themes of a vertical); 0 past the vertical's own


@dataclass
class _Offers:
    """What each campaign sells: its advertiser, rank within it, vertical, sub-theme, product, and
    the neighbouring vertical whose vocabulary its copy borrows (-1: none)."""

    adv: np.ndarray
    k: np.ndarray
    vert: np.ndarray
    sub: np.ndarray
    mix: np.ndarray
    product: list[str]


@dataclass
class _Schedule:
    """Each campaign's status and serving window (unix seconds; NaN start/end: open-ended)."""

    status: np.ndarray
    start: np.ndarray
    end: np.ndarray
    future: np.ndarray  # active but not started yet
    past: np.ndarray  # active but already over
    serve_lo: np.ndarray
    serve_hi: np.ndarray  # end, or the pause time of a paused campaign


@dataclass
class _Bids:
    budget: np.ndarray  # NaN: no daily budget
    spend: np.ndarray
    exhausted: np.ndarray
    bid: np.ndarray
    cpc: np.ndarray  # bid type cpc (else cpm)
    cap: np.ndarray  # frequency cap per day; -1: none


@dataclass
class _Targeting:
    geo: list[list[str]]
    age_min: list[int | None]
    age_max: list[int | None]
    devices: list[list[str]]
    include: list[list[str]]
    exclude: list[list[str]]


@dataclass
class _Ads:
    cmp: np.ndarray  # campaign of each ad
    policy: np.ndarray
    prefix: np.ndarray  # landing-domain prefix per campaign
    copy: list[tuple[str, str, str]]  # title, body, call to action
    pop: np.ndarray


def _advertisers(rng: np.random.Generator, n_ads: int, n_sub: np.ndarray) -> _Advertisers:
    V, nv = T.VERTICALS, len(T.VERTICALS)
    vw = np.array([v.weight for v in V])
    n_adv = min(n_ads, max(min(nv, n_ads), round(n_ads / 14)))
    if n_adv >= nv:
        adv_vert = rng.permutation(np.r_[np.arange(nv), rng.choice(nv, n_adv - nv, p=vw / vw.sum())])
    else:
        adv_vert = rng.choice(nv, n_adv, replace=False, p=vw / vw.sum())
    names, domains = _advertiser_names(rng, adv_vert)
    adv_pop = (1.0 + rng.permutation(n_adv)) ** -0.85  # Zipf-like
    adv_safety = rng.choice(len(TIERS), n_adv, p=[.4, .3, .15, .15])
    pref = rng.gamma(0.6, size=(n_adv, n_sub.max())) * (np.arange(n_sub.max()) < n_sub[adv_vert][:, None])
    return _Advertisers(adv_vert, names, domains, adv_pop, adv_safety, pref)


def _campaign_offers(rng: np.random.Generator, n_ads: int, adv: _Advertisers, n_sub: np.ndarray,
                     first_sub: np.ndarray) -> _Offers:
    n_adv = len(adv.vert)
    n_cmp = int(np.clip(round(n_ads / 3.6), n_adv, n_ads))
    cmp_adv = np.repeat(np.arange(n_adv), _split(rng, n_cmp, n_adv, adv.pop ** 0.3))
    cmp_k = np.arange(n_cmp) - np.searchsorted(cmp_adv, cmp_adv) + 1
    # Some advertisers also sell in a neighbouring vertical (under the same brand).
    second = _neighbours(rng, adv.vert)
    cross = (rng.random(n_adv) < MULTI_VERTICAL)[cmp_adv] & (cmp_k > 1) & (rng.random(n_cmp) < 0.5)
    cv = np.where(cross, second[cmp_adv], adv.vert[cmp_adv])
    own_sub = first_sub[cv] + _row_sampler(adv.pref)(cmp_adv, rng.random(n_cmp))
    cmp_sub = np.where(cross, first_sub[cv] + (rng.random(n_cmp) * n_sub[cv]).astype(np.int64), own_sub)
    mix = np.where(rng.random(n_cmp) < MIXED_COPY, _neighbours(rng, cv), -1)  # borrowed vocabulary
    mix = np.where(cross, adv.vert[cmp_adv], mix)  # a brand's house style follows it to its second vertical
    subs = [T.products_of(v.key, s.key) for v in T.VERTICALS for s in v.subthemes]  # own + shared
    product = [subs[s][int(u * len(subs[s]))] for s, u in zip(cmp_sub, rng.random(n_cmp))]
    return _Offers(cmp_adv, cmp_k, cv, cmp_sub, mix, product)


def _campaign_schedule(rng: np.random.Generator, n_cmp: int, end_s: int, days: int) -> _Schedule:
    status = rng.choice(["active", "paused", "ended"], n_cmp, p=[.92, .05, .03])
    u = rng.random((n_cmp, 8))
    start = np.where(u[:, 0] < .6, end_s - (days + 5 + u[:, 1] * 120) * DAY,
                     np.where(u[:, 0] < .85, end_s - (1 + u[:, 1] * (days - 2)) * DAY, np.nan))
    end = np.where(u[:, 2] < .45, np.nan, end_s + (1 + u[:, 3] * 89) * DAY)
    act = status == "active"
    future, past = act & (u[:, 4] < .02), act & (u[:, 4] > .98)
    start = np.where(future, end_s + (1 + u[:, 5] * 29) * DAY, start)
    end = np.where(future & (end < start + 7 * DAY), start + 30 * DAY, end)
    ended = past | (status == "ended")
    end = np.where(ended, end_s - (1 + u[:, 5] * (days - 3)) * DAY, end)
    start = np.where(ended & ~(start < end - 5 * DAY), end - (10 + u[:, 6] * 80) * DAY, start)
    start, end = np.floor(start / DAY) * DAY, np.floor(end / DAY) * DAY + DAY - 1
    pause = np.where(status == "paused", end_s - (1 + u[:, 7] * days / 2) * DAY, np.inf)
    serve_lo, serve_hi = np.nan_to_num(start, nan=-np.inf), np.fmin(np.nan_to_num(end, nan=np.inf), pause)
    return _Schedule(status, start, end, future, past, serve_lo, serve_hi)


def _campaign_bids(rng: np.random.Generator, u: np.ndarray, cv: np.ndarray, sched: _Schedule) -> _Bids:
    """Budget, spend today, bid and frequency cap; `u`: 5 uniform columns per campaign."""
    n_cmp = len(cv)
    budget = np.where(u[:, 0] < .1, np.nan, np.maximum(20, np.round(np.exp(rng.normal(np.log(250), 1, n_cmp)), -1)))
    serving = (sched.status == "active") & ~sched.future & ~sched.past  # only these spend today
    exhausted = (u[:, 1] < .05) & ~np.isnan(budget) & serving
    spend = np.where(np.isnan(budget), np.round(u[:, 2] * 400, 2), np.round(budget * (.05 + .9 * u[:, 2]), 2))
    spend = np.where(exhausted, np.ceil(budget * (1 + .08 * u[:, 2]) * 100) / 100, np.where(serving, spend, 0.0))
    mult = np.array([HIGH_BID.get(T.VERTICALS[v].key, 1.0) for v in cv])
    cpc = u[:, 3] < .4
    bid = np.round(np.where(cpc, np.exp(rng.normal(np.log(.8), .5, n_cmp)),
                            np.exp(rng.normal(np.log(5), .45, n_cmp))) * mult, 2)
    cap = np.where(u[:, 4] < .3, rng.choice([1, 2, 3, 3, 4, 5], n_cmp), -1)
    return _Bids(budget, spend, exhausted, bid, cpc, cap)


def _campaign_targeting(rng: np.random.Generator, u: np.ndarray, cv: np.ndarray, cmp_sub: np.ndarray,
                        w: dict) -> _Targeting:
    """Geo, age (never below the vertical's minimum age), device and community include/exclude
    targeting; `u`: 5 uniform columns per campaign."""
    V, n_cmp = T.VERTICALS, len(cv)
    geo = [GEO_SETS[i] if x < .1 else [] for x, i in zip(u[:, 0], rng.choice(len(GEO_SETS), n_cmp, p=GEO_P))]
    ages = [AGE_RANGES[i] if x < .08 else (None, None)
            for x, i in zip(u[:, 1], rng.integers(0, len(AGE_RANGES), n_cmp))]
    age_min, age_max = [], []
    for (lo, hi), v in zip(ages, cv):
        floor = V[v].min_age
        if floor and (lo is None or lo < floor):
            lo = floor
        age_min.append(lo)
        age_max.append(hi)
    dev_p = np.where(np.array([V[v].key == "b2b_software" for v in cv]), .25, .07)
    devs = [DEVICE_SETS[i] if x < p else [] for x, p, i in zip(u[:, 2], dev_p, rng.integers(0, 5, n_cmp))]
    cid = w["comm_ids"]
    inc = [list(cid[(w["comm_sub"] == s) | ((w["comm_vert"] == cv[i]) & (w["comm_sub"] < 0))])
           if u[i, 3] < INCLUDE_SHARE else [] for i, s in enumerate(cmp_sub)]
    risky = np.flatnonzero((w["comm_rank"] > 0) | np.isin(w["comm_topics"], ["news", "politics"]))
    exc = [sorted(cid[rng.choice(risky, 1 + int(3 * x / .12), replace=False)]) if x < .12 else []
           for x in u[:, 4]]
    return _Targeting(geo, age_min, age_max, devs, inc, exc)


def _ads(rng: np.random.Generator, n_ads: int, adv: _Advertisers, offers: _Offers) -> _Ads:
    """Ads per campaign (Gamma-weighted counts), policy status, copy and popularity."""
    V, n_cmp, cv = T.VERTICALS, len(offers.adv), offers.vert
    n_per = _split(rng, n_ads, n_cmp, rng.gamma(2.0, size=n_cmp))
    ad_cmp = np.repeat(np.arange(n_cmp), n_per)
    policy = rng.choice(["approved", "rejected", "pending"], n_ads, p=[.95, .025, .025])
    prefix = rng.choice(["", "shop.", "get.", "try."], n_cmp, p=[.7, .1, .1, .1])
    r = rng.random((n_ads, 16))
    k_in_cmp = np.arange(n_ads) - np.searchsorted(ad_cmp, ad_cmp)
    r[:, 13:15] = (rng.random((n_cmp, 2))[ad_cmp] + 0.618034 * k_in_cmp[:, None]) % 1.0  # distinct templates
    copy = [T.write_ad_copy(V[cv[c]], offers.product[c], adv.names[offers.adv[c]],
                            prefix[c] + adv.domains[offers.adv[c]], ri,
                            mix=V[offers.mix[c]] if offers.mix[c] >= 0 else None)
            for ri, c in zip(r.tolist(), ad_cmp.tolist())]
    pop = adv.pop[offers.adv][ad_cmp] * rng.lognormal(0, .5, n_cmp)[ad_cmp] * rng.lognormal(0, .5, n_ads)
    return _Ads(ad_cmp, policy, prefix, copy, pop)


def _nullable_ints(xs) -> pd.arrays.IntegerArray:
    return pd.array([None if x is None or x < 0 else int(x) for x in xs], dtype="Int64")


def _catalog_frames(adv: _Advertisers, offers: _Offers, sched: _Schedule, bids: _Bids, tgt: _Targeting,
                    objective: np.ndarray, ads: _Ads) -> dict[str, pd.DataFrame]:
    """The advertisers, campaigns and ads tables."""
    V, n_ads = T.VERTICALS, len(ads.cmp)
    cmp_ids = [f"cmp_{a + 1:04d}_{k}" for a, k in zip(offers.adv, offers.k)]
    adv_ids = [f"adv_{i + 1:04d}" for i in range(len(adv.vert))]
    start, end = sched.start, sched.end
    return {
        "advertisers": pd.DataFrame({"advertiser_id": adv_ids, "name": adv.names,
                                     "vertical": [V[v].key for v in adv.vert],
                                     "brand_safety": [TIERS[t] for t in adv.safety]}),
        "campaigns": pd.DataFrame({
            "campaign_id": cmp_ids, "advertiser_id": [adv_ids[a] for a in offers.adv],
            "name": [f"{T.cap(p)} — {o}" for p, o in zip(offers.product, objective)], "status": sched.status,
            "start_ts": pd.to_datetime(_ts(np.nan_to_num(start, nan=0))).where(~np.isnan(start)),
            "end_ts": pd.to_datetime(_ts(np.nan_to_num(end, nan=0))).where(~np.isnan(end)),
            "daily_budget": bids.budget, "spend_today": bids.spend, "bid": bids.bid,
            "bid_type": np.where(bids.cpc, "cpc", "cpm"), "frequency_cap": _nullable_ints(bids.cap),
            "target_countries": tgt.geo, "age_min": _nullable_ints(tgt.age_min),
            "age_max": _nullable_ints(tgt.age_max), "target_devices": tgt.devices,
            "include_communities": tgt.include, "exclude_communities": tgt.exclude}),
        "ads": pd.DataFrame({
            "ad_id": [f"ad_{i + 1:06d}" for i in range(n_ads)], "campaign_id": [cmp_ids[c] for c in ads.cmp],
            "title": [c[0] for c in ads.copy], "body": [c[1] for c in ads.copy],
            "call_to_action": [c[2] for c in ads.copy],
            "landing_domain": [ads.prefix[c] + adv.domains[offers.adv[c]] for c in ads.cmp],
            "vertical": [V[offers.vert[c]].key for c in ads.cmp], "policy_status": ads.policy}),
    }


def _targeting_arrays(tgt: _Targeting, w: dict) -> dict:
    """The targeting as per-campaign arrays and bit masks, for vectorised eligibility (`_eligible`)."""
    cid = w["comm_ids"]
    cidx = {c: i for i, c in enumerate(cid)}
    n_cmp = len(tgt.geo)
    inc_m, exc_m = np.zeros((n_cmp, len(cid)), bool), np.zeros((n_cmp, len(cid)), bool)
    for i, (a, b) in enumerate(zip(tgt.include, tgt.exclude)):
        inc_m[i, [cidx[c] for c in a]] = True
        exc_m[i, [cidx[c] for c in b]] = True
    ctry_bit = {c: i for i, c in enumerate(COUNTRIES)}
    return {
        "geo_any": np.array([not g for g in tgt.geo]),
        "geo_mask": np.array([sum(1 << ctry_bit[c] for c in g if c in ctry_bit) for g in tgt.geo], np.int64),
        "age_lo": np.array([np.nan if a is None else a for a in tgt.age_min], float),
        "age_hi": np.array([np.inf if b is None else b for b in tgt.age_max], float),
        "age_any": np.array([a is None and b is None for a, b in zip(tgt.age_min, tgt.age_max)]),
        "dev_any": np.array([not d for d in tgt.devices]),
        "dev_mask": np.array([sum(1 << DEVICES.index(d) for d in ds) for ds in tgt.devices], np.int64),
        "inc_any": inc_m.any(1), "inc": inc_m, "exc": exc_m,
    }


def _catalog(rng: np.random.Generator, n_ads: int, w: dict, end_s: int, days: int) -> dict:
    """Advertisers, their campaigns and the campaigns' ads: the three tables (`frames`) and the
    arrays the impression log and the click model need. The draws happen in this order, so a seed
    gives the same catalog."""
    n_sub = np.bincount(w["sub_vert"], minlength=len(T.VERTICALS))
    first_sub = np.r_[0, np.cumsum(n_sub)[:-1]]
    adv = _advertisers(rng, n_ads, n_sub)
    offers = _campaign_offers(rng, n_ads, adv, n_sub, first_sub)
    n_cmp = len(offers.adv)
    sched = _campaign_schedule(rng, n_cmp, end_s, days)
    u = rng.random((n_cmp, 10))
    bids = _campaign_bids(rng, u[:, :5], offers.vert, sched)
    tgt = _campaign_targeting(rng, u[:, 5:], offers.vert, offers.sub, w)
    objective = rng.choice(T.OBJECTIVES, n_cmp)
    ads = _ads(rng, n_ads, adv, offers)
    ad_quality = rng.normal(0, .3, n_ads)
    rules = _targeting_arrays(tgt, w)
    return {
        "frames": _catalog_frames(adv, offers, sched, bids, tgt, objective, ads), "ad_cmp": ads.cmp,
        "ad_vert": offers.vert[ads.cmp], "ad_sub": offers.sub[ads.cmp], "ad_pop": ads.pop, "ad_quality": ad_quality,
        "approved": ads.policy == "approved", "status": sched.status, "serve_lo": sched.serve_lo,
        "serve_hi": sched.serve_hi, "start": sched.start, "end": sched.end, "exhausted": bids.exhausted,
        "cap": bids.cap, **rules, "safety": adv.safety[offers.adv],
    }


def _eligible(cat: dict, w: dict, cmp, t, ctry, age, dev, comm) -> np.ndarray:
    """Static eligibility of campaign `cmp` for requests (time, user country/age, device, community).
    Status and budget describe the end of the window, so they are not applied to the logs."""
    age_rng = np.array([AGE_BUCKETS.get(a, (np.nan, np.nan)) for a in AGES], float)
    ulo, uhi = age_rng[age, 0], age_rng[age, 1]
    home, cc = comm < 0, np.maximum(comm, 0)
    ok = (t >= cat["serve_lo"][cmp]) & (t <= cat["serve_hi"][cmp])
    ok &= cat["geo_any"][cmp] | ((cat["geo_mask"][cmp] >> ctry) & 1).astype(bool)
    lo = np.nan_to_num(cat["age_lo"][cmp], nan=-np.inf)
    ok &= cat["age_any"][cmp] | ((ulo <= cat["age_hi"][cmp]) & (uhi >= lo))
    ok &= cat["dev_any"][cmp] | ((dev >= 0) & ((cat["dev_mask"][cmp] >> np.maximum(dev, 0)) & 1).astype(bool))
    ok &= ~cat["inc_any"][cmp] | (~home & cat["inc"][cmp, cc])
    ok &= home | ~cat["exc"][cmp, cc]
    ok &= home | (w["comm_rank"][cc] <= cat["safety"][cmp])
    return ok


# ------------------------------------------------------------------------------- planted structure
def _planted(rng: np.random.Generator, users: dict, cat: dict, w: dict, end_s: int, days: int) -> dict:
    """User cohorts with the ads each cohort clicks (drawn from any vertical), and one trending ad
    per chosen (busy, safe) community with the time its trend starts."""
    n_users = len(users["country"])
    c = cat["ad_cmp"]
    broad = (cat["approved"] & cat["geo_any"][c] & cat["age_any"][c] & cat["dev_any"][c] & ~cat["inc_any"][c]
             & ~cat["exc"][c].any(1) & (cat["serve_lo"][c] <= end_s - days * DAY) & (cat["serve_hi"][c] >= end_s))
    pool = np.flatnonzero(broad)
    if len(pool) < COHORT_SIZE:  # tiny catalogs
        pool = np.arange(len(c))
    n_coh = max(2, n_users // 250)
    size = min(COHORT_SIZE, len(pool))
    cohort_ads = np.stack([rng.choice(pool, size, replace=False) for _ in range(n_coh)])
    user_cohort = np.where(rng.random(n_users) < COHORT_USERS, rng.integers(0, n_coh, n_users), -1)
    nc = len(w["comm_ids"])
    safe = np.flatnonzero(w["comm_rank"] == 0)
    busy = users["visit"].sum(0)[safe] ** 2 + 1e-12
    trend_comm = np.sort(rng.choice(safe, min(len(safe), max(2, nc // 25)), replace=False, p=busy / busy.sum()))
    trend_ad = np.empty(len(trend_comm), np.int64)
    for j, k in enumerate(trend_comm):  # an ad the community cares about, when there is one
        fit = pool[w["A"][k, cat["ad_vert"][pool]] > 0]
        trend_ad[j] = rng.choice(fit if len(fit) else pool)
    comm_trend = np.full(nc, -1, np.int64)
    comm_trend[trend_comm] = np.arange(len(trend_comm))
    return {"cohort_ads": cohort_ads, "user_cohort": user_cohort, "trend_comm": trend_comm, "trend_ad": trend_ad,
            "comm_trend": comm_trend, "trend_start": end_s - TREND_DAYS * DAY}


def _planted_boost(imp: dict, planted: dict) -> np.ndarray:
    """The click logit's planted part: a cohort's own ads, and a community's trending ad in its window."""
    u, a, c = imp["uid"], imp["ad"], imp["comm"]
    coh = planted["user_cohort"][u]
    in_coh = (coh >= 0) & (planted["cohort_ads"][np.maximum(coh, 0)] == a[:, None]).any(1)
    tr = np.where(c >= 0, planted["comm_trend"][np.maximum(c, 0)], -1)
    trending = (tr >= 0) & (planted["trend_ad"][np.maximum(tr, 0)] == a) & (imp["t"] >= planted["trend_start"])
    return W_COHORT * in_coh + W_TREND * trending


# ------------------------------------------------------------------------------------ impressions
_IMPRESSION_KEYS = ("uid", "t", "comm", "placement", "dev", "ad")


def _requests(rng: np.random.Generator, users: dict, w: dict, end_s: int, days: int,
              per_user: float) -> dict[str, np.ndarray]:
    """The requests behind the impressions: user (`uid`, by activity since signup), time (local
    hour of day), placement, community (-1 on the home feed) and device (mostly the user's)."""
    n_users, nc = len(users["country"]), len(w["comm_ids"])
    start_u = np.maximum(users["signup"], end_s - days * DAY)
    weight = users["activity"] * (end_s - start_u) / (days * DAY)
    n_u = rng.poisson(per_user * n_users * weight / weight.sum())
    uid = np.repeat(np.arange(n_users), n_u)
    n = len(uid)
    if n == 0:
        return {k: np.empty(0, np.int64) for k in _IMPRESSION_KEYS[:-1]}
    off = np.array([UTC_OFFSET[c] for c in COUNTRIES])[users["country"][uid]] * 3600
    t = start_u[uid] + rng.random(n) * (end_s - start_u[uid])
    hour = rng.choice(24, n, p=HOUR_P / HOUR_P.sum())
    t2 = np.floor((t + off) / DAY) * DAY - off + hour * 3600 + rng.random(n) * 3600
    t = np.where((t2 >= start_u[uid]) & (t2 < end_s), t2, t).astype(np.int64)
    placement = rng.choice(3, n, p=PLACEMENT_P)
    comm = np.where(rng.random(n) < .9, _row_sampler(users["visit"])(uid, rng.random(n)),
                    rng.choice(nc, n, p=w["comm_size"] / w["comm_size"].sum()))
    comm = np.where(placement == 0, -1, comm)
    udev = users["device"][uid]
    dev = np.where((rng.random(n) < .88) & (udev >= 0), udev, rng.integers(0, len(DEVICES), n))
    return {"uid": uid, "t": t, "comm": comm, "placement": placement, "dev": dev}


@dataclass
class _AdPool:
    """The ads that served during the window, with samplers by sub-theme, vertical and popularity."""

    ids: np.ndarray
    in_sub: Callable[[np.ndarray, np.ndarray], np.ndarray]
    sub_size: np.ndarray
    in_vert: Callable[[np.ndarray, np.ndarray], np.ndarray]
    vert_size: np.ndarray
    pop_cum: np.ndarray

    def by_pop(self, rng: np.random.Generator, k: int) -> np.ndarray:
        i = np.searchsorted(self.pop_cum, rng.random(k) * self.pop_cum[-1], "right")
        return self.ids[np.minimum(i, len(self.ids) - 1)]


def _ad_pool(cat: dict, w: dict, lo_s: int, end_s: int) -> _AdPool:
    pool = cat["approved"] & (cat["serve_hi"][cat["ad_cmp"]] >= lo_s) & (cat["serve_lo"][cat["ad_cmp"]] < end_s)
    ids = np.flatnonzero(pool) if pool.any() else np.arange(len(pool))  # tiny catalogs: any ad
    pop = cat["ad_pop"][ids]
    in_sub, sub_size = _group_sampler(cat["ad_sub"][ids], pop, len(w["sub_names"]))
    in_vert, vert_size = _group_sampler(cat["ad_vert"][ids], pop, len(w["vkeys"]))
    return _AdPool(ids, in_sub, sub_size, in_vert, vert_size, np.cumsum(pop))


@dataclass
class _Slots:
    """What each impression slot shows: `kind` 0 any popular ad, 1 an ad of sub-theme `sub`, 2 an
    ad of its vertical `vert` (small catalogs), 3 one of the user's cohort ads (`coh`), 4 the
    request community's trending ad (`trend`, in its window)."""

    kind: np.ndarray
    sub: np.ndarray
    vert: np.ndarray
    coh: np.ndarray
    trend: np.ndarray


def _slots(rng: np.random.Generator, req: dict, users: dict, w: dict, pool: _AdPool, planted: dict) -> _Slots:
    uid, comm, n, ns = req["uid"], req["comm"], len(req["uid"]), len(w["sub_names"])
    by_comm, by_user = _row_sampler(w["C"]), _row_sampler(users["sub_interest"])
    relevant = rng.random(n) < .65
    sub = np.where(comm >= 0, np.where(rng.random(n) < .55, by_comm(np.maximum(comm, 0), rng.random(n)),
                                       by_user(uid, rng.random(n))),
                   np.where(rng.random(n) < .9, by_user(uid, rng.random(n)), rng.integers(0, ns, n)))
    vert = w["sub_vert"][sub]
    kind = np.where(relevant, np.where(pool.sub_size[sub] > 0, 1, np.where(pool.vert_size[vert] > 0, 2, 0)), 0)
    coh = planted["user_cohort"][uid]
    kind = np.where((coh >= 0) & (rng.random(n) < COHORT_SLOT), 3, kind)
    tr = np.where(comm >= 0, planted["comm_trend"][np.maximum(comm, 0)], -1)
    kind = np.where((tr >= 0) & (req["t"] >= planted["trend_start"]) & (rng.random(n) < TREND_SLOT), 4, kind)
    return _Slots(kind, sub, vert, coh, tr)


def _draw_ads(rng: np.random.Generator, req: dict, users: dict, cat: dict, w: dict, pool: _AdPool,
              slots: _Slots, planted: dict) -> tuple[np.ndarray, int]:
    """An ad per slot, redrawn (up to 10 rounds, any popular ad after 6) while the request is not
    eligible for it; (ads, slots still ineligible)."""
    ctry, age = users["country"][req["uid"]], users["age"][req["uid"]]
    cohort_ads = planted["cohort_ads"]
    ad = np.empty(len(slots.kind), np.int64)
    todo = np.arange(len(slots.kind))
    for round_ in range(10):
        k = np.where(round_ < 6, slots.kind[todo], 0)
        for code, draw, grp in ((1, pool.in_sub, slots.sub), (2, pool.in_vert, slots.vert)):
            i = todo[k == code]
            ad[i] = pool.ids[draw(grp[i], rng.random(len(i)))]
        i = todo[k == 3]
        ad[i] = cohort_ads[slots.coh[i], rng.integers(0, cohort_ads.shape[1], len(i))]
        i = todo[k == 4]
        ad[i] = planted["trend_ad"][slots.trend[i]]
        ad[todo[k == 0]] = pool.by_pop(rng, int((k == 0).sum()))
        i = todo
        ok = _eligible(cat, w, cat["ad_cmp"][ad[i]], req["t"][i], ctry[i], age[i], req["dev"][i], req["comm"][i])
        todo = todo[~ok]
        if len(todo) == 0:
            break
    return ad, len(todo)


def _within_caps(uid: np.ndarray, t: np.ndarray, ad: np.ndarray, cat: dict) -> np.ndarray:
    """Impressions kept by the campaigns' frequency caps per calendar day (the serving system
    enforced them)."""
    n = len(uid)
    cmp = cat["ad_cmp"][ad]
    capped = cat["cap"][cmp] > 0
    order = np.lexsort((t, t // DAY, cmp, uid))
    key = np.stack([uid, cmp, t // DAY])[:, order]
    new = np.r_[True, (np.diff(key, axis=1) != 0).any(0)]
    grp_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - grp_start
    return ~capped | (rank < cat["cap"][cmp])


def _impressions(rng: np.random.Generator, users: dict, cat: dict, w: dict, end_s: int, days: int,
                 per_user: float, planted: dict) -> dict:
    """The impression log (arrays by `_IMPRESSION_KEYS`) and the share of slots left ineligible."""
    req = _requests(rng, users, w, end_s, days, per_user)
    n = len(req["uid"])
    if n == 0:
        return {k: np.empty(0, np.int64) for k in _IMPRESSION_KEYS} | {"ineligible_share": 0.0}
    pool = _ad_pool(cat, w, end_s - days * DAY, end_s)
    slots = _slots(rng, req, users, w, pool, planted)
    ad, n_ineligible = _draw_ads(rng, req, users, cat, w, pool, slots, planted)
    keep = _within_caps(req["uid"], req["t"], ad, cat)
    out = {k: v[keep] for k, v in (req | {"ad": ad}).items()}
    out["ineligible_share"] = float(n_ineligible / max(n, 1))
    return out


def _cap_bursts(rng: np.random.Generator, users: dict, cat: dict, w: dict, end_s: int) -> dict:
    """Users who hit a campaign's frequency cap in the 24 h before `end_s` (home feed)."""
    ok_cmp = ((cat["status"] == "active") & (cat["cap"] > 0) & ~cat["exhausted"]
              & ~(cat["start"] > end_s) & ~(cat["end"] < end_s) & (cat["serve_hi"] >= end_s))
    n_cmp = len(cat["cap"])
    has_ad = np.bincount(cat["ad_cmp"][cat["approved"]], minlength=n_cmp) > 0
    cands = np.flatnonzero(ok_cmp & has_ad)
    empty = {k: np.empty(0, np.int64) for k in _IMPRESSION_KEYS}
    active = np.flatnonzero(users["signup"] < end_s - DAY)
    if len(cands) == 0 or len(active) == 0:
        return empty
    who = rng.choice(active, max(1, round(0.03 * len(users["country"]))), replace=False)
    dev = np.where(users["device"][who] >= 0, users["device"][who], 0)
    cpop = np.bincount(cat["ad_cmp"], weights=cat["ad_pop"], minlength=n_cmp)[cands]
    chosen = np.full(len(who), -1)
    for _ in range(10):
        todo = np.flatnonzero(chosen < 0)
        i = np.searchsorted(np.cumsum(cpop), rng.random(len(todo)) * cpop.sum(), "right")
        pick = cands[i.clip(0, len(cands) - 1)]
        ok = _eligible(cat, w, pick, np.full(len(todo), end_s - 1), users["country"][who[todo]],
                       users["age"][who[todo]], dev[todo], np.full(len(todo), -1))
        chosen[todo[ok]] = pick[ok]
    sel = chosen >= 0
    who, dev, chosen = who[sel], dev[sel], chosen[sel]
    reps = cat["cap"][chosen]
    appr = np.flatnonzero(cat["approved"])
    in_cmp, _ = _group_sampler(cat["ad_cmp"][appr], np.ones(len(appr)), n_cmp)
    k = int(reps.sum())
    return {"uid": np.repeat(who, reps), "t": (end_s - 600 - rng.random(k) * 22 * 3600).astype(np.int64),
            "comm": np.full(k, -1), "placement": np.zeros(k, np.int64), "dev": np.repeat(dev, reps),
            "ad": appr[in_cmp(np.repeat(chosen, reps), rng.random(k))]}


def _click_prob(imp: dict, users: dict, cat: dict, w: dict, planted: dict) -> np.ndarray:
    u, a, c = imp["uid"], imp["ad"], imp["comm"]
    v, s = cat["ad_vert"][a], cat["ad_sub"][a]
    iv = users["interest"][u, v] / users["interest"][u].max(1)
    share = users["share"][u, s]
    cc, home = np.maximum(c, 0), c < 0
    cv = np.where(home, 0.0, w["A"][cc, v])
    cs = np.where(home, 0.0, w["B"][cc, s])
    local = ((imp["t"] // 3600) + np.array([UTC_OFFSET[k] for k in COUNTRIES])[users["country"][u]]) % 24
    logit = (CLICK_B0 + W_IV * iv + W_IS * iv * share + W_CV * cv + W_CS * cs + W_IVCV * iv * cv
             + W_HOUR * w["hours"][v, local] + users["propensity"][u] + cat["ad_quality"][a]
             + _planted_boost(imp, planted))
    return 1.0 / (1.0 + np.exp(-logit))


# ------------------------------------------------------------------------------------- public API
def generate_dataset(n_ads: int = 10_000, n_users: int = 5_000, seed: int = 0, *, end: datetime = DEMO_END,
                     days: int = 30, impressions_per_user: float = 66.0,
                     progress: Progress | None = None, return_truth: bool = False):
    """The six import tables {name: frame} in core.data.schema.TABLES order with exactly the schema's
    columns; identical for a seed. Impressions cover `days` days before `end`, sorted by time.

    List columns hold Python lists of str, datetimes are naive-UTC datetime64[ns], dates are
    `datetime.date`, nullable ints are pandas Int64, `impressions.community_id` is None on the home
    feed. `impressions_per_user`: expected impressions per user (66: >= 300k at the default size).
    `progress(fraction, step)` (core.common.progress) as each of the four stages starts, and 1.0 at the end.

    With `return_truth=True` returns `(frames, truth)`, the hidden state: `verticals`,
    `subthemes` ("vertical/sub"), `user_interest` (users x verticals, rows sum to 1, 1-6 non-zero),
    `user_subtheme_interest` (users x sub-themes), `user_propensity`, `community_vertical_affinity`
    and `community_subtheme_affinity` (communities x ..., 1.0 = what the community is about),
    `topic_vertical_affinity` (topics x verticals), `ad_subtheme`, `ad_popularity`, `ad_quality`
    (Series by ad id), `click_prob` (float32 per impression row) and `ineligible_impression_share`
    (impressions the request was not eligible for, by targeting or schedule), and the planted
    structure: `cohort_ads` (per cohort, the ad ids its users click), `user_cohort` (cohort per
    user, -1 for none) and `trending` (community_id, ad_id, start of the trend)."""
    if n_ads < 1 or n_users < 1 or days < 1:
        raise ValueError(f"n_ads, n_users and days must be >= 1 (got {n_ads}, {n_users}, {days})")
    seq = np.random.SeedSequence([int(seed), 20261101])
    r_users, r_cat, r_imp, r_burst, r_click, r_plant = (np.random.default_rng(s) for s in seq.spawn(6))
    end_s = _seconds(end)
    w = _world()
    report(progress, 0.0, f"users ({n_users:,})")
    users = _users(r_users, n_users, w, end_s, days)
    report(progress, 0.25, f"catalog ({n_ads:,} ads)")
    cat = _catalog(r_cat, n_ads, w, end_s, days)
    report(progress, 0.5, "impressions")
    planted = _planted(r_plant, users, cat, w, end_s, days)
    imp = _impressions(r_imp, users, cat, w, end_s, days, impressions_per_user, planted)
    burst = _cap_bursts(r_burst, users, cat, w, end_s)
    share = imp["ineligible_share"]
    imp = {k: np.r_[imp[k], burst[k]].astype(np.int64) for k in burst} | {"ineligible_share": share}
    order = np.lexsort((imp["uid"], imp["t"]))
    imp |= {k: imp[k][order] for k in burst}
    prob = _click_prob(imp, users, cat, w, planted)
    clicked = r_click.random(len(prob)) < prob
    report(progress, 0.75, "frames")
    frames = cat.pop("frames")
    cid = w["comm_ids"]
    frames["communities"] = pd.DataFrame({"community_id": cid, "name": w["comm_names"],
                                          "topic": w["comm_topics"], "safety_tier": w["comm_tiers"]})
    user_ids = np.array([f"u_{i + 1:06d}" for i in range(n_users)])
    frames["users"] = pd.DataFrame({
        "user_id": user_ids, "country": np.array(COUNTRIES)[users["country"]],
        "age_bucket": np.array(AGES)[users["age"]],
        "device": np.array([*DEVICES, "unknown"])[users["device"]],
        "communities": [list(cid[row]) for row in users["subs"]],
        "signup_date": [d.date() for d in pd.to_datetime(_ts(users["signup"]))],
    })
    ad_ids = frames["ads"]["ad_id"].to_numpy()
    n = len(order)
    frames["impressions"] = pd.DataFrame({
        "impression_id": [f"imp_{i + 1:07d}" for i in range(n)], "user_id": user_ids[imp["uid"]],
        "ad_id": ad_ids[imp["ad"]], "ts": _ts(imp["t"]),
        "community_id": pd.Series(np.where(imp["comm"] >= 0, cid[np.maximum(imp["comm"], 0)], None),
                                  dtype=object),
        "placement": np.array(PLACEMENTS)[imp["placement"]],
        "device": np.array([*DEVICES, "unknown"])[imp["dev"]], "clicked": clicked,
    })
    frames = {t.name: frames[t.name][[c.name for c in t.columns]].reset_index(drop=True) for t in TABLES}
    report(progress, 1.0, "done")
    if not return_truth:
        return frames
    return frames, _truth(w, users, cat, imp, prob, user_ids, ad_ids, planted)


def _truth(w, users, cat, imp, prob, user_ids, ad_ids, planted) -> dict:
    """The hidden state described in `generate_dataset`."""
    subs = w["sub_names"]
    trend = pd.DataFrame({"community_id": w["comm_ids"][planted["trend_comm"]], "ad_id": ad_ids[planted["trend_ad"]],
                          "start": pd.Timestamp(_ts(np.array([planted["trend_start"]]))[0])})
    topic_aff = pd.DataFrame(w["A"], index=w["comm_topics"], columns=w["vkeys"]).groupby(level=0).max()
    return {
        "verticals": list(w["vkeys"]), "subthemes": list(subs),
        "user_interest": pd.DataFrame(users["interest"], index=user_ids, columns=w["vkeys"]),
        "user_subtheme_interest": pd.DataFrame(users["sub_interest"], index=user_ids, columns=subs),
        "user_propensity": pd.Series(users["propensity"], index=user_ids),
        "community_vertical_affinity": pd.DataFrame(w["A"], index=w["comm_ids"], columns=w["vkeys"]),
        "community_subtheme_affinity": pd.DataFrame(w["B"], index=w["comm_ids"], columns=subs),
        "topic_vertical_affinity": topic_aff,
        "ad_subtheme": pd.Series(np.array(subs)[cat["ad_sub"]], index=ad_ids),
        "ad_popularity": pd.Series(cat["ad_pop"], index=ad_ids),
        "ad_quality": pd.Series(cat["ad_quality"], index=ad_ids),
        "click_prob": prob.astype(np.float32),
        "ineligible_impression_share": imp["ineligible_share"],
        "cohort_ads": [list(ad_ids[row]) for row in planted["cohort_ads"]],
        "user_cohort": pd.Series(planted["user_cohort"], index=user_ids),
        "trending": trend,
    }


# ---------------------------------------------------------------------------------------- writing
def _csv_frame(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    out = {}
    for c in table.columns:
        s = frame[c.name]
        if c.type == "list":
            out[c.name] = [LIST_SEPARATOR.join(x) for x in s]
        elif c.type == "datetime":
            out[c.name] = pd.to_datetime(s).dt.strftime("%Y-%m-%dT%H:%M:%S").fillna("")
        elif c.type == "date":
            out[c.name] = ["" if d is None or pd.isna(d) else d.isoformat() for d in s]
        elif c.type == "bool":
            out[c.name] = np.where(s.astype(bool), "true", "false")
        else:
            out[c.name] = s.astype(object).where(s.notna(), "")
    return pd.DataFrame(out)


def _arrow_table(frame: pd.DataFrame, table: Table):
    import pyarrow as pa

    types = {"id": pa.string(), "str": pa.string(), "text": pa.string(), "float": pa.float64(),
             "int": pa.int64(), "bool": pa.bool_(), "datetime": pa.timestamp("us"), "date": pa.date32(),
             "list": pa.list_(pa.string())}
    arrays = []
    for c in table.columns:
        s = frame[c.name]
        if c.type in ("list", "date"):
            arrays.append(pa.array(list(s), type=types[c.type]))
        else:
            arrays.append(pa.Array.from_pandas(s, type=types[c.type]))
    return pa.Table.from_arrays(arrays, names=[c.name for c in table.columns])


def write_dataset(frames: dict[str, pd.DataFrame], directory: Path, fmt: str = "parquet") -> list[Path]:
    """Write one `<table>.parquet` or `<table>.csv` per table in the import format; each file is
    written to a temporary name in `directory`, fsynced and renamed into place."""
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in TABLES:
        path = directory / f"{table.name}.{fmt}"
        frame = frames[table.name]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            write_via_temp(path, lambda tmp, f=frame, t=table: pq.write_table(_arrow_table(f, t), tmp))
        else:
            write_via_temp(path, lambda tmp, f=frame, t=table: _csv_frame(f, t).to_csv(tmp, index=False,
                                                                                      lineterminator="\n"))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.demo.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory to write the dataset to")
    p.add_argument("--sample", type=Path, metavar="DIR",
                   help=f"write the small CSV sample ({SAMPLE['n_ads']} ads, {SAMPLE['n_users']} users) to DIR")
    p.add_argument("--ads", type=int, default=10_000)
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    args = p.parse_args(argv)
    if (args.out is None) == (args.sample is None):
        p.error("give exactly one of --out DIR or --sample DIR")
    t0 = time.perf_counter()
    if args.sample:
        frames = generate_dataset(SAMPLE["n_ads"], SAMPLE["n_users"], args.seed,
                                  impressions_per_user=SAMPLE["impressions_per_user"])
        paths = write_dataset(frames, args.sample, "csv")
    else:
        def say(fraction: float, step: str) -> None:
            if fraction < 1.0:
                print(f"  {step}", file=sys.stderr)

        frames = generate_dataset(args.ads, args.users, args.seed, days=args.days, progress=say)
        paths = write_dataset(frames, args.out, args.format)
    imp = frames["impressions"]
    print(f"wrote {len(paths)} files to {paths[0].parent} in {time.perf_counter() - t0:.1f}s: "
          + ", ".join(f"{k} {len(v):,}" for k, v in frames.items())
          + f"; CTR {imp['clicked'].mean():.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
