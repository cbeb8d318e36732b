"""The team's own early ranker (core.funnel.rankers, ranker_features, ranker_build): a tiny PyTorch
model exported to ONNX here, pCTR = sigmoid(2 * candidate.score + 0.5 * campaign.bid
+ 0.25 * [request.placement == home_feed] - 1), built into a version with build-index and checked
against that hand computation for every candidate; inspect and why-not (text and JSON) show its
inputs and output; compare A (AdLens's pCTR model) vs B (the ranker) names the ranker; the
entry-point ranker of tests/plugins end to end; every bad ranker or signature exits 2 and builds
nothing; the Why-not page says "from your ranker"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from funnel_data import fill_random_db, hashing_workspace
from scipy.special import expit

from core.cli import main
from core.store.db import make_engine

FEATURES = ["candidate.score", "campaign.bid", "request.placement=home_feed"]
PLUGINS = Path(__file__).resolve().parent / "plugins"


def _export(path: Path, n_in: int = 3, n_out: int | None = None, sigmoid: bool = True,
            input_name: str = "features", output_name: str = "pctr") -> Path:
    """sigmoid(2 x0 + 0.5 x1 + 0.25 x2 - 1) (output (batch,)), or (batch, n_out) when n_out is given."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(n_in, n_out or 1)
            with torch.no_grad():
                self.lin.weight.zero_()
                self.lin.weight[:, :3] = torch.tensor([2.0, 0.5, 0.25])[: n_in]
                self.lin.bias.fill_(-1.0)

        def forward(self, x):
            z = self.lin(x)
            z = torch.sigmoid(z) if sigmoid else z
            return z if n_out else z[:, 0]

    torch.onnx.export(Tiny().eval(), (torch.zeros(2, n_in),), str(path), input_names=[input_name],
                      output_names=[output_name], dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                      dynamo=False)
    return path


def _sig(path: Path, features=FEATURES, name: str = "features", output: str = "pctr", kind: str = "probability",
         raw: str | None = None) -> Path:
    path.write_text(raw if raw is not None else json.dumps(
        {"format": 1, "inputs": [{"name": name, "features": list(features)}],
         "output": {"name": output, "kind": kind}}))
    return path


