"""Candidate sources: item-item math on a hand-computed toy, each source recovering planted
structure, merge/dedup/attribution with known answers, the pCTR model's per-source weights,
storage inside the version (checksummed; old versions load with two_tower only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sources_data import G1, G2, TARGETED, TRENDING, planted_workspace

from core.common.errors import ArtifactError, ValidationError
from core.data.request import requests_frame
from core.funnel.engine import open_engine
from core.funnel.params import SOURCE_QUOTAS, FunnelParams
from core.funnel.pctr import fit_pctr
from core.sources import cooccurrence as co
from core.sources.merge import merge

SHRINK = 1.0


# ---- cooccurrence on a toy whose answers are computed by hand ----------------------------------
# u0 clicks {0, 1}; u1 clicks {0, 1, 2} (and 1 twice); u2 clicks {2, 3}; ad 4 is never clicked.
# n = [2, 2, 2, 1, 0]; co(0,1) = 2, co(0,2) = co(1,2) = co(2,3) = 1.
TOY = (np.array([0, 0, 1, 1, 1, 1, 2, 2]), np.array([0, 1, 0, 1, 1, 2, 2, 3]))
S01, S02, S23 = 2 / (2 + SHRINK), 1 / (2 + SHRINK), 1 / (np.sqrt(2) + SHRINK)


def test_click_matrix_is_binary_users_by_ads():
    X = co.click_matrix(*TOY, n_users=3, n_ads=5)
    assert X.shape == (3, 5) and X.nnz == 7 and set(X.data) == {1.0}
    assert X.toarray().sum(0).tolist() == [2, 2, 2, 1, 0]
    with pytest.raises(ValueError):
        co.click_matrix(np.array([0]), np.array([5]), 1, 5)


def test_item_neighbours_match_hand_computed_shrunk_cosine():
    neigh, sims = co.item_neighbours(co.click_matrix(*TOY, 3, 5), top_m=3, shrinkage=SHRINK)
    assert neigh.dtype == np.int32 and sims.dtype == np.float32 and neigh.shape == (5, 3)
    assert neigh[0].tolist() == [1, 2, -1] and np.allclose(sims[0], [S01, S02, 0])
    assert neigh[2].tolist() == [3, 0, 1] and np.allclose(sims[2], [S23, S02, S02])  # tie: lower position
    assert neigh[3].tolist() == [2, -1, -1] and np.allclose(sims[3, 0], S23)
    assert neigh[4].tolist() == [-1, -1, -1]  # never clicked: no neighbours
    top1, _ = co.item_neighbours(co.click_matrix(*TOY, 3, 5), top_m=1, shrinkage=SHRINK)
    assert top1[:, 0].tolist() == [1, 0, 3, 2, -1]


def test_score_histories_sum_neighbour_similarities():
    neigh, sims = co.item_neighbours(co.click_matrix(*TOY, 3, 5), top_m=3, shrinkage=SHRINK)
    pos, sc = co.score_histories(neigh, sims, [np.array([0]), np.array([0, 3]), np.array([], np.int64)], 5, k=3)
    assert pos[0].tolist() == [1, 2, -1] and np.allclose(sc[0], [S01, S02, 0])
    # history {0, 3}: ad 2 gets S02 (from 0) + S23 (from 3) = 0.747 > ad 1's S01 = 0.667
    assert pos[1].tolist() == [2, 1, -1] and np.allclose(sc[1, :2], [S02 + S23, S01], atol=1e-6)
    assert pos[2].tolist() == [-1, -1, -1]
    kept, _ = co.score_histories(neigh, sims, [np.array([0])], 5, k=3, exclude_history=False)
    assert 0 not in kept[0]  # self is never its own neighbour
    assert co.score_histories(neigh, sims, [np.array([1, 2])], 5, k=1)[0][0].tolist() == [0]


# ---- merge ------------------------------------------------------------------------------------
def test_merge_union_dedup_and_attribution():
    m = merge({"targeting": (np.array([7, 5]), np.array([0.1, 0.05])),
               "two_tower": (np.array([5, 3, 9]), np.array([0.9, 0.8, 0.7])),
               "co_engagement": (np.array([3, 7, -1]), np.array([2.0, 1.0, 0.0]))})
    assert m.positions.tolist() == [5, 3, 9, 7]  # two_tower first, then each source's new ads
    assert m.ran == ("two_tower", "co_engagement", "targeting")
    assert m.rank["two_tower"].tolist() == [1, 2, 3, 0]
    assert m.rank["co_engagement"].tolist() == [0, 1, 0, 2]
    assert m.rank["targeting"].tolist() == [2, 0, 0, 1]
    assert np.allclose(m.score["co_engagement"], [np.nan, 2.0, np.nan, 1.0], equal_nan=True)
    assert [tuple(s) for s in m.source_sets()] == [("two_tower", "targeting"), ("two_tower", "co_engagement"),
                                                 ("two_tower",), ("co_engagement", "targeting")]
    assert len(merge({})) == 0
    with pytest.raises(ValueError, match="unknown sources"):
        merge({"nope": (np.array([1]), np.array([1.0]))})


def test_quotas_have_one_set_of_defaults_and_are_validated():
    p = FunnelParams()
    assert {s: p.quota(s) for s in SOURCE_QUOTAS} == {"two_tower": 500, "co_engagement": 200,
                                                      "popular_in_context": 100, "targeting": 100, "ease": 200}
    assert FunnelParams(quotas={"targeting": 3}).quota("targeting") == 3
    with pytest.raises(ValidationError, match="unknown source"):
        FunnelParams(quotas={"bogus": 3})
    with pytest.raises(ValidationError, match="positive integer"):
        FunnelParams(quotas={"targeting": 0})
    with pytest.raises(ValidationError, match="to disable"):
        FunnelParams(disabled_sources=("bogus",))


def test_pctr_recovers_planted_coefficients():
    rng = np.random.default_rng(0)
    n = 100_000
    X = np.column_stack([rng.uniform(-1, 1, n), rng.random(n) < 0.3, rng.exponential(1.0, n)])
    z = 2.0 * X[:, 0] + 1.5 * X[:, 1] - 0.5 * X[:, 2] - 2.0
    y = rng.random(n) < 1 / (1 + np.exp(-z))
    m = fit_pctr(X, y, ("score", "found:co_engagement", "score:co_engagement"))
    assert np.allclose(m.coef, [2.0, 1.5, -0.5], atol=0.1) and abs(m.intercept + 2.0) < 0.1
    assert m.to_dict()["coefficients"]["found:co_engagement"] == m.coef[1]


# ---- the sources on planted data, through a real version ------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    settings = planted_workspace(tmp_path_factory.mktemp("planted") / "ws")
    return settings, open_engine(settings, "v1")


def _ids(engine, positions) -> list[str]:
    return [str(engine.version.ad_ids[p]) for p in positions if p >= 0]


def test_co_engagement_recovers_the_planted_co_click_groups(planted):
    _, engine = planted
    src = engine.sources["co_engagement"]
    reqs = engine.default_request("probe")
    pos, sc = src.retrieve(requests_frame([reqs]), 4)
    assert sorted(_ids(engine, pos[0])) == G1[1:]  # probe clicked ad00: the rest of its group
    assert (sc[0] > 0).all()
    # a neighbour list never crosses groups
    g1 = engine.version.position_of(G1)
    nb = src.neigh[g1]
    assert set(_ids(engine, nb.ravel())) <= set(G1)
    assert set(_ids(engine, src.neigh[engine.version.position_of(G2)].ravel())) <= set(G2)
    exp = src.explain(reqs, int(engine.version.position_of([G2[0]])[0]), 200)
    assert exp.rank is None and "one click has no co-clicks with this ad" in exp.reason



def test_one_request_history_equals_the_frame_path(planted):
    """Issue #13: explain reads one request's history without building its frame; the same rows."""
    import pandas as pd

    _, engine = planted
    for name in ("co_engagement", "ease"):
        src = engine.sources[name]
        for uid in sorted(engine.user_ids)[:8]:
            for ts in (None, "2026-10-01T00:00:00", pd.Timestamp("2026-10-20 12:00:00.000000123")):
                req = engine.default_request(uid, **({"ts": ts} if ts is not None else {}))
                np.testing.assert_array_equal(src.history(req), src.histories(requests_frame([req]))[0])


