"""`build-index --learn-quotas` (core/analysis/quota_learning.py): quotas learned on the validation
slice, recorded in the manifest, used by the funnel for that version unless overridden, and
merged at by `adlens evaluate --protocol user --version V`."""

from __future__ import annotations

import json

import pytest
from funnel_data import FakeTextEncoder
from sources_data import fill_planted

from core.common.errors import AdLensError
from core.funnel.params import SOURCE_QUOTAS, FunnelParams


def test_params_over_version_quotas_take_the_counts_switch_zero_off_and_yield_to_given_ones():
    counts = {"co_engagement": 40, "popular_in_context": 0, "targeting": 0, "ease": 960}
    p = FunnelParams().over_version_quotas(counts)
    assert p.quota("co_engagement") == 40 and p.quota("ease") == 960 and p.quota("two_tower") == p.k
    assert set(p.disabled_sources) == {"popular_in_context", "targeting"}
    assert p.over_version_quotas(counts) == p  # idempotent
    given = FunnelParams(quotas={"targeting": 7, "ease": 5}, disabled_sources=("co_engagement",))
    q = given.over_version_quotas(counts)
    assert q.quota("targeting") == 7 and q.quota("ease") == 5 and q.enabled("targeting")
    assert not q.enabled("co_engagement") and not q.enabled("popular_in_context")
    assert FunnelParams().over_version_quotas(None) == FunnelParams()


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """The planted co-click data (test_sources), a --split user tower and a version built with its
    sources and quotas learned at a budget of 3 (60 ads: at K = 100 every source returns them all)."""
    from core.analysis.quota_learning import quotas_builder
    from core.index.versions import build_version
    from core.sources.registry import sources_artifact_builder
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.store.settings import load_settings
    from core.tower.registry import read_tower_metrics
    from core.tower.train import train_tower

    ws = tmp_path_factory.mktemp("quotas") / "ws"
    settings = load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}")
    db = make_engine(settings.db_url)
    fill_planted(db)
    ads = load_catalog(db, with_impressions=False).ads.sort_values("ad_id")
    ids = ads["ad_id"].to_numpy(dtype=object)
    vecs = FakeTextEncoder().encode(ads["title"].tolist())
    train_tower(settings, "tu", split="user", epochs=2, batch_size=32, engine=db, ad_ids=ids, ad_text_vectors=vecs)
    training = read_tower_metrics(settings, "tu")["training"]
    v = build_version(settings, "vq", "Flat", tower="tu", text_encoder=FakeTextEncoder(), engine=db,
                      extra_builders=(sources_artifact_builder, quotas_builder(training, k=3)))
    db.dispose()
    return settings, v


def test_learned_quotas_are_recorded_and_beat_every_source_alone_on_the_slice(learned):
    settings, v = learned
    q = v.manifest.quotas
    on_disk = json.loads((v.path / "manifest.json").read_text())["quotas"]
    assert on_disk == q and q["k"] == 3 and q["metric"] == "hr@3"
    assert abs(sum(q["shares"].values()) - 1) < 1e-6
    val = q["validation"]
    assert val["split"]["seed"] == 1 and val["n_pairs"] > 10
    assert val["hr@3"] >= max(val["alone"].values()) and val["hr@3"] >= val["default_quotas"]
    # the co-click groups are what the held-out pairs hold: the sources that see them take the
    # budget; targeting (no campaign targets the home feed) returns nothing and gets no share
    assert q["shares"].get("co_engagement", 0) + q["shares"].get("ease", 0) >= 0.5, q["shares"]
    assert "targeting" not in q["shares"] and q["counts"]["targeting"] == 0
    total = sum(SOURCE_QUOTAS.values())
    for name, count in q["counts"].items():
        assert count == round(q["shares"].get(name, 0) * total)
    assert v.manifest.quota_counts == q["counts"]


def test_the_funnel_uses_the_versions_quotas_unless_overridden(learned):
    from core.funnel.engine import FunnelEngine
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    settings, v = learned
    db = make_engine(settings.db_url)
    engine = FunnelEngine(v, load_catalog(db))
    counts = v.manifest.quota_counts
    trace = engine.run(engine.default_request("g1_00"))
    for name, count in counts.items():
        if count > 0:
            assert trace.params.quota(name) == count
    assert "targeting" in trace.params.disabled_sources and "targeting" not in trace.sources_ran
    assert trace.params.quota("two_tower") == FunnelParams().k
    over = engine.run(engine.default_request("g1_00"), FunnelParams(quotas={"targeting": 5, "co_engagement": 2}))
    assert over.params.quota("co_engagement") == 2 and over.params.enabled("targeting")
    assert "targeting" in over.sources_ran
    db.dispose()


def test_evaluate_merges_at_the_versions_quotas_and_shows_the_defaults_beside(learned):
    from core.analysis.user_eval import evaluate_workspace

    settings, v = learned
    rep = evaluate_workspace(settings, ks=(3, 10), version="vq")
    assert {"merged_sources", "merged_default_quotas", "merged_learned"} <= set(rep.models)
    assert "the version's quotas, learned by `build-index --learn-quotas`" in rep.notes["merged_sources"]
    assert "default quotas" in rep.notes["merged_default_quotas"]
    shares = v.manifest.quotas["shares"]
    assert rep.notes["merged_sources"].startswith("union of " + ", ".join(
        f"{n} {s:.1%}" for n, s in shares.items()))


def test_build_index_prints_the_learned_quotas(learned, capsys):
    from core.cli.index_cmds import print_quotas

    _, v = learned
    print_quotas(v.manifest.quotas)
    out = capsys.readouterr().out
    q = v.manifest.quotas
    assert out.startswith("  learned quotas (hr@3 on the validation slice")
    assert f"-> {q['validation']['hr@3']:.3f}" in out and "targeting off" in out and out.rstrip().endswith("two_tower K")


def test_learn_quotas_is_refused_without_a_user_split_tower(tmp_path):
    from core.analysis.quota_learning import check_learnable

    with pytest.raises(AdLensError, match="needs a learned tower trained with `adlens train --split user`"):
        check_learnable(None, None)
    with pytest.raises(AdLensError, match="was trained on the time split"):
        check_learnable({"split": {"kind": "time"}}, "t")
    assert check_learnable({"split": {"kind": "user", "seed": 2, "test_fraction": 0.2}}, "t").seed == 2


def test_cli_learn_quotas_refuses_before_building(settings, capsys):
    from core.cli import main

    assert main(["--workspace", str(settings.workspace), "build-index", "--name", "v", "--learn-quotas"]) == 2
    assert "--learn-quotas needs a learned tower" in capsys.readouterr().err
    assert main(["--workspace", str(settings.workspace), "build-index", "--name", "v", "--learn-quotas",
                 "--tower", "nope"]) == 2
    assert "no tower named 'nope'" in capsys.readouterr().err
    assert not (settings.workspace / "versions" / "v").exists()


def test_bad_quotas_in_a_manifest_are_refused():
    from core.common.errors import ArtifactError
    from core.index.manifest import Manifest

    base = {"name": "v", "created_at": "x", "factory": "Flat", "n_ads": 1, "dims": {"text": 2, "index": 2},
            "embedding": {"fingerprint": "f"}}
    assert Manifest.from_dict(base).quota_counts is None
    assert Manifest.from_dict({**base, "quotas": {"counts": {"ease": 3}}}).quota_counts == {"ease": 3}
    with pytest.raises(ArtifactError, match="quotas must hold counts"):
        Manifest.from_dict({**base, "quotas": {"counts": {"ease": -1}}})
