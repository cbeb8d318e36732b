"""Version comparison: identity, subset catalogs, index and model changes."""

from __future__ import annotations

import numpy as np
import pytest
from funnel_data import random_workspace, stub_version

from core.analysis.compare import compare_versions, diff_traces
from core.funnel.engine import FunnelEngine, open_engine
from core.funnel.params import FunnelParams

PARAMS = FunnelParams(k=60, n_ranked=10, max_per_advertiser=2, slate_size=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings = random_workspace(tmp_path_factory.mktemp("compare") / "ws",
                                {"flat": ("Flat", {}), "ivf": ("IVF16,Flat", {"nprobe": 1})})
    return settings, open_engine(settings, "flat"), open_engine(settings, "ivf")


def test_compare_with_itself_is_identical(world):
    _, flat, _ = world
    rep = compare_versions(flat, flat, n_users=12, params=PARAMS, n_clicks=50)
    assert len(rep.per_request) == 12
    for col in ("overlap", "jaccard", "rbo", "slate_overlap"):
        assert rep.per_request[col].min() == pytest.approx(1.0), col
    assert rep.per_request["n_gained"].sum() == 0 and rep.per_request["n_lost"].sum() == 0
    assert rep.per_request["mean_abs_rank_shift"].max() == 0
    assert rep.vertical_tvd == 0 and rep.lost_by_stage == {}
    assert rep.recall_vs_exact["a"] == pytest.approx(1.0)  # Flat is exact
    assert rep.catalog_diff["only_in_a"] == rep.catalog_diff["only_in_b"] == 0
    assert rep.coverage["a"] == rep.coverage["b"]


def test_index_change_loses_recall_and_explains_lost_ads(world):
    _, flat, ivf = world
    rep = compare_versions(flat, ivf, n_users=15, params=PARAMS, n_clicks=50)
    assert rep.recall_vs_exact["a"] == pytest.approx(1.0)
    assert rep.recall_vs_exact["b"] < 1.0  # nprobe=1 of 16 lists misses true neighbours
    assert rep.summary["overlap"]["mean"] < 1.0
    # Every ad lost from a slate has a stage, and the per-request stage matches B's own trace.
    for d in rep.diffs:
        for r in d.lost.itertuples():
            row = d.trace_b.row(r.ad_id)
            if r.lost_stage == "retrieved":
                assert row is None
            elif r.lost_stage == "eligible":
                assert row["outcome"] == "filtered" and r.lost_reason == row["primary_reason"]
            else:
                assert row is not None and row["outcome"] in ("ranked_out", "advertiser_cap")
    changed = rep.most_changed
    assert changed["rbo"].is_monotonic_increasing
    assert set(rep.to_dict()) >= {"per_request", "most_changed", "vertical_mix", "recall_vs_clicks"}


def test_subset_catalog_reports_missing_ads(world):
    _, flat, _ = world
    cat = flat.catalog
    keep = sorted(cat.ads["ad_id"])[::2]
    sub = FunnelEngine(stub_version(cat, ad_ids=keep, dim=flat.version.ad_vectors.shape[1]), cat)
    full = FunnelEngine(stub_version(cat, dim=flat.version.ad_vectors.shape[1]), cat)
    rep = compare_versions(full, sub, n_users=8, params=PARAMS, n_clicks=30)
    assert rep.catalog_diff["only_in_a"] == len(cat.ads) - len(keep)
    assert rep.catalog_diff["only_in_b"] == 0
    assert set(rep.catalog_diff["examples_only_in_a"]) <= set(cat.ads["ad_id"]) - set(keep)
    lost = [r for d in rep.diffs for r in d.lost.itertuples()]
    assert any(r.lost_stage == "inventory" for r in lost)
    for r in lost:
        if r.lost_stage == "inventory":
            assert r.ad_id not in set(keep)


def test_diff_traces_rank_shift(world):
    _, flat, ivf = world
    req = flat.default_request(sorted(map(str, flat.user_ids))[0])
    d = diff_traces(flat.run(req, PARAMS), ivf.run(req, PARAMS), ivf)
    assert (d.rank_shift["shift"] == d.rank_shift["rank_b"] - d.rank_shift["rank_a"]).all()
    common = set(d.trace_a.candidates["ad_id"]) & set(d.trace_b.candidates["ad_id"])
    assert set(d.rank_shift["ad_id"]) == common
    assert np.isclose(d.jaccard, len(common) / len(set(d.trace_a.candidates["ad_id"]) | set(d.trace_b.candidates["ad_id"])))
