"""Bring your own model: imported ad vectors, precomputed request vectors, an ONNX user tower and
an entry-point plugin, built into versions and used by every downstream consumer.

The catalog is `fill_random_db` (300 ads, 30 users, logged impressions); the baseline version is
AdLens-built over FakeTextEncoder. Imported ad vectors are seeded 64-dimensional clusters. Every
retrieval claim is checked against the exact-search oracle; the ONNX encoder's query vectors are
checked against the PyTorch model it was exported from, on features computed by hand here.
"""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.common.errors import AdLensError, ValidationError
from core.data.request import Request
from core.funnel.engine import FunnelEngine
from core.index.ann import exact_search, similarity
from core.index.versions import build_version, list_versions, load_version
from core.store.catalog import load_catalog
from core.store.db import make_engine
from core.store.settings import load_settings
from core.vectors.ad_vectors import import_ad_vectors
from core.vectors.query_side import QuerySpec
from core.vectors.request_vectors import import_request_vectors
from core.vectors.store import existing

from funnel_data import NOW, FakeTextEncoder, fill_random_db

DIM = 64
N_ADS = 300


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory):
    """A workspace with the random catalog and one AdLens-built baseline version "base"."""
    ws = tmp_path_factory.mktemp("byom") / "ws"
    settings = load_settings(workspace=ws, db_url=f"sqlite:///{ws / 'adlens.db'}")
    db = make_engine(settings.db_url)
    fill_random_db(db, n_ads=N_ADS)
    build_version(settings, "base", "Flat", text_encoder=FakeTextEncoder(), engine=db)
    db.dispose()
    return settings


@pytest.fixture
def ws(base_ws, tmp_path):
    """A private copy of the base workspace (tests register versions and imports)."""
    import shutil

    dst = tmp_path / "ws"
    shutil.copytree(base_ws.workspace, dst)
    return load_settings(workspace=dst, db_url=f"sqlite:///{dst / 'adlens.db'}")  # a workspace is self-contained


def ad_ids(n: int = N_ADS) -> list[str]:
    return [f"ad{i:04d}" for i in range(n)]


