"""The user protocol: the (user, ad) split, its metrics, ranking with training ads excluded, and the
item-kNN / EASE baselines against hand-computed scores."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.analysis.user_eval import evaluate_models, knn_ranks
from core.cli import main
from core.common.errors import AdLensError
from core.sources.cooccurrence import click_matrix
from core.sources.ease import ease_scores, ease_skip_reason, fit_ease
from core.store.catalog import Catalog
from core.tower.metrics import user_protocol_metrics
from core.tower.query_encoder import l2_normalize
from core.tower.split import Split, make_split
from core.tower.user_protocol import (
    UserProtocolData,
    build_user_protocol,
    full_score_ranks,
    list_ranks,
    validation_slice,
)

L = lambda r: 1 / math.log2(r + 2)  # noqa: E731 - the NDCG gain at 0-based rank r


def _data(n_ads: int, histories: list[list[int]], tests: list[list[int]]) -> UserProtocolData:
    """A hand-made protocol: user i trained on histories[i], holds out tests[i]."""
    rows = np.concatenate([[i] * len(t) for i, t in enumerate(tests)]).astype(np.int64)
    tu = np.concatenate([[i] * len(h) for i, h in enumerate(histories)]).astype(np.int64)
    return UserProtocolData(split=Split("user"), n_ads=n_ads, users=np.array([f"u{i}" for i in range(len(tests))], object),
                            histories=[np.array(h, np.int64) for h in histories], test_rows=rows,
                            test_pos=np.concatenate(tests).astype(np.int64), requests=pd.DataFrame(), features=None,
                            train_user_idx=tu, train_ad_pos=np.concatenate(histories).astype(np.int64),
                            n_train_users=len(histories), n_skipped=0)


def test_user_metrics_match_hand_computed_values():
    # user a: held-out ranks 0 and 3; user b: rank 12
    ranks, users = np.array([0, 3, 12]), np.array(["a", "a", "b"], object)
    m = user_protocol_metrics(ranks, users, (2, 4))
    assert m["hr@2"] == pytest.approx(1 / 3)  # pooled over the 3 held-out interactions
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)  # per user, then averaged
    assert m["ndcg@2"] == pytest.approx((L(0) / (L(0) + L(1)) + 0) / 2)
    assert m["hr@4"] == pytest.approx(2 / 3)
    assert m["ndcg@4"] == pytest.approx(((L(0) + L(3)) / (L(0) + L(1)) + 0) / 2)
    assert user_protocol_metrics(np.array([0]), np.array(["c"], object), (5,))["ndcg@5"] == 1.0


def test_ranking_excludes_training_ads_and_lists_rank_misses_last():
    data = _data(5, histories=[[0], []], tests=[[1, 3], [4]])
    scores = np.array([[9, 1, 5, 2, 0], [0, 0, 0, 0, 1]], np.float64)
    # user 0: ad 0 (training) is excluded, so the order is 2, 3, 1, 4: ad 1 at 2, ad 3 at 1.
    assert full_score_ranks(data, lambda rows: scores[rows]).tolist() == [2, 1, 0]
    lists = np.array([[0, 3, 2, -1], [2, 4, -1, -1]])  # user 0's list loses training ad 0 first
    assert list_ranks(data, lists).tolist() == [5, 0, 1]  # ad 1 absent -> n_ads


def _toy_catalog(n_users: int = 60, n_ads: int = 12) -> tuple[Catalog, np.ndarray, np.ndarray]:
    """Two cohorts: even users click ads 0-5, odd users ads 6-11, each ad once, a day apart."""
    t0 = datetime(2026, 5, 1)
    rows = []
    for u in range(n_users):
        group = range(0, 6) if u % 2 == 0 else range(6, 12)
        for d, a in enumerate(group):
            rows.append({"impression_id": f"i{u}_{a}", "user_id": f"u{u:03d}", "ad_id": f"a{a:02d}",
                         "ts": t0 + timedelta(days=d, minutes=u), "community_id": None, "placement": "home_feed",
                         "device": "ios", "clicked": True})
    imps = pd.DataFrame(rows).sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    ids = np.array([f"a{i:02d}" for i in range(n_ads)], object)
    e = pd.DataFrame()
    users = pd.DataFrame({"user_id": [f"u{u:03d}" for u in range(n_users)], "country": "US", "age_bucket": "25-34",
                          "device": "ios", "communities": [[] for _ in range(n_users)], "signup_date": None})
    vecs = l2_normalize(np.random.default_rng(0).normal(size=(n_ads, 8)))
    return Catalog(ads=pd.DataFrame({"ad_id": ids, "title": [f"ad {i}" for i in range(n_ads)]}), campaigns=e,
                   advertisers=e, users=users, communities=pd.DataFrame({"community_id": ["c0"], "name": ["c0"]}),
                   impressions=imps), ids, vecs


def test_user_split_holds_out_whole_pairs_and_builds_one_request_per_user():
    cat, ids, vecs = _toy_catalog()
    imps = cat.impressions
    dup = imps.iloc[:3].assign(impression_id=lambda f: f.impression_id + "_again")  # same pairs, other ids
    both = pd.concat([imps, dup], ignore_index=True)
    split = make_split(both, "user", seed=5)
    side = pd.Series(split.test_side(both))
    assert side.iloc[-3:].tolist() == side.iloc[:3].tolist()  # a pair's impressions share a side
    assert 0.1 < side.mean() < 0.3 and Split.from_dict(split.to_dict()) == split
    data = build_user_protocol(cat, ids, vecs, split)
    assert len(data.requests) == len(data.users) == data.requests["user_id"].nunique()
    held = imps[split.test_side(imps)]
    assert len(data.test_pos) == len(held)
    for r, u in enumerate(data.users):  # the history is exactly the user's training ads
        mine = imps[imps.user_id == u]
        train = sorted(ids.tolist().index(a) for a in mine.ad_id[~split.test_side(mine)])
        assert data.histories[r].tolist() == train
        assert not set(train) & set(data.test_pos[data.test_rows == r].tolist())
        assert data.requests.ts[r] > mine.ts.max()  # placed after the user's impressions
    # the features only know training clicks: no held-out pair appears in a history
    assert data.features.click_counts.sum() == len(data.train_ad_pos)


def test_knn_and_ease_recover_cohorts_and_beat_random():
    cat, ids, vecs = _toy_catalog()
    data = build_user_protocol(cat, ids, vecs, make_split(cat.impressions, "user", seed=0))
    report = evaluate_models(data, (6,), lambdas=(1.0, 10.0), shrinkages=(0.0, 5.0))
    # every held-out ad is in the user's cohort, and at most 6 - |history| cohort ads remain: all ranked < 6
    assert report.models["item_knn"]["hr@6"] == 1.0
    assert report.models["ease"]["hr@6"] == 1.0
    assert report.models["random"]["hr@6"] < 1.0
    assert "lambda" in report.notes["ease"] and "shrinkage" in report.notes["item_knn"]
    val = validation_slice(data)
    assert len(val.test_pos) > 0 and len(val.train_ad_pos) + len(val.test_pos) == len(np.unique(
        np.c_[data.train_user_idx, data.train_ad_pos], axis=0))


def test_item_knn_scores_match_hand_computation():
    # users: u0 {0, 1}, u1 {0, 1, 2}, u2 {1, 2}; n = (2, 3, 2); co(0,1) = 2, co(0,2) = 1, co(1,2) = 2
    data = _data(4, histories=[[0, 1], [0, 1, 2], [1, 2], [0]], tests=[[3], [3], [3], [2, 1]])
    ranks = knn_ranks(data, shrinkage=1.0, top_m=3, k=3)
    # user 3 (history {0}): sim(0,1) = 2 / (sqrt(6) + 1) = 0.580 > sim(0,2) = 1 / (2 + 1) = 0.333
    assert ranks[-2:].tolist() == [1, 0]
    assert ranks[:3].tolist() == [4, 4, 4]  # ad 3 has no clicks: no neighbour ever returns it


def test_ease_matches_the_closed_form_by_hand():
    X = click_matrix(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)  # u0 {0, 1}, u1 {0}
    B = fit_ease(X, lam=1.0)
    # G + I = [[3, 1], [1, 2]], P = [[2, -1], [-1, 3]] / 5, B_ij = -P_ij / P_jj
    np.testing.assert_allclose(B, [[0, 1 / 3], [1 / 2, 0]], rtol=1e-6)
    np.testing.assert_allclose(ease_scores(B, [np.array([0]), np.array([1])]), [[0, 1 / 3], [1 / 2, 0]], rtol=1e-6)
    rng = np.random.default_rng(1)
    Y = click_matrix(rng.integers(0, 30, 200), rng.integers(0, 15, 200), 30, 15)
    G = (Y.T @ Y).toarray() + 7.0 * np.eye(15)
    P = np.linalg.inv(G)
    np.testing.assert_allclose(fit_ease(Y, 7.0), np.eye(15) - P / np.diag(P)[None, :], atol=1e-5)
    with pytest.raises(ValueError, match="lam"):
        fit_ease(X, 0.0)


def test_ease_is_skipped_with_a_note_above_the_limit(monkeypatch):
    import core.analysis.user_eval as ue
    import core.sources.ease as ease

    assert ease_skip_reason(10) is None
    monkeypatch.setattr(ease, "EASE_MAX_ADS", 5)
    assert "EASE_MAX_ADS" in ease_skip_reason(10)
    with pytest.raises(AdLensError, match="EASE skipped"):
        fit_ease(click_matrix(np.array([0]), np.array([0]), 1, 10), 1.0)
    cat, ids, vecs = _toy_catalog()
    data = build_user_protocol(cat, ids, vecs, make_split(cat.impressions, "user", seed=0))
    monkeypatch.setattr(ue, "ease_skip_reason", ease.ease_skip_reason)
    report = evaluate_models(data, (6,), shrinkages=(0.0,))
    assert "ease" not in report.models and "EASE skipped" in report.notes["ease"]


def test_cli_evaluate_user_protocol_without_a_tower(settings, capsys, monkeypatch):
    from test_tower import write_catalog

    import core.tower.registry
    from core.store.db import make_engine

    cat, ids, vecs = _toy_catalog()
    write_catalog(make_engine(settings.db_url), cat)
    monkeypatch.setattr(core.tower.registry, "catalog_embeddings", lambda s, c: (ids, vecs, {}))
    ws = ["--workspace", str(settings.workspace)]
    assert main([*ws, "evaluate", "--protocol", "user", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == "user" and report["tower"] is None
    assert {"random", "most_popular", "history_mean", "item_knn", "ease"} == set(report["models"])
    assert main([*ws, "evaluate", "--protocol", "user"]) == 0
    out = capsys.readouterr().out
    assert "hr@100" in out and "item_knn" in out and "lambda" in out
    assert main([*ws, "evaluate"]) == 2
    assert "--protocol time needs --tower" in capsys.readouterr().err
    assert main([*ws, "evaluate", "--tower", "t", "--version", "v"]) == 2
    assert "--version is for --protocol user" in capsys.readouterr().err
    assert main([*ws, "evaluate", "--protocol", "user", "--version", "nope"]) == 2
    assert "version 'nope' not found" in capsys.readouterr().err


# ---- candidate sources under the user protocol ------------------------------------------------
def test_merge_at_budget_takes_turns_by_weight_and_skips_duplicates():
    from core.sources.merge import merge_at_budget

    lists = {"two_tower": np.array([[1, 2, 3, 4, 5, 6]]), "co_engagement": np.array([[2, 7, 8, -1, -1, -1]])}
    # weights 2:1 -> tt, co, tt, tt, co, tt ...; co's 2 is taken already, so its turn takes 7
    out = merge_at_budget(lists, {"two_tower": 2, "co_engagement": 1}, 6)
    assert out.tolist() == [[1, 2, 7, 3, 4, 8]]
    assert merge_at_budget(lists, {"two_tower": 2, "co_engagement": 1}, 4).tolist() == [out[0, :4].tolist()]
    # a source that runs out leaves its share to the others; nothing left pads with -1
    short = {"two_tower": np.array([[1, -1, -1]]), "co_engagement": np.array([[2, 3, -1]])}
    assert merge_at_budget(short, {"two_tower": 5, "co_engagement": 1}, 4).tolist() == [[1, 2, 3, -1]]
    with pytest.raises(ValueError, match="unknown sources"):
        merge_at_budget({"bogus": np.array([[1]])}, {"bogus": 1}, 1)


class _ListSource:
    """A source returning fixed best-first lists (one per user), like CandidateSource.retrieve."""

    def __init__(self, lists):
        self.lists = np.asarray(lists, np.int64)

    def retrieve(self, requests, k, options=None):
        out = np.full((len(requests), k), -1, np.int64)
        m = min(k, self.lists.shape[1])
        out[:, :m] = self.lists[requests["row"].to_numpy(), :m]
        return out, np.zeros(out.shape, np.float32)


def test_source_ranks_drop_training_ads_and_merge_at_the_same_k():
    from core.analysis.user_eval import source_lists, source_ranks

    data = _data(8, histories=[[0], [5]], tests=[[3], [6]])
    data.requests = pd.DataFrame({"row": [0, 1]})
    sources = {"co_engagement": _ListSource([[0, 1, 3, 2], [6, 1, 2, 3]]),  # user 0's ad 0 is a training ad
               "popular_in_context": _ListSource([[4, 3, 1, 2], [1, 2, 3, 4]])}
    ranks, notes = source_ranks(source_lists(sources, data, 2), data, 2, {"co_engagement": 1, "popular_in_context": 1})
    # co_engagement alone, K=2: user 0 gets [1, 3] (3 at rank 1), user 1 gets [6, 1] (6 at rank 0)
    assert ranks["source:co_engagement"].tolist() == [1, 0]
    assert ranks["source:popular_in_context"].tolist() == [1, 8]  # [4, 3]; [1, 2]: 6 missed -> n_ads
    # merged at K=2, equal weights: user 0 -> [1, 4]: 3 missed; user 1 -> [6, 1]
    assert ranks["merged_sources"].tolist() == [8, 0]
    assert "co_engagement 50.0%" in notes["merged_sources"]


def test_learned_allocation_mixes_sources_only_where_the_mix_finds_more():
    """Issue #13: the merge's shares are learned on the validation slice by HR@K; a move is kept only
    when it raises HR@K, so a source that adds nothing gets no share."""
    from core.analysis.merge_learning import learn_allocation

    val = _data(10, histories=[[9], [9]], tests=[[1], [2]])
    # each source finds one user's held-out ad first: at K=2 only the 50/50 mix finds both
    lists = {"co_engagement": np.array([[1, 3, 4], [5, 6, 7]]), "popular_in_context": np.array([[5, 6, 7], [2, 3, 4]])}
    shares, tried = learn_allocation(lists, val, 2, {"co_engagement": 9, "popular_in_context": 1})
    assert shares == {"co_engagement": 0.5, "popular_in_context": 0.5}
    assert tried["co_engagement 90.0%, popular_in_context 10.0%"] == 0.5  # the funnel's quotas: one slot each user
    assert tried["co_engagement 50.0%, popular_in_context 50.0%"] == 1.0
    # co_engagement finds both at rank 2, popular finds neither: any share for popular costs a hit
    lists = {"co_engagement": np.array([[3, 1, 4], [5, 2, 7]]), "popular_in_context": np.array([[5, 6, 7], [6, 3, 4]])}
    shares, tried = learn_allocation(lists, val, 2, {"co_engagement": 1, "popular_in_context": 1})
    assert shares == {"co_engagement": 1.0}
    assert tried["co_engagement 100.0%"] == 1.0 and tried["co_engagement 50.0%, popular_in_context 50.0%"] == 0.0
