"""Planted data for the candidate-source tests (test_sources.py).

60 ads with unrelated random text (FakeTextEncoder), so the tower cannot see any of this:
- co-click groups: users g1_* click every ad of G1 (ad00-ad04), users g2_* every ad of G2
  (ad05-ad09), spread over the month; the user `probe` clicked only ad00;
- a trending ad: ad40 is clicked by many users in community c_b during the last 3 days (and
  never elsewhere);
- targeted inventory: the campaign cmp_t (ads ad50-ad54) includes community c_t;
- noise: every user also sees random ads without clicking.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from funnel_data import CAMPAIGN_DEFAULTS, NOW, FakeTextEncoder
from sqlalchemy import Engine, insert

from core.store.models import Ad, Advertiser, Campaign, Community, Impression, User

N_ADS = 60
G1 = [f"ad{i:02d}" for i in range(5)]
G2 = [f"ad{i:02d}" for i in range(5, 10)]
TRENDING = "ad40"
TARGETED = [f"ad{i:02d}" for i in range(50, 55)]


def fill_planted(engine: Engine, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ads = [dict(ad_id=f"ad{i:02d}", campaign_id="cmp_t" if f"ad{i:02d}" in TARGETED else f"cmp{i % 6}",
                title=f"Ad number {i} text {rng.integers(1 << 30)}", body="", call_to_action="", landing_domain="",
                vertical=f"v{i % 4}", policy_status="approved") for i in range(N_ADS)]
    campaigns = [{**CAMPAIGN_DEFAULTS, "campaign_id": f"cmp{i}", "advertiser_id": f"adv{i}"} for i in range(6)]
    campaigns.append({**CAMPAIGN_DEFAULTS, "campaign_id": "cmp_t", "advertiser_id": "adv_t",
                      "include_communities": ["c_t"]})
    advertisers = [dict(advertiser_id=a, name=a, vertical="v", brand_safety="nsfw")
                   for a in [f"adv{i}" for i in range(6)] + ["adv_t"]]
    users = ([f"g1_{i:02d}" for i in range(20)] + [f"g2_{i:02d}" for i in range(20)]
             + [f"tr_{i:02d}" for i in range(30)] + ["probe"])
    imps = []

    def imp(user, ad, ts, clicked, community="c_a"):
        imps.append(dict(impression_id=f"imp{len(imps):05d}", user_id=user, ad_id=ad, ts=ts, community_id=community,
                         placement="community_feed", device="ios", clicked=clicked))

    for u in users[:40]:
        group = G1 if u.startswith("g1") else G2
        for j, ad in enumerate(rng.permutation(group)):
            imp(u, str(ad), NOW - timedelta(days=28 - 5 * j, hours=int(rng.integers(24))), True)
    for u in users[40:70]:
        imp(u, TRENDING, NOW - timedelta(hours=int(rng.integers(1, 70))), True, community="c_b")
        imp(u, f"ad{int(rng.integers(10, 40)):02d}", NOW - timedelta(days=20, hours=int(rng.integers(24))),
            True, community="c_b")
    imp("probe", "ad00", NOW - timedelta(days=2), True)
    for u in users:
        for _ in range(6):
            imp(u, f"ad{int(rng.integers(10, N_ADS)):02d}", NOW - timedelta(hours=int(rng.integers(1, 700))), False,
                community=str(rng.choice(["c_a", "c_b"])))
    imps.append(dict(impression_id="imp_last", user_id="probe", ad_id="ad30", ts=NOW, community_id="c_a",
                     placement="community_feed", device="ios", clicked=False))
    with engine.begin() as conn:
        conn.execute(insert(Advertiser.__table__), advertisers)
        conn.execute(insert(Campaign.__table__), campaigns)
        conn.execute(insert(Ad.__table__), ads)
        conn.execute(insert(Community.__table__), [dict(community_id=c, name=c, topic="t", safety_tier="safe")
                                                  for c in ("c_a", "c_b", "c_t")])
        conn.execute(insert(User.__table__), [dict(user_id=u, country="US", age_bucket="25-34", device="ios",
                                                   communities=[]) for u in users])
        conn.execute(insert(Impression.__table__), imps)


def planted_workspace(ws, *, sources: bool = True, name: str = "v1", builder=None):
    """Settings of a workspace with the planted data and one Flat version (with its sources, built
    by `builder`, default every source at its defaults)."""
    from core.index.versions import build_version
    from core.sources.registry import sources_artifact_builder
    from core.store.db import make_engine
    from core.store.settings import load_settings

    settings = load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}")
    db = make_engine(settings.db_url)
    fill_planted(db)
    build_version(settings, name, "Flat", text_encoder=FakeTextEncoder(), engine=db,
                  extra_builders=(builder or sources_artifact_builder,) if sources else ())
    db.dispose()
    return settings
