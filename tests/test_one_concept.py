"""Concepts that used to exist in several copies that disagreed, now one implementation each:
recall against exact search (ties), and the held-out clicks shared by train, evaluate and compare."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.analysis.compare import _holdout_clicks, _recall_vs_exact
from core.analysis.health import recall_curve
from core.index.ann import AnnIndex, exact_search, recall_at
from core.index.versions import Version
from core.tower.query_encoder import HistoryMeanEncoder
from core.tower.split import Split, heldout_mask, make_split, tower_split


def _duplicated_version() -> tuple[Version, np.ndarray]:
    """Every ad vector appears twice: exact and approximate search may return either twin."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(60, 16)).astype(np.float32)
    text = np.repeat(base, 2, axis=0)
    enc = HistoryMeanEncoder()
    v = Version.in_memory("dup", np.array([f"ad{i:03d}" for i in range(len(text))], dtype=object), text,
                          AnnIndex.build(enc.transform_ads(text), "HNSW8"), enc, {"efSearch": 256})
    q = rng.normal(size=(10, 16)).astype(np.float32)
    return v, q / np.linalg.norm(q, axis=1, keepdims=True)


def test_recall_with_ties_is_the_same_number_in_manifest_health_and_compare():
    v, q = _duplicated_version()
    k = 7  # odd: the k-th exact neighbour's twin sits just outside the exact list
    exact = exact_search(v.ad_vectors, q, k)
    approx = v.search(q, k)
    manifest_recall = recall_at(approx, exact, k, vectors=v.ad_vectors, queries=q)
    assert manifest_recall == pytest.approx(1.0)  # a twin of an exact neighbour is a correct answer
    naive = np.mean([len(np.intersect1d(a[1], e[1])) / k for a, e in zip(approx, exact)])
    assert naive < 1.0, "the fixture must produce ties, or this test proves nothing"
    curve = recall_curve(v, q, k, exact)
    assert curve.loc[curve["is_default"], "recall_at_k"].iloc[0] == pytest.approx(manifest_recall)
    traces = [SimpleNamespace(query=qi, candidates=pd.DataFrame({"score": a[0], "version_pos": a[1]}))
              for qi, a in zip(q, approx)]
    assert _recall_vs_exact(SimpleNamespace(version=v), traces, k) == pytest.approx(manifest_recall)


def _log() -> tuple[pd.DataFrame, pd.DataFrame]:
    ts = pd.date_range("2026-10-01", periods=200, freq="h")
    imps = pd.DataFrame({"impression_id": [f"i{i}" for i in range(200)], "user_id": [f"u{i % 7}" for i in range(200)],
                         "ad_id": [f"a{i % 11}" for i in range(200)], "ts": ts, "community_id": None,
                         "placement": "home_feed", "device": "ios", "clicked": True})
    return imps, pd.DataFrame({"user_id": [f"u{i}" for i in range(7)], "country": "US"})


def _engine(imps, users, evaluation):
    manifest = SimpleNamespace(tower_metrics=evaluation)
    return SimpleNamespace(catalog=SimpleNamespace(impressions=imps, users=users),
                           version=SimpleNamespace(manifest=manifest))


def test_compare_holds_out_exactly_what_the_towers_did_not_train_on():
    imps, users = _log()
    cutoff = pd.Timestamp("2026-10-06T00:00:00")
    a = _engine(imps, users, {"split": Split("time", cutoff.to_pydatetime()).to_dict()})
    b = _engine(imps, users, {"split": Split("random", None, 5, 0.3).to_dict()})
    reqs, ads = _holdout_clicks([a], 500, 0)
    assert len(reqs) == int((imps["ts"] >= cutoff).sum()) and (reqs["ts"] >= cutoff).all()
    reqs_ab, _ = _holdout_clicks([a, b], 500, 0)
    expected = heldout_mask(imps, [tower_split(a.version.manifest.tower_metrics, imps),
                                   Split("random", None, 5, 0.3)])
    assert len(reqs_ab) == int(expected.sum()) < len(reqs)
    # a version without a tower holds out the default time split that training would use
    none = _engine(imps, users, {})
    reqs_none, _ = _holdout_clicks([none], 500, 0)
    assert len(reqs_none) == int(make_split(imps, "time").test_side(imps).sum())


@pytest.mark.slow
def test_blocking_stage_is_one_definition_for_trace_why_not_audience_and_compare(tmp_path):
    from funnel_data import random_workspace

    from core.analysis.compare import lost_why
    from core.funnel.audience import audience
    from core.funnel.engine import open_engine
    from core.funnel.explain import why_not
    from core.funnel.params import FunnelParams

    settings = random_workspace(tmp_path / "ws", {"flat": ("Flat", {})}, n_ads=300)
    eng = open_engine(settings, "flat")
    params = FunnelParams(k=80, n_ranked=8, max_per_advertiser=1, slate_size=4)
    req = eng.default_request(sorted(eng.usual.known)[0])
    trace = eng.run(req, params)
    c = trace.candidates
    assert set(c["blocking_stage"].dropna()) >= {"eligible", "slate"}
    assert c.loc[c["outcome"] == "slate", "blocking_stage"].isna().all()
    for row in c.groupby("outcome").head(3).itertuples():
        w = why_not(eng, req, row.ad_id, params)
        assert w.blocking_stage == (None if pd.isna(row.blocking_stage) else row.blocking_stage), row.ad_id
        if row.outcome != "slate":
            assert lost_why(row.ad_id, trace, eng)[0] == row.blocking_stage
    ad = c.loc[c["outcome"] == "filtered", "ad_id"].iloc[0]
    rep = audience(eng, ad, n_users=5, params=params)
    assert set(rep.blocking_stage_counts) <= {"retrieved", "eligible", "ranked", "slate", "shown"}
