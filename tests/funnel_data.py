"""Tiny purpose-built data for the funnel tests (test_filters, test_funnel, test_explain).

One ad per eligibility rule fails that rule (and only that rule) for user u1's default request:
community c_sens (sensitive), community feed, ios, US, age 25-34, at NOW. Inserted with
SQLAlchemy Core (no dependency on the ingest module); `stub_version` gives a Version-shaped
object over seeded random vectors when a real version is not needed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, insert

from core.index.ann import AnnIndex
from core.index.versions import Version
from core.store.catalog import Catalog, load_catalog
from core.store.db import make_engine
from core.store.models import Ad, Advertiser, Campaign, Community, Impression, User
from core.tower.query_encoder import HistoryMeanEncoder, l2_normalize

NOW = datetime(2026, 10, 15, 12, 0, 0)
H = timedelta(hours=1)

CAMPAIGN_DEFAULTS = dict(name="", status="active", start_ts=None, end_ts=None, daily_budget=None,
                         spend_today=0.0, bid=2.0, bid_type="cpc", frequency_cap=None, target_countries=[],
                         age_min=None, age_max=None, target_devices=[], include_communities=[],
                         exclude_communities=[])

# campaign id -> (advertiser, overrides); the ad of the same suffix fails exactly that rule.
CAMPAIGNS = {
    "cmp_ok": ("adv_c", {}),
    "cmp_paused": ("adv_c", {"status": "paused"}),
    "cmp_sched": ("adv_c", {"start_ts": NOW + 24 * H}),
    "cmp_budget": ("adv_c", {"daily_budget": 100.0, "spend_today": 100.0}),
    "cmp_geo": ("adv_c", {"target_countries": ["CA", "MX"]}),
    "cmp_age": ("adv_c", {"age_min": 45, "age_max": 60}),
    "cmp_device": ("adv_c", {"target_devices": ["desktop"]}),
    "cmp_excl": ("adv_c", {"exclude_communities": ["c_sens"]}),
    "cmp_incl": ("adv_c", {"include_communities": ["c_other"]}),
    "cmp_brand": ("adv_b", {}),
    "cmp_freq": ("adv_c", {"frequency_cap": 2}),
    "cmp_multi": ("adv_c", {"status": "paused", "target_countries": ["CA"], "target_devices": ["desktop"]}),
    "cmp_a": ("adv_a", {"bid": 5.0, "bid_type": "cpm"}),
}
RULE_ADS = {  # ad id -> the single code it fails for u1's default request
    "ad_policy": "POLICY_REJECTED",
    "ad_pending": "POLICY_REJECTED",
    "ad_paused": "CAMPAIGN_INACTIVE",
    "ad_sched": "OUT_OF_SCHEDULE",
    "ad_budget": "BUDGET_EXHAUSTED",
    "ad_geo": "GEO_MISMATCH",
    "ad_age": "AGE_MISMATCH",
    "ad_device": "DEVICE_MISMATCH",
    "ad_excl": "COMMUNITY_EXCLUDED",
    "ad_incl": "COMMUNITY_NOT_TARGETED",
    "ad_brand": "BRAND_SAFETY",
    "ad_freq": "FREQUENCY_CAP",
    "ad_nocamp_rej": "POLICY_REJECTED",
}
ELIGIBLE_ADS = ("ad_ok", "ad_nocamp", "ad_a1", "ad_a2", "ad_a3", "ad_a4")


def _ads() -> list[dict]:
    def ad(ad_id, campaign, policy="approved", vertical="travel"):
        return dict(ad_id=ad_id, campaign_id=campaign, title=f"Title of {ad_id}", body="", call_to_action="",
                    landing_domain="", vertical=vertical, policy_status=policy)
    rows = [ad("ad_ok", "cmp_ok"), ad("ad_policy", "cmp_ok", "rejected"), ad("ad_pending", "cmp_ok", "pending"),
            ad("ad_nocamp", None), ad("ad_nocamp_rej", None, "rejected"), ad("ad_multi", "cmp_multi")]
    for suffix in ("paused", "sched", "budget", "geo", "age", "device", "excl", "incl", "brand", "freq"):
        rows.append(ad(f"ad_{suffix}", f"cmp_{suffix}"))
    rows += [ad(f"ad_a{i}", "cmp_a", vertical="food") for i in range(1, 5)]
    return rows


def _impressions() -> list[dict]:
    def imp(i, user, ad, ts, community="c_sens", placement="community_feed", device="ios", clicked=False):
        return dict(impression_id=f"imp_{i:03d}", user_id=user, ad_id=ad, ts=ts, community_id=community,
                    placement=placement, device=device, clicked=clicked)
    rows = [
        # u1's usual context: c_sens on the community feed, on ios; one home-feed visit on android.
        imp(1, "u1", "ad_ok", NOW - 72 * H, clicked=True),
        imp(2, "u1", "ad_a1", NOW - 70 * H, clicked=True),
        imp(3, "u1", "ad_a2", NOW - 60 * H),
        imp(4, "u1", "ad_ok", NOW - 50 * H, community=None, placement="home_feed", device="android"),
        # frequency: two impressions of cmp_freq in the 24 h before NOW (cap 2).
        imp(5, "u1", "ad_freq", NOW - 23 * H),
        imp(6, "u1", "ad_freq", NOW - 1 * H),
        imp(7, "u1", "ad_freq", NOW - 30 * H),  # outside the window
        # other users: clicks and non-clicks for the pCTR calibration; NOW is the latest ts.
        imp(8, "u2", "ad_a3", NOW - 5 * H, community="c_other", clicked=True),
        imp(9, "u2", "ad_a4", NOW - 4 * H, community="c_other"),
        imp(10, "u3", "ad_nocamp", NOW - 3 * H, community=None, placement="home_feed", device="desktop",
            clicked=True),
        imp(11, "u3", "ad_ok", NOW, community="c_mature", device="desktop"),
    ]
    for i in range(12, 40):  # more logged traffic so the calibration has both classes
        ad = ("ad_ok", "ad_a1", "ad_a2", "ad_a3", "ad_nocamp")[i % 5]
        rows.append(imp(i, "u2" if i % 2 else "u3", ad, NOW - (100 + i) * H, community="c_other",
                        clicked=(i % 3 == 0)))
    return rows


def fill_db(engine: Engine) -> None:
    """Insert the fixture rows (one transaction)."""
    with engine.begin() as conn:
        conn.execute(insert(Advertiser.__table__), [
            dict(advertiser_id="adv_a", name="Alpha", vertical="food", brand_safety="sensitive"),
            dict(advertiser_id="adv_b", name="Beta", vertical="travel", brand_safety="safe"),
            dict(advertiser_id="adv_c", name="Gamma", vertical="travel", brand_safety="nsfw"),
        ])
        conn.execute(insert(Campaign.__table__), [
            {**CAMPAIGN_DEFAULTS, "campaign_id": cid, "advertiser_id": adv, **over}
            for cid, (adv, over) in CAMPAIGNS.items()
        ])
        conn.execute(insert(Ad.__table__), _ads())
        conn.execute(insert(Community.__table__), [
            dict(community_id="c_safe", name="Safe", topic="t", safety_tier="safe"),
            dict(community_id="c_sens", name="Sensitive", topic="t", safety_tier="sensitive"),
            dict(community_id="c_mature", name="Mature", topic="t", safety_tier="mature"),
            dict(community_id="c_other", name="Other", topic="t", safety_tier="safe"),
        ])
        conn.execute(insert(User.__table__), [
            dict(user_id="u1", country="US", age_bucket="25-34", device="ios", communities=["c_sens"]),
            dict(user_id="u2", country="CA", age_bucket="45-54", device="android", communities=[]),
            dict(user_id="u3", country="unknown", age_bucket="unknown", device="unknown", communities=[]),
            dict(user_id="u4", country="DE", age_bucket="18-24", device="desktop", communities=["c_safe"]),
        ])
        conn.execute(insert(Impression.__table__), _impressions())


def toy_catalog(folder: Path) -> Catalog:
    """The fixture rows (fill_db) in a SQLite database under `folder`, loaded as a Catalog."""
    db = make_engine(f"sqlite:///{folder / 't.db'}")
    try:
        fill_db(db)
        return load_catalog(db)
    finally:
        db.dispose()


def hashing_workspace(ws: Path, monkeypatch, n_ads: int = 120, n_users: int = 10) -> Path:
    """A workspace `ws` holding a seeded random catalog (fill_random_db), with the hashing encoder
    standing in for the embedding model (no model load)."""
    from core.text import embedding_cache
    from core.text.embeddings import HashingEncoder

    db = make_engine(f"sqlite:///{ws / 'adlens.db'}")
    fill_random_db(db, n_ads=n_ads, n_users=n_users)
    db.dispose()
    fake = HashingEncoder()
    monkeypatch.setattr(embedding_cache, "model_fingerprint", lambda name: fake.fingerprint)
    monkeypatch.setattr(embedding_cache.AdEncoder, "load", classmethod(lambda cls, name: fake))
    return ws


def stub_version(catalog: Catalog, factory: str = "Flat", dim: int = 8, seed: int = 0,
                 search_params: dict | None = None, ad_ids=None) -> Version:
    ids = np.asarray(sorted(catalog.ads["ad_id"] if ad_ids is None else ad_ids), dtype=object)
    text = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    enc = HistoryMeanEncoder()
    index = AnnIndex.build(l2_normalize(enc.transform_ads(text)), factory, seed=seed)
    return Version.in_memory(f"stub_{factory}", ids, text, index, enc, search_params)


def fill_random_db(engine: Engine, n_ads: int = 300, n_users: int = 30, seed: int = 0,
                   n_campaigns: int = 40, n_advertisers: int = 12) -> None:
    """A seeded random catalog exercising every rule, for oracle comparisons."""
    rng = np.random.default_rng(seed)
    tiers = ("safe", "sensitive", "mature", "nsfw")
    comms = [f"c{i}" for i in range(6)]
    countries = ("US", "CA", "DE", "FR")
    devices = ("ios", "android", "desktop", "mobile_web")
    buckets = ("18-24", "25-34", "35-44", "45-54", "unknown")

    def some(values, p_empty=0.6):
        if rng.random() < p_empty:
            return []
        return sorted(rng.choice(values, size=int(rng.integers(1, 3)), replace=False).tolist())

    advertisers = [dict(advertiser_id=f"adv{i}", name=f"Adv {i}", vertical="v", brand_safety=str(rng.choice(tiers)))
                   for i in range(n_advertisers)]
    campaigns = []
    for i in range(n_campaigns):
        lo = int(rng.choice([18, 25, 35])) if rng.random() < 0.3 else None
        campaigns.append({**CAMPAIGN_DEFAULTS, "campaign_id": f"cmp{i}", "advertiser_id": f"adv{i % n_advertisers}",
                          "status": "active" if rng.random() < 0.85 else "paused",
                          "start_ts": NOW - 48 * H if rng.random() < 0.9 else NOW + 48 * H,
                          "end_ts": None if rng.random() < 0.9 else NOW - 24 * H,
                          "daily_budget": float(rng.choice([50.0, 100.0])) if rng.random() < 0.5 else None,
                          "spend_today": float(rng.choice([0.0, 40.0, 100.0])),
                          "bid": float(np.round(rng.uniform(0.5, 5.0), 2)), "bid_type": str(rng.choice(["cpc", "cpm"])),
                          "frequency_cap": int(rng.integers(1, 3)) if rng.random() < 0.4 else None,
                          "target_countries": some(countries), "age_min": lo, "age_max": None if lo is None else lo + 15,
                          "target_devices": some(devices, 0.7), "include_communities": some(comms, 0.7),
                          "exclude_communities": some(comms, 0.7)})
    ads = [dict(ad_id=f"ad{i:04d}", campaign_id=None if rng.random() < 0.1 else f"cmp{int(rng.integers(n_campaigns))}",
                title=f"Ad {i}", body="", call_to_action="", landing_domain="", vertical="v",
                policy_status=str(rng.choice(["approved", "approved", "approved", "rejected", "pending"])))
           for i in range(n_ads)]
    users = [dict(user_id=f"u{i:03d}", country=str(rng.choice(countries)), age_bucket=str(rng.choice(buckets)),
                  device=str(rng.choice(devices)), communities=[str(rng.choice(comms))]) for i in range(n_users)]
    imps = []
    for j in range(n_users * 12):
        u = users[j % n_users]
        imps.append(dict(impression_id=f"imp{j:05d}", user_id=u["user_id"], ad_id=ads[int(rng.integers(n_ads))]["ad_id"],
                         ts=NOW - timedelta(minutes=int(rng.integers(0, 60 * 72))),
                         community_id=str(rng.choice(comms)) if rng.random() < 0.8 else None,
                         placement="community_feed", device=u["device"], clicked=bool(rng.random() < 0.3)))
    for imp in imps:
        if imp["community_id"] is None:
            imp["placement"] = "home_feed"
    with engine.begin() as conn:
        conn.execute(insert(Advertiser.__table__), advertisers)
        conn.execute(insert(Campaign.__table__), campaigns)
        conn.execute(insert(Ad.__table__), ads)
        conn.execute(insert(Community.__table__), [dict(community_id=c, name=c, topic="t", safety_tier=tiers[i % 4])
                                                  for i, c in enumerate(comms)])
        conn.execute(insert(User.__table__), users)
        conn.execute(insert(Impression.__table__), imps)


class FakeTextEncoder:
    """Stands in for the sentence-transformer in `build_version(text_encoder=...)`: each text gets
    a seeded vector near one of a few centres (chosen by the text's hash), so IVF lists have
    structure. Deterministic, no model download."""

    name = "fake-text"
    fingerprint = "f" * 64
    dim = 16

    def encode(self, texts, batch_size: int = 64, progress=None) -> np.ndarray:
        import hashlib

        centres = np.random.default_rng(123).normal(size=(6, self.dim))
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            h = int(hashlib.sha256(t.encode()).hexdigest()[:12], 16)
            r = np.random.default_rng(h)
            out[i] = centres[h % 6] + 0.6 * r.normal(size=self.dim)
        return l2_normalize(out)


def random_workspace(ws: Path, versions: dict[str, tuple[str, dict] | tuple[str, dict, int]], n_ads: int = 300):
    """Settings of a workspace at `ws` holding `fill_random_db` data and real versions built with
    `FakeTextEncoder`: {name: (factory, search_params)}, or (factory, search_params, shards)."""
    from core.index.versions import build_version
    from core.store.db import make_engine
    from core.store.settings import load_settings

    settings = load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}")
    db = make_engine(settings.db_url)
    fill_random_db(db, n_ads=n_ads)
    fake = FakeTextEncoder()
    for name, (factory, params, *shards) in versions.items():
        build_version(settings, name, factory, text_encoder=fake, search_params=params, engine=db,
                      shards=shards[0] if shards else None)
    db.dispose()
    return settings


def sharded_workspace(ws: Path):
    """The sharded-vs-unsharded workspace of test_shards and test_ray: 300 random ads, `flat1`
    (exact, unsharded), `flat3` (exact, 3 shards) and `ivf3` (IVF8 probing 2 lists, 3 shards)."""
    return random_workspace(ws, {"flat1": ("Flat", {}), "flat3": ("Flat", {}, 3),
                                 "ivf3": ("IVF8,Flat", {"nprobe": 2}, 3)}, n_ads=300)
