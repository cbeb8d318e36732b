"""Offline evaluation: metrics against hand-computed values, splits, baselines and the CLI."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.common.errors import AdLensError
from core.data.features import FeatureStore
from core.store.catalog import Catalog
from core.tower.evaluate import evaluate_encoder, popularity_ranks
from core.tower.metrics import (
    hitrate_at_k,
    metric_table,
    ndcg_at_k,
    ranks_of_targets,
    recall_at_k,
)
from core.tower.query_encoder import QueryEncoder, l2_normalize
from core.tower.split import Split, make_split

L2, L3, L5 = 1.0, 1 / math.log2(3), 1 / math.log2(5)  # 1/log2(rank+2) for ranks 0, 1, 3


def test_metrics_match_hand_computed_values():
    ranks = np.array([0, 3, 12, 1])
    users = np.array(["a", "a", "b", "c"], dtype=object)
    # per user: a has ranks {0, 3}, b {12}, c {1}
    assert recall_at_k(ranks, 2, users) == pytest.approx((0.5 + 0 + 1) / 3)
    assert hitrate_at_k(ranks, 2, users) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 2, users) == pytest.approx((L2 / 2 + 0 + L3) / 3)
    assert recall_at_k(ranks, 10, users) == pytest.approx(2 / 3)
    assert ndcg_at_k(ranks, 10, users) == pytest.approx(((L2 + L5) / 2 + 0 + L3) / 3)
    assert hitrate_at_k(ranks, 13, users) == 1.0
    # per click when no users are given
    assert recall_at_k(ranks, 2) == hitrate_at_k(ranks, 2) == 0.5
    assert ndcg_at_k(ranks, 2) == pytest.approx((L2 + L3) / 4)
    table = metric_table(ranks, (2, 10), users)
    assert set(table) == {f"{m}@{k}" for m in ("recall", "hitrate", "ndcg") for k in (2, 10)}
    assert math.isnan(recall_at_k(np.array([], np.int64), 5))
    with pytest.raises(ValueError, match="k must be positive"):
        recall_at_k(ranks, 0)
    with pytest.raises(ValueError, match="differ in length"):
        recall_at_k(ranks, 1, users[:2])


def test_ranks_break_ties_halfway():
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.9, 0.5, 0.5, 0.1], [1, 1, 1, 1], [0, 1, 2, 3]], dtype=np.float32)
    assert ranks_of_targets(scores, np.array([0, 2, 0, 0])).tolist() == [0, 1, 1, 3]
    with pytest.raises(ValueError, match="targets must be item positions"):
        ranks_of_targets(scores, np.array([0, 0, 0, 4]))
    counts = np.array([5.0, 0, 0, 2, 0, 5])
    targets = np.array([0, 1, 3, 5, 4])
    np.testing.assert_array_equal(popularity_ranks(counts, targets),
                                  ranks_of_targets(np.tile(counts, (len(targets), 1)), targets))


def _toy(n_users: int = 40, n_ads: int = 20, days: int = 10) -> tuple[Catalog, np.ndarray, np.ndarray]:
    """User i clicks ad i % n_ads once a day (and sees ad (i+1) % n_ads without clicking)."""
    t0 = datetime(2026, 3, 1)
    rows = []
    for u in range(n_users):
        for d in range(days):
            for k, clicked in ((0, True), (1, False)):
                rows.append({"impression_id": f"i{u}_{d}_{k}", "user_id": f"u{u:03d}", "ad_id": f"a{(u + k) % n_ads:03d}",
                             "ts": t0 + timedelta(days=d, hours=u % 24), "community_id": None,
                             "placement": "home_feed", "device": ["ios", "android"][u % 2], "clicked": clicked})
    imps = pd.DataFrame(rows).sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    users = pd.DataFrame({"user_id": [f"u{u:03d}" for u in range(n_users)], "country": ["US", "DE"] * (n_users // 2),
                          "age_bucket": "25-34", "device": "ios", "communities": [[] for _ in range(n_users)],
                          "signup_date": None})
    ids = np.array([f"a{i:03d}" for i in range(n_ads)], dtype=object)
    vecs = l2_normalize(np.random.default_rng(0).normal(size=(n_ads, 8)))
    e = pd.DataFrame()
    return Catalog(ads=pd.DataFrame({"ad_id": ids}), campaigns=e, advertisers=e, users=users,
                   communities=pd.DataFrame(columns=["community_id"]), impressions=imps), ids, vecs


class OracleEncoder(QueryEncoder):
    """Knows each user's one ad: a perfect retriever (rank 0 for every test click)."""

    kind = "oracle"

    def encode_requests(self, requests, features):
        rows = np.array([int(u[1:]) % len(features.ad_ids) if u[1:].isdigit() else 0 for u in requests["user_id"]])
        return l2_normalize(features.ad_text_vectors[rows])

    def config(self):
        return {"kind": self.kind}


