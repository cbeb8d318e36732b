"""Index health: recall curve against the exact oracle, IVF balance, dead and hub ads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from funnel_data import random_workspace

from core.analysis.health import dead_and_hub_ads, health, ivf_list_stats
from core.index.versions import load_version
from core.store.catalog import load_catalog
from core.store.db import make_engine


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings = random_workspace(tmp_path_factory.mktemp("health") / "ws", {"ivf": ("IVF16,Flat", {"nprobe": 2})},
                                n_ads=400)
    return load_version(settings, "ivf"), load_catalog(make_engine(settings.db_url))


def test_curve_is_monotone_and_reaches_one_at_nlist(world):
    v, cat = world
    steps = []
    rep = health(v, cat, n_requests=40, k=20, progress=lambda f, what: steps.append((f, what)))
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len(steps) >= len(rep.curve) + 4  # one report per point of the curve
    c = rep.curve
    assert list(c["param"].unique()) == ["nprobe"]
    assert c["value"].max() == v.index.nlist
    assert c.loc[c["value"] == v.index.nlist, "recall_at_k"].iloc[0] == pytest.approx(1.0)
    assert (np.diff(c["recall_at_k"].to_numpy()) >= -0.02).all()  # monotone up to noise
    assert c["is_default"].sum() == 1 and c.loc[c["is_default"], "value"].iloc[0] == 2


def test_ivf_list_stats(world):
    v, _ = world
    s = ivf_list_stats(v.index)
    assert s["n"] == len(v.ad_ids) and len(s["sizes"]) == s["nlist"] == 16
    sizes = np.asarray(s["sizes"], dtype=float)
    assert s["imbalance_factor"] == pytest.approx((sizes**2).sum() * 16 / sizes.sum() ** 2)
    assert s["imbalance_factor"] >= 1.0


class _Version:
    """A minimal version: 4 ads in 2-D; ad d is opposite every query (unreachable)."""

    ad_ids = np.array(["a", "b", "c", "d"], dtype=object)
    ad_vectors = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [-1, 0]], dtype=np.float32)
    index = SimpleNamespace(metric="ip")  # scores are inner products


def test_dead_ad_planted_far_from_users():
    v = _Version()
    cat = type("C", (), {"ads": pd.DataFrame({"ad_id": list("abcd"), "vertical": ["x", "x", "y", "z"],
                                               "title": list("ABCD")})})()
    q = np.array([[1, 0], [0.9, 0.44], [0.7, 0.71]], dtype=np.float32)
    k = 2
    scores = q @ v.ad_vectors.T
    exact = [(s[np.argsort(-s)[:k]], np.argsort(-s)[:k]) for s in scores]
    approx = [exact[0], exact[1], (exact[2][0][:1], exact[2][1][:1])]  # ANN drops one of c's results
    dead, by_vertical, hubs = dead_and_hub_ads(v, cat, q, approx, exact, k)
    assert set(dead["ad_id"]) == {"d"}
    assert "far from every sampled user" in dead["reason"].iloc[0]
    assert dead["best_score"].iloc[0] == pytest.approx(-0.7, abs=1e-6)
    assert by_vertical["vertical"].tolist() == ["z"]


def test_hub_ad_planted():
    n = 40
    v = type("V", (), {"ad_ids": np.array([f"a{i}" for i in range(n)], dtype=object),
                       "ad_vectors": np.eye(n, dtype=np.float32), "index": SimpleNamespace(metric="ip")})()
    cat = type("C", (), {"ads": pd.DataFrame({"ad_id": v.ad_ids, "vertical": ["v"] * n, "title": ["t"] * n})})()
    # 20 requests: each retrieves ad a0 plus one request-specific ad.
    approx = [(np.array([1.0, 0.5]), np.array([0, 1 + i])) for i in range(20)]
    _, _, hubs = dead_and_hub_ads(v, cat, np.eye(n, dtype=np.float32)[:20], approx, approx, 2)
    assert hubs["ad_id"].tolist() == ["a0"]
    assert hubs["share"].iloc[0] == 1.0 and hubs["expected_share"].iloc[0] == pytest.approx(2 / n)


def test_the_tower_evaluation_header_names_what_was_held_out_per_protocol():
    """A user-protocol tower's manifest counts held-out pairs, not clicks: `health` said "0 held-out
    clicks" for it (seen on MovieLens)."""
    from core.cli.analysis_cmds import tower_eval_header

    user = tower_eval_header({"protocol": "user", "n_test_pairs": 20007, "n_users": 610, "n_test_clicks": 0})
    assert "20,007 held-out (user, ad) pairs of 610 users, user protocol" in user and "clicks" not in user
    assert "1,234 held-out clicks" in tower_eval_header({"n_test_clicks": 1234})