def test_a_request_batch_retrieves_and_encodes_as_its_frame(planted):
    """A funnel run hands sources and the encoder a RequestBatch, not a one-row frame: same answers
    as the frame path for every source and the query vector (home feed and community requests)."""
    from core.data.request import RequestBatch, request_arrays

    _, engine = planted
    reqs = [engine.default_request(uid) for uid in sorted(engine.user_ids)[:6]]
    reqs += [engine.default_request(reqs[0].user_id, community_id=None, ts="2026-10-20T12:00:00")]
    frame, batch = requests_frame(reqs), RequestBatch.of(reqs)
    assert len(batch) == len(reqs) and request_arrays(frame).user_id.tolist() == batch.user_id.tolist()
    assert (request_arrays(frame).ts == batch.ts).all()
    enc = engine.version.encoder
    assert enc.accepts_batch
    np.testing.assert_allclose(enc.encode(batch, engine.features), enc.encode_requests(frame, engine.features),
                               rtol=1e-5, atol=1e-6)
    for name, src in engine.sources.items():
        a, b = src.retrieve(frame, 20), src.retrieve(batch, 20)
        np.testing.assert_array_equal(a[0], b[0], err_msg=name)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-5, err_msg=name)
    trace = engine.run(reqs[0])  # the Trace's table is built on first read, once
    assert callable(trace.table) and trace.stage_counts
    assert trace.candidates is trace.candidates and not callable(trace.table)