def ad_matrix(n: int = N_ADS, dim: int = DIM, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, dim))
    return (centres[np.arange(n) % 6] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def write_ads(path: Path, ids, vectors, fixed: bool = False) -> Path:
    vectors = np.asarray(vectors, np.float32)
    typ = pa.list_(pa.float32(), vectors.shape[1]) if fixed else pa.list_(pa.float32())
    pq.write_table(pa.table({"ad_id": pa.array(list(ids)), "vector": pa.array(list(vectors), type=typ)}), path)
    return path


def write_requests(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    frame["vector"] = [np.asarray(v, np.float32) for v in frame["vector"]]
    frame.to_parquet(path, index=False)
    return path


def imported(ws, tmp_path, name="prod", metric="ip", **kw) -> np.ndarray:
    x = ad_matrix()
    import_ad_vectors(ws, write_ads(tmp_path / f"{name}.parquet", ad_ids(), x), name, metric=metric, **kw)
    return x


def request(user="u000", community=None, placement="home_feed", device="ios", ts=NOW) -> Request:
    return Request(user, community, placement, device, "US", ts)


def engine_for(ws, name: str) -> FunnelEngine:
    return FunnelEngine(load_version(ws, name), load_catalog(make_engine(ws.db_url)))


# ---- imported ad vectors ---------------------------------------------------------------------
def test_imported_64d_ads_through_the_funnel_against_the_oracle(ws, tmp_path):
    x = imported(ws, tmp_path)
    v = build_version(ws, "prod-ivf", "IVF8,Flat", ad_vectors="prod", search_params={"nprobe": 8})
    assert v.manifest["metric"] == "ip" and v.manifest["dims"] == {"text": DIM, "index": DIM}
    assert v.manifest["ad_vectors"]["source"]["sha256"] and v.manifest["ad_vectors"]["n_used"] == N_ADS
    assert v.manifest["embedding"]["model"] == "imported:prod"
    np.testing.assert_array_equal(v.ad_vectors, x)  # ip: indexed exactly as imported
    eng = engine_for(ws, "prod-ivf")
    trace = eng.run(request())
    q = trace.query
    # the default query side is the history mean of the user's clicked ads' *imported* vectors
    hist = eng.features.click_histories(["u000"], [NOW], 50)[0]
    expect = x[hist].mean(0)
    np.testing.assert_allclose(q, expect / np.linalg.norm(expect), rtol=1e-5, atol=1e-6)
    exact_scores, exact_pos = exact_search(x, q, 500)[0]
    # nprobe = nlist: the IVF result is the exact one, scores are raw inner products
    assert trace.candidates["ad_id"].tolist() == [ad_ids()[p] for p in exact_pos]
    np.testing.assert_allclose(trace.candidates["score"], exact_scores, rtol=1e-5)
    assert (trace.candidates["exact_rank"].astype(int) == trace.candidates["ann_rank"]).all()
    assert trace.stage_counts and len(trace.slate) > 0


def test_l2_metric_scores_are_negative_distances_and_match_the_oracle(ws, tmp_path):
    x = imported(ws, tmp_path, name="prod-l2", metric="l2")
    v = build_version(ws, "l2", "HNSW16", ad_vectors="prod-l2", search_params={"efSearch": 512})
    assert v.index.metric == "l2" and v.manifest["metric"] == "l2"
    eng = engine_for(ws, "l2")
    trace = eng.run(request())
    d2 = ((x - trace.query[None, :]) ** 2).sum(1)
    top = np.argsort(d2, kind="stable")[:20]
    assert trace.candidates["ad_id"].head(20).tolist() == [ad_ids()[p] for p in top]
    np.testing.assert_allclose(trace.candidates["score"].head(20), -d2[top], rtol=1e-4)
    np.testing.assert_allclose(eng.exact_scores(trace.query), -d2, rtol=1e-4)
    assert v.manifest["recall"]["recall@10"] >= 0.95  # measured against the l2 oracle


@pytest.mark.parametrize("factory,params", [("Flat", {}), ("IVF16,Flat", {"nprobe": 16}), ("HNSW16", {"efSearch": 256})])
def test_l2_ann_index_against_the_exact_oracle(factory, params):
    from core.index.ann import AnnIndex, recall_at

    x = ad_matrix(2000, 32, seed=1)
    q = ad_matrix(50, 32, seed=2)
    index = AnnIndex.build(x, factory, metric="l2")
    assert index.metric == "l2"
    exact = exact_search(x, q, 20, "l2")
    brute = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)  # independent of `similarity`
    for (scores, pos), row in zip(exact, brute):
        assert pos.tolist() == np.argsort(-row, kind="stable")[:20].tolist()
        np.testing.assert_allclose(scores, row[pos], rtol=1e-4)
    approx = index.search(q, 20, params)
    assert recall_at(approx, exact, 20, vectors=x, queries=q, metric="l2") >= 0.95
    np.testing.assert_allclose(approx[0][0], brute[0][approx[0][1]], rtol=1e-4)  # scores: -squared distance
    with pytest.raises(ValueError, match="unknown metric 'cos'"):
        AnnIndex.build(x, "Flat", metric="cos")


def test_cosine_metric_normalises_ads_and_queries(ws, tmp_path):
    x = imported(ws, tmp_path, name="prod-cos", metric="cosine")
    v = build_version(ws, "cos", "Flat", ad_vectors="prod-cos")
    np.testing.assert_allclose(np.linalg.norm(v.ad_vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(v.ad_vectors, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-5)
    assert v.index.metric == "ip"


def test_partial_coverage_needs_allow_partial_and_builds_on_the_intersection(ws, tmp_path):
    ids = ad_ids()[:250] + ["ghost1", "ghost2"]
    x = ad_matrix(252)
    path = write_ads(tmp_path / "partial.parquet", ids, x)
    with pytest.raises(ValidationError) as exc:
        import_ad_vectors(ws, path, "part")
    msg = str(exc.value)
    assert "2 ad id(s) unknown to the catalog" in msg and "'ghost1'" in msg
    assert "50 catalog ad(s) have no vector" in msg and "--allow-partial" in msg
    assert existing(ws) == []  # nothing registered
    m = import_ad_vectors(ws, path, "part", allow_partial=True)
    assert m["coverage"]["n_common"] == 250
    v = build_version(ws, "part-v", "Flat", ad_vectors="part")
    assert v.manifest["n_ads"] == 250 and set(v.ad_ids) == set(ad_ids()[:250])
    trace = engine_for(ws, "part-v").run(request())
    assert not trace.candidates["ad_id"].str.startswith("ghost").any()


def test_npy_with_ids_file_and_idempotent_reimport(ws, tmp_path):
    x = ad_matrix()
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "ids.txt").write_text("\n".join(ad_ids()))
    m1 = import_ad_vectors(ws, tmp_path / "v.npy", "npy", ids_path=tmp_path / "ids.txt")
    assert not m1["unchanged"] and m1["dim"] == DIM
    m2 = import_ad_vectors(ws, tmp_path / "v.npy", "npy", ids_path=tmp_path / "ids.txt")
    assert m2["unchanged"] and m2["files"] == m1["files"]
    np.save(tmp_path / "v.npy", x * 2)
    with pytest.raises(AdLensError, match="already exist.*immutable"):
        import_ad_vectors(ws, tmp_path / "v.npy", "npy", ids_path=tmp_path / "ids.txt")


# ---- bad input: a clear error, nothing registered ---------------------------------------------
def _bad_ads(tmp_path, case):
    ids, x = ad_ids(), ad_matrix()
    p = tmp_path / f"{case}.parquet"
    if case == "nan":
        x[17, 3] = np.nan
    elif case == "inf":
        x[5, 0] = np.inf
    elif case == "dup":
        ids[9] = ids[8]
    elif case == "ragged":
        rows = [list(v) for v in x]
        rows[4] = rows[4][:63]
        pq.write_table(pa.table({"ad_id": ids, "vector": pa.array(rows, type=pa.list_(pa.float32()))}), p)
        return p
    return write_ads(p, ids, x)


@pytest.mark.parametrize("case,message", [
    ("nan", r"row 17 \('ad0017'\) has NaN or infinite"),
    ("inf", r"row 5 \('ad0005'\) has NaN or infinite"),
    ("dup", r"ad_id 'ad0008' appears more than once"),
    ("ragged", r"row 4 has a vector of 63 values but row 0 has 64"),
])
def test_bad_ad_vector_files(ws, tmp_path, case, message):
    with pytest.raises(AdLensError, match=message):
        import_ad_vectors(ws, _bad_ads(tmp_path, case), "bad")
    assert existing(ws) == []


def test_npy_needing_pickle_unknown_metric_and_missing_ids(ws, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[1.0, 2.0], None], dtype=object), allow_pickle=True)
    (tmp_path / "ids.txt").write_text("ad0000\nad0001")
    with pytest.raises(AdLensError, match="needs pickle"):
        import_ad_vectors(ws, tmp_path / "obj.npy", "obj", ids_path=tmp_path / "ids.txt")
    np.save(tmp_path / "ok.npy", ad_matrix())
    with pytest.raises(AdLensError, match="needs its ad ids: pass --ids"):
        import_ad_vectors(ws, tmp_path / "ok.npy", "ok")
    with pytest.raises(AdLensError, match="unknown metric 'dot'; valid: ip, cosine, l2"):
        import_ad_vectors(ws, tmp_path / "ok.npy", "ok", metric="dot", ids_path=tmp_path / "ids.txt")
    with pytest.raises(AdLensError, match="2 ids for 300 matrix rows"):
        import_ad_vectors(ws, tmp_path / "ok.npy", "ok", ids_path=tmp_path / "ids.txt")
    assert existing(ws) == []


