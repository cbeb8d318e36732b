"""`adlens train --tune` (core/tower/tune.py): the search, the validation split it scores on, and a
toy whose right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_tower import planted_catalog, write_catalog

import core.tower.train as train_mod
import core.tower.tune as tune_mod
from core.store.db import make_engine
from core.tower.split import make_split, validation_split
from core.tower.tune import tune_tower, validation_catalog


@pytest.fixture(scope="module")
def planted():
    return planted_catalog(n_ads=120, n_users=90, per_user=40)


def _score(p: dict) -> float:
    """A known validation surface: id embeddings, logQ 2 and the whole history help; epochs peak at 4."""
    bonus = {1: 0.0, 2: 0.01, 3: 0.02, 4: 0.03, 6: 0.025, 8: 0.02, 12: 0.0}[p["epochs"]]
    return 0.5 + 0.1 * p["id_embeddings"] + 0.05 * (p["logq"] == 2.0) - 0.01 * (p["history_limit"] == 50) + bonus


def test_search_tries_the_grid_then_climbs_epochs_and_stops_at_the_first_step_down(planted, monkeypatch):
    cat, ids, vecs = planted
    trained = []

    def fake_fit(catalog, ad_ids, ad_text_vectors, split, **kw):
        trained.append((len(catalog.impressions), split.to_dict()))
        return kw, {}, []

    class FakeScorer:
        def __init__(self, *a, **k):
            self.metric, self.baselines, self.size = "hr@100", {"most_popular": 0.4}, {"n_pairs": 1}

        def __call__(self, encoder):
            return _score(encoder)

    monkeypatch.setattr(tune_mod, "_Scorer", FakeScorer)
    split = make_split(cat.impressions, "user", seed=5)
    rep = tune_tower(cat, ids, vecs, split, {"batch_size": 64}, fit=fake_fit)
    assert rep.chosen == {"epochs": 4, "id_embeddings": True, "history_limit": 0, "logq": 2.0}
    assert rep.chosen_score == pytest.approx(_score(rep.chosen))
    assert [t.step for t in rep.tries] == ["grid"] * 8 + ["epochs"] * 3  # 2 -> 3 -> 4 -> 6 (worse): stop
    assert [t.params["epochs"] for t in rep.tries[8:]] == [3, 4, 6]
    assert max(rep.tries, key=lambda t: t.score).params == rep.chosen
    # every try trained on the fitting side of the validation split, never on the test side
    inner, vsplit = validation_catalog(cat, split)
    assert vsplit == validation_split(split) and {t[1]["seed"] for t in trained} == {6}
    assert {t[0] for t in trained} == {len(inner.impressions)} and len(inner.impressions) < len(cat.impressions)
    assert not split.test_side(inner.impressions).any()


def test_search_budget_is_bounded(planted, monkeypatch):
    cat, ids, vecs = planted

    class Rising:
        metric, baselines, size = "hr@100", {"most_popular": 0.0}, {}

        def __init__(self, *a, **k):
            pass

        def __call__(self, encoder):  # more epochs always better: only the budget stops the climb
            return encoder["epochs"] + 0.001 * encoder["id_embeddings"]

    monkeypatch.setattr(tune_mod, "_Scorer", Rising)
    rep = tune_tower(cat, ids, vecs, make_split(cat.impressions, "user"), {}, max_tries=10,
                     fit=lambda *a, **kw: (kw, {}, []))
    assert len(rep.tries) == 10 and rep.chosen["epochs"] == 4  # 8 grid tries, then 3 and 4


def test_validation_of_a_time_split_is_the_training_side_before_its_own_cutoff(planted):
    cat, *_ = planted
    split = make_split(cat.impressions, "time")
    inner, vsplit = validation_catalog(cat, split)
    assert vsplit.kind == "time" and vsplit.cutoff < split.cutoff
    assert (inner.impressions["ts"] < split.cutoff).all()


@pytest.mark.slow
def test_tune_picks_id_embeddings_where_only_they_can_learn_and_trains_the_choice(settings):
    """Known answer: with the text vectors shuffled (no topic left in them), only per-ad id vectors
    learn which ads a cohort clicks, so validation must choose id embeddings; the saved tower is
    trained with the chosen settings and records every try."""
    cat, ids, vecs = planted_catalog()
    noise = vecs[np.random.default_rng(1).permutation(len(vecs))]
    engine = make_engine(settings.db_url)
    write_catalog(engine, cat)
    res = train_mod.train_tower(settings, "tuned", split="user", batch_size=128, lr=1e-2, logq=1.0, engine=engine,
                                ad_ids=ids, ad_text_vectors=noise, tune=True,
                                tune_options={"grid": {"id_embeddings": (False, True), "history_limit": (0,)},
                                              "epochs": (4, 8, 15), "start_epochs": 8, "k": 30})
    t = res.config["tuning"]
    assert {tr["params"]["id_embeddings"] for tr in t["tries"]} == {False, True}
    by_id = {tr["params"]["id_embeddings"]: tr["score"] for tr in t["tries"] if tr["params"]["epochs"] == 8}
    assert by_id[True] > 1.3 * by_id[False], by_id
    assert t["chosen"]["id_embeddings"] is True and t["chosen_score"] == max(tr["score"] for tr in t["tries"])
    assert t["baselines"]["most_popular"] < t["chosen_score"]
    assert res.config["id_embeddings"] is True and res.config["epochs"] == t["chosen"]["epochs"]
    saved = json.loads((res.path / "metrics.json").read_text())["training"]
    assert saved["tuning"]["chosen"] == t["chosen"]
    assert json.loads((res.path / "config.json").read_text())["id_embeddings"] is True


def test_cli_tune_prints_the_tries_and_the_choice(capsys):
    from core.cli.tower_cmds import print_tuning

    print_tuning({"metric": "hr@100", "validation": {"split": {"kind": "user", "seed": 1}, "n_pairs": 10, "n_users": 3},
                  "baselines": {"most_popular": 0.25},
                  "tries": [{"params": {"epochs": 2, "id_embeddings": False, "history_limit": 50, "logq": 1.0},
                             "score": 0.2, "seconds": 1.0, "step": "grid"},
                            {"params": {"epochs": 2, "id_embeddings": True, "history_limit": 0, "logq": 2.0},
                             "score": 0.3, "seconds": 1.0, "step": "grid"}],
                  "chosen": {"epochs": 2, "id_embeddings": True, "history_limit": 0, "logq": 2.0},
                  "chosen_score": 0.3, "seconds": 2.0})
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "most-popular there 0.250" in lines[0] and "pairs 10" in lines[0]
    assert lines[3].endswith("<- chosen") and not lines[2].endswith("<- chosen")
    assert "chosen: epochs 2, id_embeddings True, history_limit 0, logq 2.0 (validation hr@100 0.300)" in out


@pytest.mark.slow
def test_default_tower_beats_most_popular_on_the_demo_under_the_user_protocol(demo_workspace, tmp_path):
    """Issue #23: a new user's `adlens train` (the defaults) must beat most-popular under the user
    protocol; on the small demo as on MovieLens (README, 'Offline evaluation on public data')."""
    from conftest import copy_workspace

    settings = copy_workspace(demo_workspace.path, tmp_path / "ws")
    res = train_mod.train_tower(settings, "user-defaults", split="user")
    models = res.report.models
    assert models["tower"]["hr@100"] > models["most_popular"]["hr@100"], models
    assert models["tower"]["recall@100"] > models["most_popular"]["recall@100"], models