def test_time_split_defaults_to_80th_percentile_and_is_strict():
    cat, _, _ = _toy()
    split = make_split(cat.impressions)
    ts = pd.to_datetime(cat.impressions["ts"])
    assert split.kind == "time" and split.cutoff == ts.quantile(0.8).floor("s").to_pydatetime()
    test = split.test_side(cat.impressions)
    assert (ts[test] >= split.cutoff).all() and (ts[~test] < split.cutoff).all()
    assert 0.15 < test.mean() < 0.25
    assert Split.from_dict(split.to_dict()) == split
    explicit = make_split(cat.impressions, cutoff="2026-03-09")
    assert explicit.cutoff == datetime(2026, 3, 9)
    with pytest.raises(AdLensError, match="not a timestamp"):
        make_split(cat.impressions, cutoff="yesterday-ish")
    with pytest.raises(AdLensError, match="unknown split"):
        make_split(cat.impressions, "by-vibes")


def test_random_split_is_seeded_and_independent_of_row_order():
    cat, _, _ = _toy()
    imps = cat.impressions
    s = make_split(imps, "random", seed=3)
    m = s.test_side(imps)
    shuffled = imps.sample(frac=1.0, random_state=1)
    np.testing.assert_array_equal(s.test_side(shuffled), pd.Series(m, index=imps.index)[shuffled.index].to_numpy())
    assert 0.12 < m.mean() < 0.28
    assert not np.array_equal(m, make_split(imps, "random", seed=4).test_side(imps))


def test_evaluate_encoder_oracle_and_baselines():
    cat, ids, vecs = _toy()
    split = make_split(cat.impressions)
    report = evaluate_encoder(OracleEncoder(), cat, ids, vecs, split, ks=(1, 5), name="oracle")
    assert report.n_test_clicks == int((split.test_side(cat.impressions) & cat.impressions.clicked).sum())
    assert report.models["oracle"]["recall@1"] == 1.0 and report.models["oracle"]["ndcg@5"] == 1.0
    # Every ad has the same number of training clicks: popularity is a tie, the middle rank.
    assert report.models["most_popular"]["recall@5"] == 0.0
    # History mean: each user's prior clicks are all the same ad, so it is also perfect here.
    assert report.models["history_mean"]["recall@1"] == 1.0
    assert 0.0 <= report.models["random"]["recall@5"] <= 0.6
    by = {(s["by"], s["value"]): s for s in report.segments}
    assert {("country", "US"), ("country", "DE"), ("device", "ios"), ("device", "android"), ("history", "hot")} <= set(by)
    assert sum(s["n_clicks"] for s in report.segments if s["by"] == "country") == report.n_test_clicks


def test_evaluate_rejects_empty_test_side():
    cat, ids, vecs = _toy()
    with pytest.raises(AdLensError, match="no clicked impression to evaluate on"):
        make_split(cat.impressions, cutoff="2030-01-01")
    late = Split("time", datetime(2030, 1, 1))  # a split made elsewhere is still checked by evaluate
    with pytest.raises(AdLensError, match="no test clicks"):
        evaluate_encoder(OracleEncoder(), cat, ids, vecs, late)