@pytest.fixture
def ws(tmp_path, monkeypatch):
    return hashing_workspace(tmp_path / "ws", monkeypatch)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("onnx") / "ranker.onnx")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The example package with a dist-info declaring its rankers, on sys.path."""
    dist = tmp_path / "site" / "adlens_example_rules-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adlens-example-rules\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[adlens.rankers]\nbid_score = adlens_example_rules:BidScoreRanker\n"
                                           "nan = adlens_example_rules:NanRanker\n")
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


def _engine(ws: Path, name: str):
    from core.funnel.engine import open_engine
    from core.store.settings import load_settings

    return open_engine(load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}"), name)


def _bids(engine, pos: np.ndarray) -> np.ndarray:
    b = engine.fields.specs["campaign.bid"].fetch(type("E", (), {"pos": pos})())
    return np.nan_to_num(b, nan=0.0)


@pytest.mark.slow
def test_onnx_ranker_end_to_end_build_trace_inspect_why_not_compare(ws, tmp_path, model, capsys):
    from core.analysis.compare import compare_versions
    from core.funnel.explain import why_not
    from core.funnel.ranking import ecpm

    w = str(ws)
    sig = _sig(tmp_path / "sig.json")
    assert main(["--workspace", w, "build-index", "--name", "a", "--no-map"]) == 0
    assert main(["--workspace", w, "build-index", "--name", "b", "--no-map", "--ranker", str(model),
                 "--ranker-signature", str(sig)]) == 0
    out = capsys.readouterr().out
    assert "early ranker your ranker (ranker.onnx): probability from 3 features" in out
    m = json.loads((ws / "versions" / "b" / "manifest.json").read_text())
    r = m["ranker"]
    assert r["kind"] == "onnx" and r["features"] == FEATURES and r["output"] == "probability"
    assert r["file"] in m["files"] and r["signature"] in m["files"] and len(r["sha256"]) == 64
    assert r["sample"]["n_candidates"] > 0 and 0 < r["sample"]["min"] <= r["sample"]["max"] < 1

    eng = _engine(ws, "b")
    assert eng.calibration is None  # AdLens's pCTR model is not fitted when the version has its own ranker
    for placement, community in (("home_feed", None), ("community_feed", "c1")):
        req = eng.default_request("u001", placement=placement, community_id=community)
        t = eng.run(req)
        c = t.candidates
        pos = c["version_pos"].to_numpy()
        home = float(placement == "home_feed")
        want = expit(2 * c["score"].to_numpy() + 0.5 * _bids(eng, pos) + 0.25 * home - 1)
        np.testing.assert_allclose(c["pctr"].to_numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c["ranker_score"].to_numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c["ecpm"].to_numpy(), ecpm(want, eng.bid[pos], eng.bid_type[pos]), rtol=1e-5)
        assert c["ranker_inputs"].iloc[0] == pytest.approx({"candidate.score": c["score"].iloc[0],
                                                            "campaign.bid": _bids(eng, pos[:1])[0],
                                                            "request.placement=home_feed": home}, rel=1e-6)
        ranked = c[c["rank_position"].notna()].sort_values("rank_position")
        assert len(ranked) > 3 and (np.diff(ranked["ecpm"].to_numpy()) <= 1e-12).all()
        assert t.ranker["kind"] == "onnx" and t.ranker["file"] == "ranker.onnx" and t.ranker["fingerprint"] == r["fingerprint"]

    # inspect: text and JSON
    assert main(["--workspace", w, "inspect", "--version", "b", "--user", "u001"]) == 0
    out = capsys.readouterr().out
    assert "early ranker: your ranker (ranker.onnx) (onnx, output probability" in out
    assert "from your ranker (ranker.onnx); inputs: candidate.score=" in out and "pCTR model (" not in out
    assert main(["--workspace", w, "inspect", "--version", "b", "--user", "u001", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ranker"]["kind"] == "onnx" and d["ranker"]["features"] == FEATURES
    cand = d["candidates"][0]
    assert cand["ranker_score"] == pytest.approx(cand["pctr"]) and set(cand["ranker_inputs"]) == set(FEATURES)

    # why-not: a retrieved ad and one no source returned
    t = eng.run(eng.default_request("u001"))
    ad = str(t.candidates["ad_id"].iloc[-1])
    assert main(["--workspace", w, "why-not", "--version", "b", "--user", "u001", "--ad", ad]) == 0
    out = capsys.readouterr().out
    row = t.row(ad)
    assert f"pCTR {row['pctr']:.4f} from your ranker (ranker.onnx); inputs: candidate.score=" in out
    assert main(["--workspace", w, "why-not", "--version", "b", "--user", "u001", "--ad", ad, "--json"]) == 0
    rk = json.loads(capsys.readouterr().out)["ranking"]
    assert rk["ranker_score"] == pytest.approx(row["pctr"]) and rk["ranker"]["file"] == "ranker.onnx"
    assert rk["ranker_inputs"]["candidate.score"] == pytest.approx(row["score"], rel=1e-5)
    missing = sorted(set(eng.version.ad_ids) - set(t.candidates["ad_id"]))
    if missing:
        v = why_not(eng, eng.default_request("u001"), missing[0])
        p = int(eng.version.position_of([missing[0]])[0])
        want = expit(2 * v.retrieval.score + 0.5 * _bids(eng, np.array([p]))[0] - 1)
        assert v.ranking["pctr"] == pytest.approx(want, rel=1e-5) and v.ranking["hypothetical"]

    # compare A (AdLens's pCTR model) vs B (the ranker)
    rep = compare_versions(_engine(ws, "a"), eng, users=["u000", "u001", "u002"], n_clicks=0)
    assert rep.differences["early_ranker"]["a"]["kind"] == "adlens"
    assert rep.differences["early_ranker"]["b"]["file"] == "ranker.onnx"
    assert main(["--workspace", w, "compare", "a", "b", "--users", "3"]) == 0
    out = capsys.readouterr().out
    assert "early ranker: A AdLens's pCTR model" in out and "B your ranker (ranker.onnx)" in out

    # the copy is checksummed: editing it is caught on load
    (ws / "versions" / "b" / "ranker" / "signature.json").write_text(json.dumps({"format": 1}))
    assert main(["--workspace", w, "inspect", "--version", "b", "--user", "u001"]) == 2
    assert "signature.json" in capsys.readouterr().err


def test_entry_point_ranker_end_to_end(ws, plugins, capsys):
    w = str(ws)
    (ws / "funnel.toml").write_text('[ranker]\nplugin = "bid_score"\nparams = { weight = 3.0 }\n')
    assert main(["--workspace", w, "build-index", "--name", "p", "--no-map", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["ranker"]
    assert r["kind"] == "plugin" and r["plugin"] == "bid_score" and r["params"] == {"weight": 3.0}
    assert r["output"] == "score" and r["entry_point"] == "adlens_example_rules:BidScoreRanker"
    eng = _engine(ws, "p")
    t = eng.run(eng.default_request("u002"))
    c = t.candidates
    want = 3.0 * c["score"].to_numpy() + _bids(eng, c["version_pos"].to_numpy())
    np.testing.assert_allclose(c["ecpm"].to_numpy(), want, rtol=1e-5, atol=1e-6)
    assert c["pctr"].isna().all()  # a "score" ranker has no pCTR
    ranked = c[c["rank_position"].notna()].sort_values("rank_position")
    assert (np.diff(ranked["ecpm"].to_numpy()) <= 1e-12).all()
    assert main(["--workspace", w, "inspect", "--version", "p", "--user", "u002"]) == 0
    assert "from your ranker (bid_score; ranked by it directly); inputs: candidate.score=" in capsys.readouterr().out
    ad = str(ranked["ad_id"].iloc[0])
    assert main(["--workspace", w, "why-not", "--version", "p", "--user", "u002", "--ad", ad]) == 0
    assert "from your ranker (bid_score" in capsys.readouterr().out
    # --ranker NAME on the command line wins over the [ranker] table
    assert main(["--workspace", w, "build-index", "--name", "p2", "--no-map", "--ranker", "bid_score", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ranker"]["params"] == {}


BAD = [
    ("raw", "{not json", "not valid JSON"),
    ("sig", {"features": ["candidate.score", "campaign.nope", "request.placement=home_feed"]},
     "unknown feature 'campaign.nope'"),
    ("sig", {"features": ["candidate.score", "campaign.bid", "request.placement"]}, "is a text field"),
    ("sig", {"name": "x"}, "the signature's inputs do not match the model's: model has ['features']"),
    ("sig", {"features": ["candidate.score", "campaign.bid"]}, "has shape ['batch', 3] but the signature gives it 2 feature(s)"),
    ("sig", {"output": "nope"}, "the model has no output 'nope'"),
    ("model", {"n_out": 2}, "a ranker's output is (batch,) or (batch, 1)"),
    ("model", {"sigmoid": False}, "output kind \"probability\" but values range over"),
    ("sig", {"kind": "odds"}, "\"kind\": \"probability\" or \"score\""),
    ("nosig", {}, "needs --ranker-signature"),
    ("plugin", "nan", "outputs are not finite"),
    ("plugin", "nope", "no ranker 'nope' in entry-point group adlens.rankers; installed: bid_score, nan"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, arg, part", BAD)
def test_bad_ranker_exits_2_and_builds_nothing(ws, tmp_path, model, plugins, capsys, case, arg, part):
    path = model
    sig = tmp_path / "sig.json"
    if case == "raw":
        _sig(sig, raw=arg)
    elif case == "sig":
        _sig(sig, **arg)
    elif case == "model":
        path = _export(tmp_path / "bad.onnx", **arg)
        _sig(sig)
    flags = ["--ranker", arg] if case == "plugin" else ["--ranker", str(path)] + \
        ([] if case == "nosig" else ["--ranker-signature", str(sig)])
    assert main(["--workspace", str(ws), "build-index", "--name", "bad", "--no-map", *flags]) == 2
    err = capsys.readouterr().err
    assert part in err and "Traceback" not in err, err
    assert not (ws / "versions" / "bad").exists()
    assert not [p for p in (ws / "versions").glob("*")] if (ws / "versions").exists() else True
    assert main(["--workspace", str(ws), "versions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_funnel_toml_ranker_table_paths_are_relative_to_the_file(ws, tmp_path, model, capsys):
    folder = tmp_path / "defn"
    folder.mkdir()
    shutil.copyfile(model, folder / "mine.onnx")
    _sig(folder / "mine.json")
    (folder / "funnel.toml").write_text('[ranker]\nonnx = "mine.onnx"\nsignature = "mine.json"\n')
    assert main(["--workspace", str(ws), "build-index", "--name", "t", "--no-map", "--funnel",
                 str(folder / "funnel.toml"), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["ranker"]["source"] == "mine.onnx" and m["funnel"]["source"] == "funnel.toml"
    (folder / "funnel.toml").write_text('[ranker]\nonnx = "mine.onnx"\n')
    assert main(["--workspace", str(ws), "build-index", "--name", "t2", "--no-map", "--funnel",
                 str(folder / "funnel.toml")]) == 2
    assert "[ranker] needs onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_why_not_and_compare_pages_show_your_ranker(ws, tmp_path, model, use_workspace):
    from streamlit.testing.v1 import AppTest
    from streamlit.util import calc_hash

    from core.common.escape import md

    assert main(["--workspace", str(ws), "build-index", "--name", "b", "--no-map", "--ranker", str(model),
                 "--ranker-signature", str(_sig(tmp_path / "sig.json"))]) == 0
    assert main(["--workspace", str(ws), "build-index", "--name", "a", "--no-map"]) == 0
    eng = _engine(ws, "b")
    ad = str(eng.run(eng.default_request("u001")).candidates["ad_id"].iloc[0])
    use_workspace(ws)
    from tests.test_dashboard import APP

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"version": "b", "user": "u001", "ad": ad})
    at.run()  # Inspect: the candidate table shows the ranker's output and inputs
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "ranker_inputs" in d.value.columns)
    assert table["ranker_inputs"].str.startswith("candidate.score=").all() and table["ranker_score"].between(0, 1).all()
    assert any(e.label.startswith("Early ranker: your ranker") for e in at.expander)
    at._page_hash = calc_hash("why-not")  # st.navigation pages are callables (see test_dashboard._goto)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="ad").value == ad
    texts = " ".join(t.value for t in at.text)
    assert "from your ranker (ranker.onnx); inputs: candidate.score=" in texts, texts
    # Compare: A (AdLens's pCTR model) vs B (the ranker) names the difference
    at._page_hash = calc_hash("compare")
    at.run()
    at.selectbox(key="version").set_value("a").run()
    at.selectbox(key="version_b").set_value("b").run()
    at.button_group(key="cmp_view").set_value("Aggregate").run()
    at.number_input(key="cmp_users").set_value(10).run()
    at.button(key="cmp_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    caption = " ".join(c.value for c in at.caption)
    assert f"The versions differ in: {md('early_ranker')}" in caption, caption
    assert f"B {md('your ranker (ranker.onnx)')}" in caption and "A " + md("AdLens's pCTR model") in caption


# ---- the feature vocabulary, gathered (no ONNX: an EarlyRanker subclass passed to the engine) -----------
class _Recorder:
    """A probability ranker over `features` returning a fixed function of its inputs (and keeping them)."""

    def __new__(cls, features, fn):
        from core.funnel.rankers import EarlyRanker

        class R(EarlyRanker):
            kind, output, fingerprint = "test", "probability", "t" * 64

            def __init__(self):
                self.features = tuple(features)

            def score(self, X):
                return fn(X)

        return R()


@pytest.fixture(scope="module")
def cat_version(tmp_path_factory):
    """A real version with every candidate source (a stub version has two_tower only)."""
    from funnel_data import FakeTextEncoder

    from core.index.versions import build_version
    from core.sources.registry import sources_builder
    from core.store.catalog import load_catalog
    from core.store.settings import load_settings

    ws = tmp_path_factory.mktemp("rk") / "ws"
    settings = load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}")
    db = make_engine(settings.db_url)
    fill_random_db(db, n_ads=150, n_users=12)
    v = build_version(settings, "v", "Flat", text_encoder=FakeTextEncoder(), engine=db,
                      extra_builders=(sources_builder({}),))
    cat = load_catalog(db)
    db.dispose()
    return cat, v


def test_every_kind_of_feature_is_gathered_as_the_trace_and_catalog_say(cat_version):
    from core.funnel.engine import FunnelEngine

    cat, v = cat_version
    srcs = ("two_tower", "co_engagement", "popular_in_context", "targeting")
    feats = ["candidate.score", "candidate.campaign_impressions_24h", "campaign.bid", "campaign.exists",
             "user.age_min", "request.placement=community_feed", "ad.policy_status=approved",
             *[f"candidate.{k}_{s}" for s in srcs for k in ("found", "rank", "score")]]
    eng = FunnelEngine(v, cat, ranker=_Recorder(feats, lambda X: np.full(len(X), 0.5)))
    assert tuple(eng.sources)[:4] == srcs
    req = eng.default_request("u003", community_id="c1", placement="community_feed")
    c = eng.run(req).candidates
    X = pd.DataFrame(list(c["ranker_inputs"]))
    assert list(X.columns) == feats
    np.testing.assert_allclose(X["candidate.score"], c["score"], rtol=1e-6)
    pos = c["version_pos"].to_numpy()
    np.testing.assert_allclose(X["campaign.bid"], _bids(eng, pos), rtol=1e-6)
    assert (X["campaign.exists"] == eng.facts.has_campaign[pos].astype(float)).all()
    assert (X["ad.policy_status=approved"] == (eng.facts.policy_status[pos] == "approved")).all()
    assert (X["request.placement=community_feed"] == 1.0).all()
    age = cat.users.set_index("user_id").loc["u003", "age_bucket"]
    want_age = {"18-24": 18, "25-34": 25, "35-44": 35, "45-54": 45}.get(age, 0.0)  # unknown: missing -> 0
    assert (X["user.age_min"] == want_age).all()
    for s in srcs:
        found = c[f"rank_{s}"].notna().to_numpy()
        assert (X[f"candidate.found_{s}"] == found).all()
        np.testing.assert_array_equal(X[f"candidate.rank_{s}"], c[f"rank_{s}"].fillna(0).astype(float))
        np.testing.assert_allclose(X[f"candidate.score_{s}"], c[f"score_{s}"].fillna(0.0), rtol=1e-6)
    assert X["candidate.found_two_tower"].sum() > 0 and X[[f"candidate.found_{s}" for s in srcs[1:]]].to_numpy().sum() > 0
    imps = eng.frequency.counts("u003", eng.request_context(req).ts_ns, eng.facts.campaign_code[pos])
    np.testing.assert_array_equal(X["candidate.campaign_impressions_24h"], imps)


def test_ranking_stage_rules_read_the_rankers_pctr(cat_version):
    from core.funnel.definition import parse_definition
    from core.funnel.engine import FunnelEngine

    cat, v = cat_version
    ranker = _Recorder(["candidate.score"], lambda X: np.where(np.arange(len(X)) % 2 == 0, 0.9, 0.1))
    eng = FunnelEngine(v, cat, ranker=ranker, funnel_definition=parse_definition(
        "[[rule]]\ncode = 'LOW_PCTR'\nstage = 'ranking'\nexpr = 'candidate.pctr < 0.5'\n"))
    c = eng.run(eng.default_request("u001")).candidates
    eligible = c["failed_reasons"].map(lambda r: not [x for x in r if x != "LOW_PCTR"])
    low = c["pctr"] < 0.5
    assert (eligible & low).any() and (eligible & ~low).any()
    assert (c.loc[eligible & low, "primary_reason"] == "LOW_PCTR").all()
    assert (c.loc[eligible & low, "outcome"] == "ranked_out").all()
    assert (c.loc[~(eligible & low), "primary_reason"] != "LOW_PCTR").all()


@pytest.mark.parametrize("features, part", [
    (["campaign.nope"], "unknown feature 'campaign.nope'"),
    (["request.placement"], "is a text field: use it one-hot as 'request.placement=VALUE'"),
    (["campaign.bid=2"], "only a text field takes =value"),
    (["campaign.target_countries"], "is a list field"),
    (["candidate.pctr"], "the ranker's own output"),
    (["candidate.found_nosuch"], "unknown feature 'candidate.found_nosuch'"),
    (["candidate.score", "candidate.score"], "listed twice"),
])
def test_bad_feature_names_list_the_features_there_are(cat_version, features, part):
    from core.common.errors import ValidationError
    from core.funnel.engine import FunnelEngine

    cat, v = cat_version
    with pytest.raises(ValidationError) as err:
        FunnelEngine(v, cat, ranker=_Recorder(features, lambda X: np.zeros(len(X))))
    msg = str(err.value)
    assert part in msg and "the features there are: candidate.score, candidate.found_two_tower" in msg
    assert "request.placement=<value>" in msg and "campaign.bid" in msg