def test_popular_in_context_finds_the_trending_ad_in_its_community_only(planted):
    _, engine = planted
    src = engine.sources["popular_in_context"]
    in_b = engine.default_request("probe", community_id="c_b")
    in_a = engine.default_request("probe", community_id="c_a")
    pos, sc = src.retrieve(requests_frame([in_b, in_a]), 3)
    assert _ids(engine, pos[0])[0] == TRENDING and sc[0, 0] == 30  # 30 clicks in c_b in the last 3 days
    assert TRENDING not in _ids(engine, pos[1])
    exp = src.explain(in_b, int(engine.version.position_of([TRENDING])[0]), 100)
    assert exp.found and exp.rank == 1 and "community c_b" in exp.reason
    # before the trend started the ad is not popular anywhere in the window
    early = engine.default_request("probe", community_id="c_b", ts="2026-10-01T00:00:00")
    assert TRENDING not in _ids(engine, src.retrieve(requests_frame([early]), 3)[0][0])



def _popular_one_oracle(src, community_id, placement, country, ts, k):
    """The popular source's pick before issue #13 (a set of seen ads and np.isin per scope)."""
    from core.sources.popular import _hour, scope_keys

    hour = _hour(ts)
    picked_p, picked_s, picked_scope, seen = [], [], [], set()
    for scope in scope_keys(community_id, placement, country):
        if len(seen) >= k:
            break
        p, s = src.ranking(scope, hour)
        new = ~np.isin(p, np.fromiter(seen, np.int64, len(seen))) if seen else np.ones(len(p), bool)
        p, s = p[new][:k - len(seen)], s[new][:k - len(seen)]
        picked_p.append(p)
        picked_s.append(s)
        picked_scope += [scope] * len(p)
        seen.update(p.tolist())
    return np.concatenate(picked_p), np.concatenate(picked_s), picked_scope


def test_popular_in_context_pick_equals_the_set_based_oracle(planted):
    _, engine = planted
    src = engine.sources["popular_in_context"]
    users = sorted(engine.user_ids)[:6]
    for uid in users:
        for comm in ("c_a", "c_b", "c_t", "none"):
            for ts in (None, "2026-10-01T00:00:00"):
                req = engine.default_request(uid, community_id=comm, **({"ts": ts} if ts else {}))
                for k in (1, 2, 3, 10, engine.n_ads):
                    got = src._one(req.community_id, req.placement, req.country, req.ts, k)
                    want = _popular_one_oracle(src, req.community_id, req.placement, req.country, req.ts, k)
                    np.testing.assert_array_equal(got[0], want[0])
                    np.testing.assert_array_equal(got[1], want[1])
                    assert got[2] == want[2]

def test_targeting_returns_exactly_the_ads_whose_campaign_includes_the_community(planted):
    _, engine = planted
    src = engine.sources["targeting"]
    reqs = [engine.default_request("probe", community_id=c) for c in ("c_t", "c_a", "none")]
    pos, _ = src.retrieve(requests_frame(reqs), 10)
    assert sorted(_ids(engine, pos[0])) == TARGETED
    assert _ids(engine, pos[1]) == [] and _ids(engine, pos[2]) == []
    assert src.reachable().sum() == len(TARGETED)
    home = src.explain(reqs[2], int(engine.version.position_of([TARGETED[0]])[0]), 100)
    assert "home feed" in home.reason