def test_history_mean_cold_start_uses_training_clicks_only():
    """A cold user's history-mean vector must not be pulled toward ads clicked after the cutoff."""
    cat, ids, _ = _toy(n_users=4, n_ads=4)
    vecs = np.eye(4, dtype=np.float32)  # training clicks are uniform: the fair fallback ties all ads
    split = make_split(cat.impressions)
    # A new user (no profile, no history) clicks a003 fifty times, all after the cutoff.
    extra = pd.DataFrame([{"impression_id": f"new{i}", "user_id": "zz_new", "ad_id": "a003",
                           "ts": split.cutoff + timedelta(hours=1 + i), "community_id": None, "placement": "home_feed",
                           "device": "ios", "clicked": True} for i in range(50)])
    cat.impressions = pd.concat([cat.impressions, extra]).sort_values(["user_id", "ts"], kind="stable")
    cat.impressions = cat.impressions.reset_index(drop=True)
    fs = FeatureStore(cat, ids, vecs)
    assert int(np.argmax(fs.global_mean)) == 3  # the store's fallback (all clicks) would leak a003
    report = evaluate_encoder(OracleEncoder(), cat, ids, vecs, split, ks=(1,), features=fs)
    cold = [s for s in report.segments if s["by"] == "history" and s["value"] == "cold"]
    assert cold and cold[0]["n_clicks"] == 1
    assert cold[0]["models"]["history_mean"]["recall@1"] == 0.0  # a tie among 4 ads: middle rank


@pytest.mark.slow
def test_cli_evaluate_json_and_split_guard(settings, capsys):
    from test_tower import (  # tests/ is on sys.path under pytest
        planted_catalog,
        write_catalog,
    )

    from core.store.db import make_engine
    from core.tower.evaluate import evaluate_tower
    from core.tower.train import train_tower

    cat, ids, vecs = planted_catalog(n_ads=120, n_users=60, per_user=40)
    engine = make_engine(settings.db_url)
    write_catalog(engine, cat)
    res = train_tower(settings, "small", epochs=2, batch_size=64, engine=engine,
                      ad_ids=ids, ad_text_vectors=vecs)
    again = evaluate_tower(settings, "small", engine=engine, ad_ids=ids, ad_text_vectors=vecs)
    assert again.models == res.report.models  # same split, same weights: same numbers
    with pytest.raises(AdLensError, match="trained on the time split"):
        evaluate_tower(settings, "small", split="random", engine=engine, ad_ids=ids, ad_text_vectors=vecs)
    metrics = json.loads((settings.towers_dir / "small" / "metrics.json").read_text())
    assert metrics["evaluation"]["tower"] == "small"
    assert main(["--workspace", str(settings.workspace), "evaluate", "--tower", "nope"]) == 2
    assert "no tower 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_and_evaluate_print_tables(settings, capsys, monkeypatch):
    from test_tower import planted_catalog, write_catalog

    import core.tower.evaluate
    import core.tower.train
    from core.store.db import make_engine
    from core.tower.registry import list_towers

    cat, ids, vecs = planted_catalog(n_ads=120, n_users=60, per_user=40)
    write_catalog(make_engine(settings.db_url), cat)
    # The CLI embeds the catalog with the real text model; hand it the planted vectors instead.
    planted = lambda s, c: (ids, vecs, {"fingerprint": "ab12"})  # noqa: E731
    monkeypatch.setattr(core.tower.train, "catalog_embeddings", planted)
    monkeypatch.setattr(core.tower.evaluate, "catalog_embeddings", planted)
    ws = ["--workspace", str(settings.workspace)]
    assert main([*ws, "train", "--name", "cli", "--epochs", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "cli" and out["config"]["embeddings"]["fingerprint"] == "ab12"
    assert json.loads((settings.towers_dir / "cli" / "config.json").read_text())["embedding_fingerprint"] == "ab12"
    assert [t["name"] for t in list_towers(settings)] == ["cli"]
    assert main([*ws, "evaluate", "--tower", "cli"]) == 0
    text = capsys.readouterr().out
    assert "recall@100" in text and "history_mean" in text and "history=hot" in text
    assert main([*ws, "evaluate", "--tower", "cli", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tower"] == "cli" and set(report["models"]) == {"tower", "random", "most_popular", "history_mean"}
