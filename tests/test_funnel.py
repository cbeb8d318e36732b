"""The funnel: exact-index funnel equals a brute-force oracle over the eligible set, trace
invariants, ranking/diversity semantics, calibration, no database writes, CLI output."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from funnel_data import NOW, fill_db, fill_random_db, stub_version
from sqlalchemy import event, text

from core.cli import main
from core.common.errors import ValidationError
from core.data.vocab import AGE_BUCKETS, SafetyTier
from core.funnel.context import default_request, known_user_ids
from core.funnel.engine import FunnelEngine
from core.funnel.params import FunnelParams
from core.funnel.ranking import Calibration, ecpm, fit_calibration
from core.funnel.reasons import ELIGIBILITY_REASONS, Stage
from core.funnel.trace import CANDIDATE_COLUMNS, OUTCOMES
from core.store.catalog import load_catalog, table_counts
from core.store.db import make_engine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    db = make_engine(f"sqlite:///{tmp_path_factory.mktemp('tiny') / 't.db'}")
    fill_db(db)
    cat = load_catalog(db)
    yield db, cat, FunnelEngine(stub_version(cat), cat)
    db.dispose()


@pytest.fixture(scope="module")
def rand(tmp_path_factory):
    db = make_engine(f"sqlite:///{tmp_path_factory.mktemp('rand') / 'r.db'}")
    fill_random_db(db)
    cat = load_catalog(db)
    yield db, cat, FunnelEngine(stub_version(cat, dim=16, seed=3), cat)
    db.dispose()


# ---- an independent, row-by-row oracle of the documented semantics ---------------------------
def _oracle_fails(ad, req, age_bucket, tier, user_imps) -> list[str]:
    out = []
    if ad.policy_status != "approved":
        out.append("POLICY_REJECTED")
    if pd.isna(ad.status):  # no campaign
        return out
    ts = pd.Timestamp(req.ts)
    if ad.status != "active":
        out.append("CAMPAIGN_INACTIVE")
    if (not pd.isna(ad.start_ts) and ts < ad.start_ts) or (not pd.isna(ad.end_ts) and ts > pd.Timestamp(ad.end_ts)):
        out.append("OUT_OF_SCHEDULE")
    if not pd.isna(ad.daily_budget) and ad.spend_today >= ad.daily_budget:
        out.append("BUDGET_EXHAUSTED")
    if ad.target_countries and req.country not in ad.target_countries:
        out.append("GEO_MISMATCH")
    if not (pd.isna(ad.age_min) and pd.isna(ad.age_max)):
        rng = AGE_BUCKETS.get(age_bucket)
        lo = -np.inf if pd.isna(ad.age_min) else ad.age_min
        hi = np.inf if pd.isna(ad.age_max) else ad.age_max
        if rng is None or not (lo <= rng[1] and hi >= rng[0]):
            out.append("AGE_MISMATCH")
    if ad.target_devices and req.device not in ad.target_devices:
        out.append("DEVICE_MISMATCH")
    if req.community_id is not None and req.community_id in ad.exclude_communities:
        out.append("COMMUNITY_EXCLUDED")
    if ad.include_communities and req.community_id not in ad.include_communities:
        out.append("COMMUNITY_NOT_TARGETED")
    if SafetyTier(tier).rank > SafetyTier(ad.brand_safety).rank:
        out.append("BRAND_SAFETY")
    if not pd.isna(ad.frequency_cap):
        n = sum(1 for cid, t in user_imps if cid == ad.campaign_id and ts - timedelta(hours=24) <= t < ts)
        if n >= ad.frequency_cap:
            out.append("FREQUENCY_CAP")
    return out


def _oracle_funnel(engine: FunnelEngine, cat, req, p: FunnelParams):
    q = engine.encode(req)
    scores = engine.version.ad_vectors @ q
    top = np.argsort(-scores, kind="stable")[:p.k]
    ads = {r.ad_id: r for r in cat.ads.itertuples(index=False)}
    users = cat.users.set_index("user_id")
    age = users["age_bucket"].get(req.user_id, "unknown")
    tiers = cat.communities.set_index("community_id")["safety_tier"]
    tier = tiers.get(req.community_id, "safe") if req.community_id else "safe"
    camp = cat.ads.set_index("ad_id")["campaign_id"]
    mine = cat.impressions[cat.impressions["user_id"] == req.user_id]
    user_imps = [(camp.get(a), pd.Timestamp(t)) for a, t in zip(mine["ad_id"], mine["ts"])]
    fails, values = {}, []
    for i, pos in enumerate(top):
        ad = ads[engine.version.ad_ids[pos]]
        fails[ad.ad_id] = _oracle_fails(ad, req, age, tier, user_imps)
        if not fails[ad.ad_id]:
            pctr = 1 / (1 + np.exp(-(engine.calibration.a * scores[pos] + engine.calibration.b)))
            has = not pd.isna(ad.status)
            bid, kind = (ad.bid, ad.bid_type) if has else (1.0, "cpm")
            value = 1000 * pctr * bid if kind == "cpc" else bid
            values.append((-value, -scores[pos], i, ad.ad_id, ad.advertiser_id if has else "self:" + ad.ad_id))
    ranked = sorted(values)[:p.n_ranked]
    slate, per = [], {}
    for *_, ad_id, adv in ranked:
        if len(slate) < p.slate_size and per.get(adv, 0) < p.max_per_advertiser:
            slate.append(ad_id)
            per[adv] = per.get(adv, 0) + 1
    return [engine.version.ad_ids[i] for i in top], fails, slate


@pytest.mark.parametrize("params", [FunnelParams(k=60, n_ranked=15, max_per_advertiser=1, slate_size=6),
                                    FunnelParams(k=300, n_ranked=50, max_per_advertiser=2, slate_size=10)])
def test_flat_funnel_equals_brute_force_over_eligible_set(rand, params):
    _, cat, engine = rand
    seen, outcomes = set(), set()
    for uid in sorted(known_user_ids(cat))[:8]:
        for override in ({}, {"community_id": "none"}, {"device": "desktop", "country": "DE"}):
            req = default_request(cat, uid, **override)
            tr = engine.run(req, params)
            top, fails, slate = _oracle_funnel(engine, cat, req, params)
            c = tr.candidates
            assert list(c["ad_id"]) == top
            assert dict(zip(c["ad_id"], c["failed_reasons"])) == fails
            assert list(tr.slate["ad_id"]) == slate
            assert (c["exact_rank"] == c["ann_rank"]).all()
            seen |= {code for f in fails.values() for code in f}
            outcomes |= set(c["outcome"])
    if params.k == 300:  # the random catalog exercises every rule and every outcome
        assert seen == set(ELIGIBILITY_REASONS)
        assert outcomes == set(OUTCOMES)


def test_trace_invariants_and_json(tiny):
    _, cat, engine = tiny
    tr = engine.run(default_request(cat, "u1"), FunnelParams(n_ranked=5, slate_size=3))
    c = tr.to_frame()
    assert tuple(c.columns) == CANDIDATE_COLUMNS + ("rank_two_tower", "score_two_tower")
    assert tr.source_names == ("two_tower",) and set(c["sources"]) == {("two_tower",)}
    assert (c["rank_two_tower"] == c["ann_rank"]).all()
    sc = tr.stage_counts
    assert sc[Stage.INVENTORY] == engine.n_ads == sc[Stage.RETRIEVED] == len(c)
    assert sc[Stage.ELIGIBLE] == (c["failed_reasons"].map(len) == 0).sum() == c["rank_position"].notna().sum()
    assert sc[Stage.RANKED] == min(5, sc[Stage.ELIGIBLE]) and sc[Stage.SLATE] == 3 == len(tr.slate)
    assert list(tr.slate["final_position"]) == [1, 2, 3]
    filtered = c[c["outcome"] == "filtered"]
    assert (filtered["primary_reason"] == filtered["failed_reasons"].str[0]).all()
    assert set(c.loc[c["outcome"] == "ranked_out", "primary_reason"]) <= {"BELOW_CUTOFF"}
    assert {"encode", "retrieve:two_tower", "merge", "eligibility", "ranking", "diversity", "total"} <= set(
        tr.stage_timings_ms)
    d = json.loads(tr.to_json())
    assert d["candidates"][0]["sources"] == ["two_tower"] and d["sources"]["version"] == ["two_tower"]
    assert d["calibration"]["coefficients"] == {"score": engine.calibration.a}
    assert d["stage_counts"]["slate"] == 3 and len(d["candidates"]) == len(c)
    assert d["candidates"][0]["final_position"] in (None, 1, 2, 3)
    assert d["params"]["rule_order"][0] == "POLICY_REJECTED"


def test_advertiser_cap_and_cutoff(tiny):
    _, cat, engine = tiny
    req = default_request(cat, "u1")
    tr = engine.run(req, FunnelParams(max_per_advertiser=2))
    a_ads = tr.candidates[tr.candidates["advertiser_id"] == "adv_a"]
    assert (a_ads["outcome"] == "slate").sum() == 2
    capped = a_ads[a_ads["outcome"] == "advertiser_cap"]
    assert len(capped) == 2 and set(capped["primary_reason"]) == {"ADVERTISER_CAP"}
    # the two shown are the two best-ranked adv_a ads
    assert set(a_ads.nsmallest(2, "rank_position")["ad_id"]) == set(a_ads[a_ads["outcome"] == "slate"]["ad_id"])
    wide = engine.run(req, FunnelParams(max_per_advertiser=4))
    assert (wide.candidates.query("advertiser_id == 'adv_a'")["outcome"] == "slate").all()
    cut = engine.run(req, FunnelParams(n_ranked=1, max_per_advertiser=4))
    ranked_out = cut.candidates[cut.candidates["outcome"] == "ranked_out"]
    assert len(ranked_out) == cut.stage_counts[Stage.ELIGIBLE] - 1
    assert (ranked_out["rank_position"] > 1).all() and set(ranked_out["primary_reason"]) == {"BELOW_CUTOFF"}


def test_disabled_rule_lets_ads_through(tiny):
    _, cat, engine = tiny
    req = default_request(cat, "u1")
    tr = engine.run(req, FunnelParams(disabled_rules=("FREQUENCY_CAP",)))
    assert tr.row("ad_freq")["failed_reasons"] == [] and tr.row("ad_freq")["outcome"] != "filtered"
    with pytest.raises(ValidationError, match="NOPE"):  # the engine knows its funnel's codes
        engine.run(req, FunnelParams(disabled_rules=("NOPE",)))
    with pytest.raises(ValidationError, match="UPPER_SNAKE"):
        FunnelParams(disabled_rules=("not a code",))
    with pytest.raises(ValidationError, match="k must be a positive integer"):
        FunnelParams(k=0)
    with pytest.raises(ValidationError, match="mmr_lambda"):
        FunnelParams(mmr_lambda=2.0)


def test_mmr(rand):
    _, cat, engine = rand
    req = default_request(cat, sorted(known_user_ids(cat))[0])
    plain = engine.run(req, FunnelParams(k=300, max_per_advertiser=10))
    same = engine.run(req, FunnelParams(k=300, max_per_advertiser=10, mmr_lambda=1.0))
    assert list(plain.slate["ad_id"]) == list(same.slate["ad_id"])
    div = engine.run(req, FunnelParams(k=300, max_per_advertiser=10, mmr_lambda=0.3))
    assert list(div.slate["ad_id"]) != list(plain.slate["ad_id"])
    v = engine.version.ad_vectors

    def mean_sim(ids):
        x = v[engine.version.position_of(list(ids))]
        s = x @ x.T
        return (s.sum() - np.trace(s)) / (len(x) * (len(x) - 1))
    assert mean_sim(div.slate["ad_id"]) < mean_sim(plain.slate["ad_id"])


def test_calibration_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, 200_000)
    y = rng.random(len(s)) < Calibration(4.0, -3.0).pctr(s)
    cal = fit_calibration(s, y)
    assert abs(cal.a - 4.0) < 0.1 and abs(cal.b + 3.0) < 0.1
    assert fit_calibration(s[:10], np.zeros(10)).a == 0.0  # one class: constant rate
    assert ecpm(np.array([0.02, 0.02]), np.array([2.0, 3.0]), np.array(["cpc", "cpm"])).tolist() == [40.0, 3.0]


def test_engine_uses_logged_clicks_for_calibration(tiny):
    _, cat, engine = tiny
    assert engine.calibration.n == len(cat.impressions) and engine.calibration.method == "platt"
    assert engine.calibration.positives == int(cat.impressions["clicked"].sum())


def test_request_never_writes_to_the_database(engine):
    """On SQLite and (in CI) PostgreSQL: requests, why-not and audience issue no write."""
    from core.funnel.audience import audience
    from core.funnel.explain import why_not

    db = engine
    fill_db(db)
    cat = load_catalog(db)
    engine = FunnelEngine(stub_version(cat), cat)
    writes = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP"):
            writes.append(statement)
    before = table_counts(db)
    event.listen(db, "before_cursor_execute", count)
    try:
        with db.connect() as conn:  # the listener does see writes (rolled back here)
            conn.execute(text("DELETE FROM impressions WHERE user_id = 'nobody'"))
            conn.rollback()
        assert len(writes) == 1
        writes.clear()
        for uid in ("u1", "u2", "u3", "u4"):
            engine.run(default_request(cat, uid))
        why_not(engine, default_request(cat, "u1"), "ad_geo")
        audience(engine, "ad_ok", n_users=4)
        assert table_counts(db) == before
    finally:
        event.remove(db, "before_cursor_execute", count)
    assert writes == []


def test_engine_is_not_mutated_by_requests(tiny):
    _, cat, engine = tiny
    snapshot = (engine.facts.policy_status.copy(), engine.bid.copy(), engine.calibration)
    engine.run(default_request(cat, "u1", country="CA"), FunnelParams(k=5, mmr_lambda=0.5))
    assert (engine.facts.policy_status == snapshot[0]).all() and (engine.bid == snapshot[1]).all()
    assert engine.calibration == snapshot[2]
    with pytest.raises(ValueError):
        engine.bid[0] = 99.0


def test_cli_inspect_why_not_audience(tiny, monkeypatch, tmp_path, capsys):
    import core.funnel.engine

    _, _, engine = tiny
    monkeypatch.setattr(core.funnel.engine, "open_engine", lambda settings, name, **kw: engine)
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "inspect", "--version", "v", "--user", "u1", "--slate", "3"]) == 0
    out = capsys.readouterr().out
    assert "funnel: inventory 20 → retrieved 20" in out and "FREQUENCY_CAP" in out and "slate (3)" in out
    assert main([*ws, "inspect", "--version", "v", "--user", "u1", "--country", "CA", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["request"]["country"] == "CA"
    assert next(r for r in d["candidates"] if r["ad_id"] == "ad_geo")["failed_reasons"] == []
    assert main([*ws, "why-not", "--version", "v", "--user", "u1", "--ad", "ad_geo"]) == 0
    out = capsys.readouterr().out
    assert "GEO_MISMATCH" in out and "targets CA, MX; request country US" in out
    assert main([*ws, "why-not", "--version", "v", "--user", "nobody", "--ad", "ad_geo"]) == 2
    assert "u1" in capsys.readouterr().err
    assert main([*ws, "audience", "--version", "v", "--ad", "ad_geo", "--users", "4", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_users"] == 4 and rep["failed_reason_counts"]["GEO_MISMATCH"] == 3  # u2 is in CA


def test_bench_funnel_reports_percentiles(tiny):
    from core.bench.funnel import bench_funnel
    from core.data.request import sample_requests

    _, cat, engine = tiny
    reqs = sample_requests(cat.impressions, cat.users, 10, seed=0)
    rep = bench_funnel(engine, reqs, FunnelParams(k=10), why_not_samples=4)
    assert rep["n_requests"] == 10 and rep["total_ms"]["p50"] > 0 and rep["why_not_ms"]["p99"] > 0
    assert set(rep["stages_ms"]) >= {"encode", "retrieve:two_tower", "eligibility", "total"}


def test_latest_ts_is_default_time(tiny):
    _, cat, _ = tiny
    assert default_request(cat, "u2").ts == NOW


def test_concurrent_requests_share_one_engine(rand):
    from concurrent.futures import ThreadPoolExecutor

    _, cat, engine = rand
    reqs = [default_request(cat, u, **o) for u in sorted(known_user_ids(cat))[:6]
            for o in ({}, {"country": "FR"})]
    params = FunnelParams(k=100, mmr_lambda=0.5)
    want = [engine.run(r, params).candidates for r in reqs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda r: engine.run(r, params).candidates, reqs * 3))
    for i, frame in enumerate(got):
        pd.testing.assert_frame_equal(frame, want[i % len(reqs)])


def _usual_by_groupby(imps: pd.DataFrame) -> dict:
    """The usual contexts as a pandas groupby computes them (the oracle of the vectorised build)."""
    from core.data.vocab import UNKNOWN

    frame = pd.DataFrame({"u": imps["user_id"].astype(object), "c": imps["community_id"].astype(object),
                          "p": imps["placement"].astype(object), "d": imps["device"].astype(object), "t": imps["ts"]})

    def most(f: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        stats = f.groupby(["u", *keys], sort=False, dropna=False).agg(n=("t", "size"), last=("t", "max"))
        stats = stats.reset_index().sort_values(["u", "n", "last"], ascending=[True, False, False], kind="stable")
        return stats.drop_duplicates("u")

    best, dev = most(frame, ["c", "p"]), most(frame[frame["d"] != UNKNOWN], ["d"])
    devices = dict(zip(dev["u"], dev["d"]))
    return {u: (None if pd.isna(c) else str(c), str(p), devices.get(u)) for u, c, p in zip(best["u"], best["c"], best["p"])}


def test_usual_contexts_equal_a_groupby_with_ties_and_missing_values():
    from types import SimpleNamespace

    from core.funnel.context import UsualContexts

    rng = np.random.default_rng(4)
    n = 3000
    t0 = pd.Timestamp("2026-01-01")
    imps = pd.DataFrame({
        "user_id": rng.choice([f"u{i}" for i in range(60)], n),
        "community_id": pd.Series(rng.choice(["c1", "c2", "c3", None], n), dtype="str"),
        "placement": rng.choice(["home_feed", "community_feed", "conversation"], n),
        "device": rng.choice(["ios", "android", "web", "unknown"], n, p=[0.2, 0.2, 0.1, 0.5]),
        "ts": t0 + pd.to_timedelta(rng.integers(0, 50, n), unit="h"),  # coarse: many ties in n and last
        "ad_id": "a1", "clicked": False})
    imps.loc[imps["user_id"] == "u7", "device"] = "unknown"  # only unknown devices: none logged
    cat = SimpleNamespace(impressions=imps, users=pd.DataFrame({"user_id": pd.Series([], dtype=object)}),
                          communities=pd.DataFrame({"community_id": ["c1", "c2", "c3"]}))
    got = UsualContexts.build(cat).logged
    want = _usual_by_groupby(imps)
    assert got == want
    assert got["u7"][2] is None and any(v[0] is None for v in got.values())