def test_trace_keeps_every_source_rank_and_score(planted):
    _, engine = planted
    tr = engine.run(engine.default_request("probe", community_id="c_t"), FunnelParams(k=10))
    c = tr.candidates.set_index("ad_id")
    assert tr.source_names == ("two_tower", "co_engagement", "popular_in_context", "targeting", "ease")
    assert set(G1[1:]) <= set(c.index[c["rank_co_engagement"].notna()])
    assert set(TARGETED) == set(c.index[c["sources"].map(lambda s: "targeting" in s)])
    assert c.loc[TRENDING, "rank_popular_in_context"] == 1
    assert len(c) == len(set(c.index))  # deduplicated
    # the tower score of every candidate is its exact inner product, whichever source found it
    vecs = engine.version.ad_vectors[engine.version.position_of(list(c.index))]
    assert c["rank_two_tower"].isna().any()
    np.testing.assert_allclose(c["score"].to_numpy(), vecs @ tr.query, rtol=1e-5, atol=1e-6)
    for name in tr.source_names:  # per source: found <=> rank and score present
        assert (c[f"rank_{name}"].notna() == c[f"score_{name}"].notna()).all()
        assert (c[f"rank_{name}"].notna() == c["sources"].map(lambda s, n=name: n in s)).all()
    counts = tr.source_counts()
    assert counts["targeting"]["retrieved"] == 5 and counts["targeting"]["only_this_source"] == 5
    assert json.loads(tr.to_json())["sources"]["counts"]["two_tower"]["retrieved"] == 10


def test_switching_sources_off_and_quotas(planted):
    _, engine = planted
    req = engine.default_request("probe", community_id="c_t")
    only_tt = engine.run(req, FunnelParams(k=10, disabled_sources=("co_engagement", "popular_in_context",
                                                                   "targeting", "ease")))
    ann = engine.version.search(only_tt.query, 10)[0][1]
    assert only_tt.candidates["version_pos"].tolist() == ann.tolist()
    assert set(only_tt.candidates["sources"]) == {("two_tower",)}
    small = engine.run(req, FunnelParams(k=10, quotas={"targeting": 2, "popular_in_context": 1}))
    assert small.candidates["rank_targeting"].max() == 2 and small.candidates["rank_popular_in_context"].max() == 1
    no_tt = engine.run(req, FunnelParams(disabled_sources=("two_tower",)))
    assert no_tt.candidates["ann_rank"].isna().all() and len(no_tt.candidates) > 0
    assert np.allclose(no_tt.candidates["score"], engine.version.ad_vectors[no_tt.candidates["version_pos"]]
                       @ no_tt.query)


def test_pctr_gives_positive_weight_to_the_source_whose_candidates_get_clicked(planted):
    _, engine = planted
    coef = engine.calibration.to_dict()["coefficients"]
    assert engine.calibration.method == "logistic"
    # every co-engagement hit in the log is a click (the planted groups); noise is never clicked
    assert coef["found:co_engagement"] > 0 and coef["score:co_engagement"] > 0
    assert set(coef) >= {"score", "found:two_tower", "found:targeting", "score:popular_in_context"}


def test_sources_are_stored_checksummed_and_listed_in_the_manifest(planted):
    settings, engine = planted
    from core.index.versions import load_version

    m = engine.version.manifest
    built = m["sources"]["built"]
    assert set(built) == {"co_engagement", "popular_in_context", "targeting", "ease"}
    assert m["sources"]["skipped"] == {}
    assert built["co_engagement"]["params"] == {"top_m": 50, "shrinkage": 10.0, "history": 100}
    assert built["ease"]["params"] == {"lam": 200.0, "history": 0, "max_ads": 5000}
    for src in built.values():
        for f in src["files"]:
            assert f in m["files"]  # sha256 recorded
    assert m["sources"]["split"] is None  # no learned tower: every impression
    f = engine.version.path / built["targeting"]["files"][0]
    data = f.read_bytes()
    f.chmod(0o644)
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        with pytest.raises(ArtifactError, match="sha256 mismatch"):
            load_version(settings, "v1")
    finally:
        f.write_bytes(data)