def test_request_vectors_without_usable_rows_or_with_other_dimension(ws, tmp_path):
    path = write_requests(tmp_path / "r.parquet", [{"user_id": None, "vector": np.ones(DIM)}])
    with pytest.raises(AdLensError, match="no usable rows.*1 without a user_id"):
        import_request_vectors(ws, path, "r")
    assert existing(ws) == []
    imported(ws, tmp_path)
    import_request_vectors(ws, write_requests(tmp_path / "r32.parquet", [{"user_id": "u000", "vector": np.ones(32)}]),
                           "r32")
    with pytest.raises(AdLensError, match="gives 32-dimensional vectors but the imported ad vectors 'prod' are 64"):
        build_version(ws, "mismatch", "Flat", ad_vectors="prod", query=QuerySpec(request_vectors="r32"))
    assert "mismatch" not in {v["name"] for v in list_versions(ws)}
    assert not (ws.versions_dir / "mismatch").exists()


def test_cli_reports_bad_input_without_traceback(ws, tmp_path, capsys):
    from core.cli import main

    path = _bad_ads(tmp_path, "nan")
    assert main(["--workspace", str(ws.workspace), "import-vectors", "ads", str(path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nan.parquet" in err and "Traceback" not in err
    good = write_ads(tmp_path / "good.parquet", ad_ids(), ad_matrix())
    assert main(["--workspace", str(ws.workspace), "import-vectors", "ads", str(good), "--name", "g",
                 "--metric", "cosine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "cosine"
    assert main(["--workspace", str(ws.workspace), "build-index", "--name", "g-v", "--ad-vectors", "g",
                 "--signature", "sig.json", "--no-map"]) == 2
    assert "--signature describes an ONNX model" in capsys.readouterr().err
    req = write_requests(tmp_path / "req.parquet", [{"user_id": "u000", "placement": "home_feed",
                                                    "vector": ad_matrix()[0]}])
    assert main(["--workspace", str(ws.workspace), "import-vectors", "requests", str(req), "--name", "rq"]) == 0
    assert "imported 1 requests vectors of dimension 64" in capsys.readouterr().out
    assert main(["--workspace", str(ws.workspace), "build-index", "--name", "g-v", "--ad-vectors", "g",
                 "--request-vectors", "rq", "--factory", "Flat", "--no-map"]) == 0
    assert "Flat (cosine) over 300 ads, dim 64" in capsys.readouterr().out
    assert main(["--workspace", str(ws.workspace), "inspect", "--version", "g-v", "--user", "u000",
                 "--placement", "home_feed", "--community", "none"]) == 0
    assert "query vector: request_vectors: row 0 of the imported file (placement=home_feed)" in capsys.readouterr().out
    assert main(["--workspace", str(ws.workspace), "versions", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["g-v"]["query"] == "request vectors rq" and listed["g-v"]["metric"] == "cosine"


# ---- precomputed request vectors: context matching --------------------------------------------
def test_request_vectors_context_matching_most_specific_then_latest(ws, tmp_path):
    x = imported(ws, tmp_path)
    t0, t1, t2 = NOW - timedelta(days=3), NOW - timedelta(days=2), NOW - timedelta(days=1)
    vec = {k: x[i] * 1.0 for k, i in {"any": 1, "c1": 2, "c1feed": 3, "later": 4, "u1": 5}.items()}
    rows = [
        {"user_id": "u000", "ts": t0, "community": None, "placement": None, "vector": vec["any"]},
        {"user_id": "u000", "ts": t1, "community": "c1", "placement": None, "vector": vec["c1"]},
        {"user_id": "u000", "ts": t2, "community": "c1", "placement": "community_feed", "vector": vec["c1feed"]},
        {"user_id": "u000", "ts": NOW + timedelta(days=5), "community": None, "placement": None, "vector": vec["later"]},
        {"user_id": "u001", "ts": None, "community": None, "placement": None, "vector": vec["u1"]},
        {"user_id": None, "ts": None, "community": None, "placement": None, "vector": vec["u1"]},  # skipped
    ]
    m = import_request_vectors(ws, write_requests(tmp_path / "req.parquet", rows), "req")
    assert m["n"] == 5 and m["report"]["skipped_no_user"] == 1
    v = build_version(ws, "req-v", "Flat", ad_vectors="prod", query=QuerySpec(request_vectors="req"))
    assert v.manifest["query_side"]["source"] == "request_vectors"
    eng = engine_for(ws, "req-v")

    def used(req):
        trace = eng.run(req)
        return trace.query, trace.query_source

    cases = [  # (request, expected vector key, expected source row)
        (request(community="c1", placement="community_feed"), "c1feed", 2),
        (request(community="c1", placement="community_feed", ts=t2 - timedelta(hours=1)), "c1", 1),
        (request(community="c1", placement="conversation"), "c1", 1),
        (request(community="c2", placement="community_feed"), "any", 0),
        (request(), "any", 0),
        (request(user="u001", ts=NOW - timedelta(days=30)), "u1", 4),
    ]
    for req, key, row in cases:
        q, src = used(req)
        np.testing.assert_array_equal(q, vec[key])
        assert src["matched"] and src["row"] == row, (req, src)
    q, src = used(request(ts=t0 - timedelta(hours=1)))  # before any row of u000
    assert not src["matched"] and "no request-vectors row" in src["detail"]
    np.testing.assert_allclose(q, np.stack([r["vector"] for r in rows[:5]]).mean(0), rtol=1e-5)
    _, src = used(request(user="u029"))
    assert not src["matched"]
    assert eng.run(request()).to_dict()["query_source"]["row"] == 0


# ---- an ONNX user tower -----------------------------------------------------------------------
def _tiny_tower(users: list[str], dim: int = DIM, d_in: int = DIM):
    import torch
    from torch import nn

    class TinyTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.user = nn.Embedding(len(users) + 1, 8)
            self.country = nn.Embedding(16, 4)
            self.out = nn.Linear(8 + 4 + 1 + d_in, dim)

        def forward(self, user, country, hour, history_mean):
            h = (hour.float() / 24.0).unsqueeze(1)
            return self.out(torch.cat([self.user(user), self.country(country), h, history_mean], dim=1))

    torch.manual_seed(0)
    return TinyTower().eval()


def _export(model, path: Path, d_in: int = DIM, names=("user", "country", "hour", "history_mean")) -> Path:
    import torch

    args = (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
            torch.zeros(2, d_in))
    torch.onnx.export(model, args, str(path), input_names=list(names), output_names=["query"],
                      dynamic_axes={n: {0: "batch"} for n in [*names, "query"]}, dynamo=False)
    return path


def _signature(users, path: Path, dim: int = DIM, **overrides) -> Path:
    sig = {"inputs": {"user": {"feature": "user_id", "vocab": users},
                      "country": {"feature": "country", "hash_buckets": 16},
                      "hour": {"feature": "hour"},
                      "history_mean": {"feature": "click_history_mean", "max_len": 20}},
           "output": {"name": "query", "dim": dim}}
    sig.update(overrides)
    path.write_text(json.dumps(sig))
    return path


@pytest.fixture
def onnx_parts(ws, tmp_path):
    users = [f"u{i:03d}" for i in range(30)]
    model = _tiny_tower(users)
    return users, model, _export(model, tmp_path / "tower.onnx"), _signature(users, tmp_path / "sig.json")


def test_onnx_tower_end_to_end_inspect_why_not_compare(ws, tmp_path, onnx_parts):
    import torch

    from core.analysis.compare import compare_versions
    from core.funnel.explain import why_not
    from core.tower.onnx_encoder import _bucket

    users, model, onnx_path, sig = onnx_parts
    x = imported(ws, tmp_path)
    v = build_version(ws, "prod-onnx", "IVF8,Flat", ad_vectors="prod",
                      query=QuerySpec(str(onnx_path), sig))
    qs = v.manifest["query_side"]
    assert qs["source"] == "onnx" and len(qs["sha256"]) == 64 and qs["signature"]["output"]["dim"] == DIM
    assert (v.path / "encoder" / "model.onnx").is_file() and "encoder/model.onnx" in v.manifest["files"]

    eng = engine_for(ws, "prod-onnx")
    req = request(user="u003", ts=NOW - timedelta(hours=5))
    trace = eng.run(req)
    # the oracle: the PyTorch model on features computed here by hand
    hist = eng.features.click_histories(["u003"], [req.ts], 20)[0]
    mean = x[hist].mean(0) if len(hist) else np.zeros(DIM, np.float32)
    country = eng.catalog.users.set_index("user_id").loc["u003", "country"]
    with torch.no_grad():
        want = model(torch.tensor([users.index("u003") + 1]), torch.tensor([_bucket(country, 16)]),
                     torch.tensor([req.ts.hour]), torch.from_numpy(mean[None, :].astype(np.float32)))[0].numpy()
    np.testing.assert_allclose(trace.query, want, rtol=1e-4, atol=1e-5)
    top = np.argsort(-similarity(x, want)[0], kind="stable")[:10]
    assert trace.candidates["ad_id"].head(10).tolist() == [ad_ids()[p] for p in top]

    ad = trace.candidates["ad_id"].iloc[-1]
    w = why_not(eng, req, ad)
    assert w.ad_id == ad and w.retrieval.ann_returned and w.retrieval.exact_rank >= 1
    report = compare_versions(engine_for(ws, "base"), eng, n_users=5)  # production vs AdLens-built baseline
    assert len(report.per_request) == 5 and report.version_b == "prod-onnx"
    assert report.recall_vs_exact["b"] >= 0.95  # tuned params, measured against the ip oracle


def test_onnx_signature_mismatches_are_refused(ws, tmp_path, onnx_parts):
    users, _, onnx_path, _ = onnx_parts
    imported(ws, tmp_path)
    wrong = _signature(users, tmp_path / "wrong.json", inputs={
        "user_id": {"feature": "user_id", "vocab": users}, "country": {"feature": "country", "hash_buckets": 16},
        "hour": {"feature": "hour"}, "history_mean": {"feature": "click_history_mean", "max_len": 20}})
    with pytest.raises(AdLensError, match=r"do not match the model's.*missing from the signature: \['user'\]"
                                          r".*not in the model: \['user_id'\]"):
        build_version(ws, "w1", "Flat", ad_vectors="prod", query=QuerySpec(str(onnx_path), wrong))
    declared = _signature(users, tmp_path / "d32.json", output={"name": "query", "dim": 32})
    with pytest.raises(AdLensError, match="output 'query' has dimension 64 but the signature declares 32"):
        build_version(ws, "w2", "Flat", ad_vectors="prod", query=QuerySpec(str(onnx_path), declared))
    small = _export(_tiny_tower(users, dim=32), tmp_path / "t32.onnx")
    with pytest.raises(AdLensError, match="gives 32-dimensional vectors but the imported ad vectors 'prod' are 64"):
        build_version(ws, "w3", "Flat", ad_vectors="prod",
                      query=QuerySpec(str(small), _signature(users, tmp_path / "s32.json", dim=32)))
    wide = _export(_tiny_tower(users, d_in=48), tmp_path / "in48.onnx", d_in=48)
    with pytest.raises(AdLensError, match=r"input 'history_mean' takes 48 values per request .* but click_history_mean has 64 values"):
        build_version(ws, "w5", "Flat", ad_vectors="prod",
                      query=QuerySpec(str(wide), _signature(users, tmp_path / "s48.json")))
    bad_feature = _signature(users, tmp_path / "bf.json", inputs={"user": {"feature": "favourite_colour"}})
    with pytest.raises(AdLensError, match="maps to feature 'favourite_colour'; valid: user_id"):
        build_version(ws, "w4", "Flat", ad_vectors="prod", query=QuerySpec(str(onnx_path), bad_feature))
    assert not any((ws.versions_dir / n).exists() for n in ("w1", "w2", "w3", "w4", "w5"))
    assert {v["name"] for v in list_versions(ws)} == {"base"}


def test_onnx_feeds_click_ids_vocab_hash_and_scalar_shapes(ws, tmp_path):
    """The features an ONNX model receives, checked field by field against the click log."""
    import torch
    from torch import nn

    from core.tower.onnx_encoder import OnnxQueryEncoder, _bucket

    class ClickTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.ads = nn.Embedding(N_ADS + 1, DIM)
            self.place = nn.Embedding(8, DIM)

        def forward(self, clicks, placement, hour):
            return self.ads(clicks).mean(1) + self.place(placement) + hour

    args = (torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, dtype=torch.long), torch.zeros(2, 1))
    path = tmp_path / "clicks.onnx"
    torch.onnx.export(ClickTower().eval(), args, str(path), input_names=["clicks", "placement", "hour"],
                      output_names=["q"], dynamic_axes={n: {0: "b"} for n in ("clicks", "placement", "hour", "q")},
                      dynamo=False)
    sig = {"inputs": {"clicks": {"feature": "click_history_ids", "max_len": 5, "vocab": ad_ids()},
                      "placement": {"feature": "placement", "hash_buckets": 8},
                      "hour": {"feature": "hour"}},
           "output": {"name": "q", "dim": DIM}}
    enc = OnnxQueryEncoder(path, sig)
    eng = engine_for(ws, "base")
    reqs = pd.DataFrame([request(user="u004", placement="community_feed", community="c1").__dict__,
                         request(user="nobody", ts=NOW - timedelta(hours=7)).__dict__])
    feeds = enc.feeds(reqs, eng.features)
    hist = eng.features.click_histories(["u004"], [NOW], 5)[0]
    want = [ad_ids().index(a) + 1 for a in eng.features.ad_ids[hist]]
    assert 0 < len(want) <= 5, "u004 must have clicks before NOW, or the padding check proves nothing"
    assert feeds["clicks"].shape == (2, 5) and feeds["clicks"].dtype == np.int64
    assert feeds["clicks"][0].tolist() == [0] * (5 - len(want)) + want  # left-padded, oldest first
    assert feeds["clicks"][1].tolist() == [0] * 5  # unknown user: no clicks
    assert feeds["placement"].tolist() == [_bucket("community_feed", 8), _bucket("home_feed", 8)]
    assert feeds["hour"].shape == (2, 1) and feeds["hour"].dtype == np.float32
    assert feeds["hour"][:, 0].tolist() == [NOW.hour, (NOW - timedelta(hours=7)).hour]
    assert enc.encode_requests(reqs, eng.features).shape == (2, DIM)


# ---- an entry-point plugin --------------------------------------------------------------------
PLUGIN = '''
import numpy as np
from core.tower.query_encoder import QueryEncoder, l2_normalize


class UserHashEncoder(QueryEncoder):
    """A seeded random vector per user id: the simplest possible team-specific query side."""

    kind = "user_hash"

    def __init__(self, dim: int = 64, seed: int = 0):
        self.dim, self.seed = int(dim), int(seed)

    def encode_requests(self, requests, features):
        import zlib
        return l2_normalize(np.stack([np.random.default_rng([self.seed, zlib.crc32(u.encode())]).normal(size=self.dim)
                                      for u in requests["user_id"]]) if len(requests) else np.zeros((0, self.dim)))

    def config(self):
        return {"kind": self.kind, "dim": self.dim, "seed": self.seed}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Install a plugin the way a package would: a module plus a dist-info with entry_points.txt."""
    root = tmp_path / "site"
    (root / "adlens_test_plugin-0.1.dist-info").mkdir(parents=True)
    (root / "adlens_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (root / "adlens_test_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: adlens-test-plugin\nVersion: 0.1\n")
    (root / "adlens_test_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[adlens.query_encoders]\nuser_hash = adlens_test_plugin:UserHashEncoder\n")
    monkeypatch.syspath_prepend(str(root))
    return "user_hash"


def test_entry_point_plugin_builds_saves_and_loads(ws, tmp_path, plugin):
    from core.tower.registry import plugin_encoders

    assert plugin in plugin_encoders()
    x = imported(ws, tmp_path)
    v = build_version(ws, "plug", "Flat", ad_vectors="prod",
                      query=QuerySpec(plugin, encoder_config={"dim": DIM, "seed": 3}))
    assert v.manifest["query_side"] == {"source": "plugin", "name": plugin,
                                        "config": {"kind": plugin, "dim": DIM, "seed": 3}}
    eng = engine_for(ws, "plug")  # loaded back through the entry point by its saved kind
    assert type(eng.version.encoder).__name__ == "UserHashEncoder" and eng.version.encoder.seed == 3
    trace = eng.run(request())
    top = np.argsort(-similarity(x, trace.query)[0], kind="stable")[:5]
    assert trace.candidates["ad_id"].head(5).tolist() == [ad_ids()[p] for p in top]
    with pytest.raises(AdLensError, match="no query encoder plugin 'nope'.*installed: user_hash"):
        build_version(ws, "plug2", "Flat", ad_vectors="prod", query=QuerySpec("nope"))


# ---- downstream: health, map, audience, dashboard ---------------------------------------------
@pytest.mark.slow
def test_imported_version_health_map_audience_and_dashboard(ws, tmp_path, use_workspace):
    from streamlit.testing.v1 import AppTest

    from core.analysis.health import health
    from core.funnel.audience import audience
    from core.index.maps import load_layout

    imported(ws, tmp_path, metric="l2")
    v = build_version(ws, "prod-map", "IVF8,Flat", ad_vectors="prod", with_map=True)
    assert v.manifest.get("map") and "map_ads.parquet" in v.manifest.files
    eng = engine_for(ws, "prod-map")
    rep = health(v, eng.catalog, n_requests=50, k=50)
    assert rep.curve["recall_at_k"].max() == pytest.approx(1.0)  # nprobe = nlist is exact
    assert audience(eng, "ad0001", n_users=10).n_users == 10
    assert len(load_layout(v.path).ads) == N_ADS

    users = [f"u{i:03d}" for i in range(30)]
    rows = [{"user_id": u, "vector": ad_matrix(30)[i]} for i, u in enumerate(users)]  # wildcard rows: always match
    import_request_vectors(ws, write_requests(tmp_path / "req.parquet", rows), "req")
    build_version(ws, "prod-req", "Flat", ad_vectors="prod", query=QuerySpec(request_vectors="req"))

    from tests.test_dashboard import APP

    use_workspace(ws.workspace)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.selectbox(key="version").set_value("prod-req").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    shown = " ".join(t.value for t in at.text)
    assert "query vector: request_vectors: row " in shown and "of the imported file" in shown
    at.selectbox(key="version").set_value("prod-map").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Inspect" and not at.error
    from test_dashboard import _goto

    for page in ("why-not", "map", "health", "compare"):
        at = _goto(at, page).run()
        assert not at.exception and not at.error, (page, [e.value for e in at.exception], [e.value for e in at.error])
