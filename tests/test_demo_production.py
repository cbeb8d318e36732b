"""The demo's production funnel (core/demo/production.py): its files are readable and reusable, the
ranker computes what its weights say, parity of the default version against the production logs
names exactly the three planted differences, and a version built with the production funnel
definition reproduces the logged slates. On a copy of the shared demo workspace (conftest.py: built
by `adlens demo`, so the production logs are already imported)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import main
from core.demo.production import (
    LOGS_DIR,
    PACING_SHARE,
    PRODUCTION_DIR,
    PRODUCTION_QUOTA,
    PRODUCTION_REQUESTS,
    PRODUCTION_VERSION,
    QUOTA_SOURCE,
    RANKER_BIAS,
    RANKER_WEIGHTS,
    build_production_logs,
    ranker_model_bytes,
)
from core.funnel.definition import load_definition
from core.funnel.engine import open_engine
from core.funnel.params import SOURCE_QUOTAS
from core.store.db import make_engine
from core.traces.logged import count_logged_requests
from core.traces.parity import run_parity
from tests.conftest import copy_workspace

PLANTED = {("rule", "PACING_THROTTLE"), ("ranker", "early ranker"), ("quota", QUOTA_SOURCE)}


@pytest.fixture(scope="module")
def ws(demo_workspace, tmp_path_factory):
    settings = copy_workspace(demo_workspace.path, tmp_path_factory.mktemp("production") / "ws")
    db = make_engine(settings.db_url)
    yield settings, db
    db.dispose()


def test_the_files_are_readable_and_the_ranker_computes_its_weights(ws):
    settings, db = ws
    folder = settings.workspace / PRODUCTION_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["funnel.toml", LOGS_DIR, "ranker.json", "ranker.onnx"]
    defn = load_definition(folder / "funnel.toml")
    assert defn.custom_codes == ("PACING_THROTTLE",) and dict(defn.quotas) == {QUOTA_SOURCE: PRODUCTION_QUOTA}
    assert PRODUCTION_QUOTA != SOURCE_QUOTAS[QUOTA_SOURCE]
    assert defn.ranker == {"onnx": "ranker.onnx", "signature": "ranker.json"}
    sig = json.loads((folder / "ranker.json").read_text())
    assert sig["inputs"][0]["features"] == list(RANKER_WEIGHTS) and sig["output"]["kind"] == "probability"
    assert (folder / "ranker.onnx").read_bytes() == ranker_model_bytes()  # deterministic
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "ranker.onnx"), providers=["CPUExecutionProvider"])
    x = np.array([[0.5, 1, 0, 1], [0.1, 0, 1, 0]], np.float32)
    want = 1 / (1 + np.exp(-(x @ np.array(list(RANKER_WEIGHTS.values())) + RANKER_BIAS)))
    np.testing.assert_allclose(sess.run(None, {"features": x})[0].ravel(), want, rtol=1e-5)
    assert count_logged_requests(db) == PRODUCTION_REQUESTS


def test_rerunning_the_step_keeps_the_logs(ws):
    settings, db = ws
    rep = build_production_logs(settings, db)
    assert rep["written"] is False and rep["requests"] == PRODUCTION_REQUESTS
    assert count_logged_requests(db) == PRODUCTION_REQUESTS


def test_parity_names_exactly_the_three_planted_differences(ws):
    settings, db = ws
    engine = open_engine(settings, PRODUCTION_VERSION)
    rep = run_parity(settings, db, engine)
    print(rep.verdict)
    found = {(d.kind, d.name) for d in rep.disagreements}
    assert found == PLANTED, [d.label() for d in rep.disagreements]
    assert {(d.kind, d.name) for d in rep.disagreements[:3]} == PLANTED
    by = {d.kind: d for d in rep.disagreements}
    assert all(d.slates_moved > 0 and d.examples for d in rep.disagreements)
    pacing = by["rule"]
    assert not pacing.modelled and pacing.logged_only == pacing.count > 0 and pacing.replay_only == 0
    ranker = by["ranker"]
    assert ranker.spearman < 0.99 and ranker.requests > 0
    quota = by["quota"]
    assert quota.replay_quota == SOURCE_QUOTAS[QUOTA_SOURCE] < quota.logged_max_rank <= PRODUCTION_QUOTA
    assert rep.unknown_reasons == ["PACING_THROTTLE"] and rep.unknown_sources == []
    assert rep.slates_equal_rate < 0.5
    for d in rep.disagreements:
        assert d.label() in rep.verdict
    assert "logged reason PACING_THROTTLE, which AdLens does not model" in rep.verdict
    # the planted rule fires on a meaningful share of the logged candidates
    logged = sum(rep.confusion.get("PACING_THROTTLE", {}).values())
    assert logged > 0.05 * rep.n_logged_candidates
    assert PACING_SHARE < 1


@pytest.mark.slow
def test_a_version_built_with_the_production_funnel_reproduces_the_log(ws, capsys):
    """`build-index --funnel <ws>/production/funnel.toml` with the demo version's factory and tower:
    parity >= 0.95 of slates (measured: 1.0)."""
    settings, db = ws
    m = json.loads((settings.versions_dir / PRODUCTION_VERSION / "manifest.json").read_text())
    ease = m["sources"]["built"]["ease"]["params"]["max_ads"]
    w = ["--workspace", str(settings.workspace)]
    assert main([*w, "build-index", "--name", "prod", "--factory", m["factory"], "--tower", "tower",
                 "--ease-max-ads", str(ease), "--no-map",
                 "--funnel", str(settings.workspace / PRODUCTION_DIR / "funnel.toml")]) == 0
    out = capsys.readouterr().out
    assert f"quotas {QUOTA_SOURCE} {PRODUCTION_QUOTA}" in out and "own codes PACING_THROTTLE" in out
    rep = run_parity(settings, db, open_engine(settings, "prod"))
    print(rep.verdict)
    assert rep.slates_equal_rate >= 0.95, rep.verdict
    assert not any((d.kind, d.name) in PLANTED for d in rep.disagreements)


def test_a_quota_for_a_source_the_version_lacks_fails_the_build(ws, tmp_path, capsys):
    settings, db = ws
    toml = tmp_path / "funnel.toml"
    toml.write_text(f"[quotas]\n{QUOTA_SOURCE} = 50\n")
    w = ["--workspace", str(settings.workspace)]
    code = main([*w, "build-index", "--name", "nosrc", "--factory", "Flat", "--tower", "tower", "--no-sources",
                 "--no-map", "--funnel", str(toml)])
    err = capsys.readouterr().err
    assert code == 2 and f"[quotas] names source(s) {QUOTA_SOURCE} that version nosrc does not have" in err
    assert "its sources: two_tower" in err and "Traceback" not in err
    assert not (settings.versions_dir / "nosrc").exists()