def test_version_without_sources_loads_with_two_tower_only(tmp_path):
    settings = planted_workspace(tmp_path / "ws", sources=False, name="old")
    engine = open_engine(settings, "old")
    assert tuple(engine.sources) == ("two_tower",) and engine.calibration.method == "platt"
    tr = engine.run(engine.default_request("probe"), FunnelParams(k=10))
    assert set(tr.candidates["sources"]) == {("two_tower",)}


def test_why_not_answers_per_source(planted):
    from core.funnel.explain import why_not

    _, engine = planted
    req = engine.default_request("probe", community_id="c_a")
    w = why_not(engine, req, G2[0], FunnelParams(k=5))  # another group's ad: nobody brings it
    by = {s["source"]: s for s in w.sources}
    assert list(by) == ["two_tower", "co_engagement", "popular_in_context", "targeting", "ease"]
    assert by["co_engagement"]["reason"].startswith("co_engagement: the user's one click has no co-clicks")
    assert "K = 5" in by["two_tower"]["reason"] and "exact rank" in by["two_tower"]["reason"]
    assert "community c_a" in by["targeting"]["reason"]
    w2 = why_not(engine, req, G1[1], FunnelParams(k=5))
    found = {s["source"]: s for s in w2.sources if s["found"]}
    assert "co_engagement" in found and found["co_engagement"]["rank"] <= 4
    assert w2.stages[1].passed and "found by" in w2.stages[1].detail
    off = why_not(engine, req, G1[1], FunnelParams(k=5, disabled_sources=("co_engagement",)))
    assert "switched off" in {s["source"]: s for s in off.sources}["co_engagement"]["reason"]


def test_compare_health_and_audience_report_sources(planted):
    from core.analysis.compare import compare_versions
    from core.analysis.health import health
    from core.funnel.audience import audience

    _, engine = planted
    rep = compare_versions(engine, engine, n_users=20, params=FunnelParams(k=10))
    src = rep.sources["a"]
    names = ("two_tower", "co_engagement", "popular_in_context", "targeting", "ease")
    assert tuple(src["share"]) == names and src["slate_slots"] == sum(len(d.trace_a.slate) for d in rep.diffs)
    assert sum(src["share"].values()) >= 1.0  # every slate ad was found by at least one source
    assert sum(src["only_this_source"].values()) <= src["slate_slots"]
    rec = src["recall_vs_clicks"]["recall"]
    assert rec["merged"] >= max(rec[n] for n in names) and rec["merged"] <= sum(rec[n] for n in names) + 1e-9
    assert json.loads(json.dumps(rep.to_dict()))["sources"]["b"]["share"] == src["share"]

    h = health(engine.version, engine.catalog, n_requests=30, k=10)
    assert h.sources["two_tower"]["reachable_ads"] == 60 and h.sources["targeting"]["reachable_ads"] == 5
    reach = int((engine.sources["co_engagement"].neigh[:, 0] >= 0).sum())  # ads with a co-clicked neighbour
    assert h.sources["co_engagement"]["reachable_ads"] == reach >= 10  # at least G1 and G2
    for c in h.sources.values():
        assert c["returned_ads"] + c["dead_ads"] == 60 and c["dead_reachable_ads"] <= c["dead_ads"]

    a = audience(engine, G1[1], n_users=71, params=FunnelParams(k=5))
    via = a.source_counts
    assert set(via) == set(names)
    assert via["co_engagement"]["retrieved"] >= 1  # at least probe, whose one click is ad00
    assert a.to_dict()["users"][0]["sources"] is not None


