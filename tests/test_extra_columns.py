"""Extra columns a team imports on ads, campaigns and users: ingest keeps them (Parquet and CSV,
typed), a re-import of the same files changes nothing, and funnel-definition rules read them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from funnel_data import stub_version

from core.common.errors import ValidationError
from core.data.ingest import ingest_directory
from core.demo.generate import generate_dataset, write_dataset
from core.funnel.definition import parse_definition
from core.funnel.engine import FunnelEngine
from core.funnel.params import FunnelParams
from core.store.catalog import data_revision, load_catalog
from core.store.db import make_engine

RULES = '''
[[rule]]
code = "BLOCKED_ADVERTISER"
expr = "user.blocked_advertisers contains ad.advertiser_id"
[[rule]]
code = "CREATIVE_FATIGUE"
expr = "ad.creative_age_days > 150"
[[rule]]
code = "PACING_THROTTLE"
expr = 'campaign.pacing == "fast" and not user.vip'
'''


def _write(frames, directory, fmt: str, blocked: list[str]) -> None:
    write_dataset(frames, directory, fmt)
    read = pd.read_parquet if fmt == "parquet" else (lambda p: pd.read_csv(p, dtype=str, keep_default_na=False))
    write = (lambda df, p: df.to_parquet(p)) if fmt == "parquet" else (lambda df, p: df.to_csv(p, index=False))
    u = read(directory / f"users.{fmt}")
    lists = [blocked if i % 2 == 0 else [] for i in range(len(u))]
    u["blocked_advertisers"] = lists if fmt == "parquet" else ["|".join(x) for x in lists]
    u["vip"] = [i % 3 == 0 for i in range(len(u))] if fmt == "parquet" else [str(i % 3 == 0).lower() for i in range(len(u))]
    write(u, directory / f"users.{fmt}")
    a = read(directory / f"ads.{fmt}")
    a["creative_age_days"] = [str(i) for i in range(len(a))] if fmt == "csv" else list(range(len(a)))
    write(a, directory / f"ads.{fmt}")
    c = read(directory / f"campaigns.{fmt}")
    c["pacing"] = ["fast" if i % 3 == 0 else "even" for i in range(len(c))]
    write(c, directory / f"campaigns.{fmt}")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_ingest_keeps_extra_columns_and_rules_read_them(tmp_path, fmt, db_url):
    frames = generate_dataset(200, 40, seed=0)
    blocked = sorted(frames["advertisers"]["advertiser_id"])[:3]
    _write(frames, tmp_path / "d", fmt, blocked)
    db = make_engine(db_url)
    report = ingest_directory(db, tmp_path / "d")
    assert any("kept extra column(s) blocked_advertisers, vip" in w for w in report.warnings)
    rev = data_revision(db)
    ingest_directory(db, tmp_path / "d")
    assert data_revision(db) == rev  # the same files again: nothing changed
    cat = load_catalog(db)
    assert cat.extra["ads"]["creative_age_days"].iloc[5] == 5
    users = sorted(cat.users["user_id"])
    eng = FunnelEngine(stub_version(cat), cat, funnel_definition=parse_definition(RULES))
    assert {"user.blocked_advertisers", "ad.creative_age_days", "campaign.pacing", "user.vip"} <= set(eng.fields.specs)
    ads = cat.ads.set_index("ad_id").loc[list(eng.version.ad_ids)]
    age = np.arange(len(cat.ads))[np.argsort(np.argsort(pd.Index(ads.index)))]  # files are in ad_id order
    every = np.arange(eng.n_ads)
    for i in (0, 1, 3):  # blocked (even), not blocked; vip (i % 3 == 0) or not
        req = eng.default_request(users[i])
        res = eng.eligibility(req, every, FunnelParams())
        got = dict(zip(res.codes, res.fails.T))
        want_blocked = ads["advertiser_id"].isin(blocked if i % 2 == 0 else []).to_numpy()
        assert np.array_equal(got["BLOCKED_ADVERTISER"], want_blocked)
        assert got["BLOCKED_ADVERTISER"].any() == (i % 2 == 0)
        assert np.array_equal(got["CREATIVE_FATIGUE"], age > 150)
        fast = ads["campaign_id"].map(dict(zip(sorted(cat.campaigns["campaign_id"]),
                                               ["fast" if j % 3 == 0 else "even" for j in range(len(cat.campaigns))])))
        assert np.array_equal(got["PACING_THROTTLE"], (fast == "fast").to_numpy() & (i % 3 != 0))
    # a re-import with changed values replaces them (and counts as a change)
    _write(frames, tmp_path / "d", fmt, blocked[:2])
    ingest_directory(db, tmp_path / "d")
    assert data_revision(db) == rev + 1
    assert list(load_catalog(db).extra["users"].loc[users[0], "blocked_advertisers"]) == blocked[:2]


def test_rules_over_a_column_nobody_imported_list_the_extra_fields(tmp_path):
    frames = generate_dataset(100, 20, seed=0)
    _write(frames, tmp_path / "d", "parquet", [])
    db = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    ingest_directory(db, tmp_path / "d")
    cat = load_catalog(db)
    with pytest.raises(ValidationError, match="unknown field 'user.blocked_advertizers'.*user.blocked_advertisers"):
        FunnelEngine(stub_version(cat), cat, funnel_definition=parse_definition(
            "[[rule]]\ncode = 'A'\nexpr = 'user.blocked_advertizers contains ad.advertiser_id'"))
    with pytest.raises(ValidationError, match="type mismatch"):
        FunnelEngine(stub_version(cat), cat, funnel_definition=parse_definition(
            "[[rule]]\ncode = 'A'\nexpr = 'ad.creative_age_days > \"old\"'"))