def test_cli_shows_sources_and_takes_switches_and_quotas(planted, monkeypatch, capsys):
    import core.funnel.engine
    from core.cli import main

    settings, engine = planted
    monkeypatch.setattr(core.funnel.engine, "open_engine", lambda s, name, **kw: engine)
    ws = ["--workspace", str(settings.workspace)]
    assert main([*ws, "inspect", "--version", "v1", "--user", "probe", "--community", "c_t", "--k", "10",
                 "--quota", "targeting=2"]) == 0
    out = capsys.readouterr().out
    assert "targeting                 2      2" in out  # quota 2, found 2
    assert "pCTR model (logistic" in out and "found:co_engagement +" in out
    assert "co_engagement 1" in out  # a slate ad with the source that found it and its rank there
    assert main([*ws, "inspect", "--version", "v1", "--user", "probe", "--no-source", "targeting",
                 "--no-source", "popular_in_context", "--no-source", "ease", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sources"]["ran"] == ["two_tower", "co_engagement"]
    assert all(set(c["sources"]) <= {"two_tower", "co_engagement"} for c in d["candidates"])
    assert main([*ws, "why-not", "--version", "v1", "--user", "probe", "--ad", G2[0], "--k", "5"]) == 0
    assert "co_engagement: the user's one click has no co-clicks with this ad" in capsys.readouterr().out
    assert main([*ws, "audience", "--version", "v1", "--ad", G1[1], "--users", "10"]) == 0
    assert "reached through sources" in capsys.readouterr().out
    for bad in (["--quota", "targeting"], ["--quota", "bogus=3"], ["--no-source", "bogus"]):
        assert main([*ws, "inspect", "--version", "v1", "--user", "probe", *bad]) == 2
        assert "error" in capsys.readouterr().err


def test_sources_learn_only_from_the_training_side_of_the_towers_split(planted, tmp_path):
    from datetime import datetime

    from core.sources.registry import build_context, build_sources, tower_split
    from core.tower.split import Split

    _, engine = planted
    cutoff = datetime(2026, 10, 13)  # the trend (last 3 days) is mostly after it
    (tmp_path / "metrics.json").write_text(json.dumps({"training": {"split": Split("time", cutoff).to_dict()}}))
    split = tower_split(tmp_path)
    assert split == Split("time", cutoff)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "metrics.json").write_text(json.dumps({"training": {"split": {"kind": "none"}}}))
    assert tower_split(tmp_path / "none") is None and tower_split(tmp_path / "missing") is None
    ctx = build_context(engine.catalog, engine.version.ad_ids, split)
    assert (ctx.train_impressions["ts"] < cutoff).all() and ctx.split["kind"] == "time"
    assert len(ctx.train_requests) == len(ctx.train_impressions)
    pop = build_sources(ctx, ("popular_in_context",))["popular_in_context"]
    assert pop.ts.max() < np.datetime64(cutoff, "ns").astype(np.int64)  # no held-out click leaks in


# ---- ease: the exact EASE model as a source, skipped above its size limit ----------------------
def test_ease_source_ranks_as_the_dense_model_and_explains(planted):
    from core.sources.co_engagement import training_click_matrix
    from core.sources.ease import ease_scores, fit_ease
    from core.sources.registry import build_context

    _, engine = planted
    src = engine.sources["ease"]
    req = engine.default_request("probe", community_id="c_a")
    hist = src.histories(requests_frame([req]))[0]
    assert len(hist) >= 1
    sctx = build_context(engine.catalog, engine.version.ad_ids, None)
    oracle = ease_scores(fit_ease(training_click_matrix(sctx), 200.0), [hist])[0]
    oracle[hist] = -np.inf
    pos, sc = src.retrieve(requests_frame([req]), 5)
    got = pos[0][pos[0] >= 0]
    assert len(got) >= 1 and not set(got) & set(hist.tolist())
    np.testing.assert_allclose(sc[0][:len(got)], oracle[got], rtol=2e-3, atol=1e-4)  # float16 storage
    assert (np.diff(oracle[got]) <= 1e-4).all()  # best first
    assert oracle[got[-1]] >= np.sort(oracle[oracle > 0])[::-1][len(got) - 1] - 1e-3  # no better ad left out
    e = src.explain(req, int(got[0]), 5)
    assert e.found and e.rank == 1 and e.reason.startswith("ease: rank 1 of")
    clicked = src.explain(req, int(hist[0]), 5)
    assert not clicked.found and "already clicked" in clicked.reason


def test_ease_source_is_skipped_with_its_reason_above_the_limit(tmp_path, caplog):
    from core.sources.registry import sources_builder

    settings = planted_workspace(tmp_path, builder=sources_builder({"ease": {"max_ads": 10}}))
    m = json.loads((settings.versions_dir / "v1" / "manifest.json").read_text())
    reason = m["sources"]["skipped"]["ease"]
    assert "ease" not in m["sources"]["built"] and "60 ads is above the ease source's max_ads = 10" in reason
    assert "--ease-max-ads 60" in reason and "EASE skipped" in caplog.text
    engine = open_engine(settings, "v1")
    assert "ease" not in engine.sources and "co_engagement" in engine.sources
    assert engine.run(engine.default_request("probe"), FunnelParams(k=5)).source_names[-1] == "targeting"


def test_sources_rebuilt_on_the_validation_slice_never_see_its_pairs(planted):
    """Issue #13: the merge's shares are learned on a validation slice; its sources are rebuilt on
    the slice's fitting side, so EASE's fit equals the closed form on exactly the fitting pairs and
    no validation ad is in a validation user's history."""
    from core.analysis.merge_learning import slice_sources
    from core.sources.ease import fit_ease
    from core.tower.split import Split
    from core.tower.user_protocol import build_user_protocol, validation_slice

    _, engine = planted
    v = engine.version
    data = build_user_protocol(engine.catalog, v.ad_ids, v.ad_text_vectors, Split("user", test_fraction=0.2, seed=3))
    val = validation_slice(data, seed=4)
    assert len(val.test_pos) > 0
    vdata, vsrc = slice_sources(v, engine.sources, data, val, engine.catalog)
    assert list(vsrc) == [n for n in engine.sources if n != "two_tower"]  # its tower saw the slice
    assert vdata.requests["user_id"].tolist() == data.train_users[val.users.astype(int)].tolist()
    lam = float(engine.sources["ease"].params["lam"])
    expected = fit_ease(co.click_matrix(val.train_user_idx, val.train_ad_pos, val.n_train_users, val.n_ads), lam)
    np.testing.assert_allclose(vsrc["ease"].B.astype(np.float64), expected, atol=2e-3)
    full = fit_ease(co.click_matrix(data.train_user_idx, data.train_ad_pos, data.n_train_users, data.n_ads), lam)
    assert np.abs(full - expected).max() > 1e-2  # the slice's pairs change the fit: the check can fail
    hist = vsrc["co_engagement"].histories(vdata.requests)
    for r, pos in zip(val.test_rows, val.test_pos):
        assert pos not in hist[r] and pos not in vdata.histories[r]
    # the same slice through the evaluation: the merge with learned shares is reported beside the
    # funnel-quota merge, and says what it chose and that two_tower was not weighed
    from core.analysis.user_eval import evaluate_models
    from core.sources.registry import load_sources

    bound = load_sources(v, data.features)
    rep = evaluate_models(data, (5, 10), sources=bound, seed=3,
                          on_slice=lambda s: slice_sources(v, bound, data, s, engine.catalog))
    assert {"merged_sources", "merged_learned"} <= set(rep.models)
    note = rep.notes["merged_learned"]
    assert note.startswith("union of ") and "chosen by hr@10 on the validation slice" in note
    assert "two_tower not weighed" in note and "two_tower" not in note.split(" of the same K")[0]


def test_a_log_of_clicks_only_calibrates_without_replaying_the_sources(planted, monkeypatch):
    """A rating log (every impression a click, e.g. MovieLens) carries no pCTR weights: the engine
    fits the constant rate without replaying thousands of requests through every source (on
    MovieLens the EASE replay alone took 105 s of a 119 s `adlens inspect`)."""
    from dataclasses import replace

    _, engine = planted
    imps = engine.catalog.impressions.assign(clicked=True)
    monkeypatch.setattr(engine, "catalog", replace(engine.catalog, impressions=imps))
    for src in engine.sources.values():
        monkeypatch.setattr(src, "retrieve", lambda *a, **k: (_ for _ in ()).throw(AssertionError("replayed")))
    model = engine._calibrate(500, 0)
    assert model.positives == model.n == 500 and set(model.coef) == {0.0}
    # with both classes the sources are replayed (the check above can fail)
    monkeypatch.setattr(engine, "catalog", replace(engine.catalog, impressions=imps.assign(
        clicked=np.arange(len(imps)) % 3 == 0)))
    with pytest.raises(AssertionError, match="replayed"):
        engine._calibrate(500, 0)


def test_ease_reachable_columns_from_the_float16_bits_equal_the_comparison():
    from core.sources.ease import _any_positive

    rng = np.random.default_rng(5)
    B = (rng.normal(size=(40, 30)) * (rng.random((40, 30)) < 0.1)).astype(np.float16)
    B[:, 3] = -np.abs(B[:, 3])  # negatives only
    B[:, 4] = np.float16(-0.0)
    B[:, 5] = 0
    B[7, 6] = np.float16(1e-7)  # a subnormal float16: still positive
    want = (B > 0).any(axis=0)
    assert not want[3:6].any() and want[6]
    np.testing.assert_array_equal(_any_positive(B), want)
    np.testing.assert_array_equal(_any_positive(B.astype(np.float32)), want)
