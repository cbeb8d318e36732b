"""Sharded index versions, local backend: the merged top-k of Flat shards equals the unsharded
(and exact) search; IVF shards share one quantizer and reach the unsharded recall; shard files
are checksummed; the Trace names each candidate's shard and why-not names the ad's shard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.common.errors import ArtifactError
from core.index.ann import AnnIndex, exact_search, recall_at
from core.index.shards import ShardedIndex, build_shards, merge_topk, shard_ranges
from core.index.versions import load_version
from tests.funnel_data import sharded_workspace


def _data(n=3000, d=32, nq=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    x = centres[rng.integers(0, 30, n)] + 0.7 * rng.normal(size=(n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    q = x[rng.choice(n, nq, replace=False)] + 0.3 * rng.normal(size=(nq, d)).astype(np.float32)
    return x, (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_shard_ranges_cover_every_position_once():
    r = shard_ranges(10, 3)
    assert r == [(0, 3), (3, 4), (7, 3)]
    assert sum(c for _, c in shard_ranges(1001, 7)) == 1001
    with pytest.raises(ValueError, match="at least one ad"):
        shard_ranges(2, 3)


@pytest.mark.parametrize("n_shards", [2, 3, 5])
def test_flat_shards_equal_unsharded_and_exact_search(n_shards):
    x, q = _data()
    sharded = build_shards(x, "Flat", n_shards)
    whole = AnnIndex.build(x, "Flat")
    exact = exact_search(x, q, 100)
    for got, ref, ex in zip(sharded.search(q, 100), whole.search(q, 100), exact):
        np.testing.assert_array_equal(got[1], ex[1])  # ties are broken by lower position in both
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_allclose(got[0], ex[0], rtol=1e-5, atol=1e-6)
    assert sharded.ntotal == len(x) and sharded.n_shards == n_shards
    stats: dict = {}
    sharded.search(q[0], 10, stats=stats)
    assert sorted(stats) == list(range(n_shards)) and all(v >= 0 for v in stats.values())


def test_merge_keeps_the_global_top_k_from_every_shard():
    parts = [[(np.array([0.9, 0.1], np.float32), np.array([1, 0]))],
             [(np.array([0.8, 0.7], np.float32), np.array([0, 1]))]]
    (scores, pos), = merge_topk(parts, [0, 10], 3)
    np.testing.assert_array_equal(pos, [1, 10, 11])
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7])


def test_heap_and_numpy_merges_agree_on_batches():
    from core.index.shards import HEAP_MIN_QUERIES, _merge_heap

    x, q = _data(nq=HEAP_MIN_QUERIES + 3)
    sharded = build_shards(x, "Flat", 3)
    parts = [s.search(q, 80) for s in sharded.shards]
    heap = _merge_heap(parts, sharded.starts, 80, len(q))
    small = merge_topk([p[:5] for p in parts], sharded.starts, 80)
    for a, b in zip(heap[:5], small):
        np.testing.assert_array_equal(a[1], b[1])
    for a, e in zip(merge_topk(parts, sharded.starts, 80), exact_search(x, q, 80)):  # the heap path
        np.testing.assert_array_equal(a[1], e[1])


def test_ivf_shards_share_the_quantizer_and_reach_unsharded_recall():
    x, q = _data(n=4000)
    sharded = build_shards(x, "IVF32,Flat", 4, seed=0)
    whole = AnnIndex.build(x, "IVF32,Flat", seed=0)
    fps = sharded.quantizer_fingerprints()
    assert len(set(fps)) == 1 and fps[0] is not None  # one shared coarse quantizer
    exact = exact_search(x, q, 200)
    for nprobe in (2, 8):
        r_sh = recall_at(sharded.search(q, 200, {"nprobe": nprobe}), exact, 200)
        r_un = recall_at(whole.search(q, 200, {"nprobe": nprobe}), exact, 200)
        # the same lists probed in every shard: the union is the unsharded probe set
        assert r_sh == pytest.approx(r_un, abs=1e-9)
    # global list assignments: each position sits in the list its shard put it in
    assign = sharded.list_assignments()
    assert len(assign) == len(x) and (assign >= 0).all()
    np.testing.assert_array_equal(assign[:1000], sharded.shards[0].list_assignments())


def test_ivfpq_refined_shards_search_with_refine_params():
    x, q = _data(n=4000)
    sharded = build_shards(x, "IVF32,PQ8,RFlat", 2, seed=0)
    exact = exact_search(x, q, 50)
    assert recall_at(sharded.search(q, 50, {"nprobe": 32, "k_factor": 8}), exact, 50) > 0.9


@pytest.fixture(scope="module")
def sharded_ws(tmp_path_factory):
    return sharded_workspace(tmp_path_factory.mktemp("shards") / "ws")


def test_sharded_version_lists_checksummed_shards_and_serves_like_unsharded(sharded_ws):
    v3, v1 = load_version(sharded_ws, "flat3"), load_version(sharded_ws, "flat1")
    m = v3.manifest
    assert m["shards"]["n"] == 3 and v3.n_shards == 3 and v1.n_shards == 1
    assert [e["count"] for e in m["shards"]["entries"]] == [100, 100, 100]
    for e in m["shards"]["entries"]:
        assert m["files"][e["file"]] == e["sha256"] and (v3.path / e["file"]).stat().st_size == e["bytes"]
    assert not (v3.path / "index.faiss").exists()
    assert m["index_bytes"] == sum(e["bytes"] for e in m["shards"]["entries"])
    q = v1.ad_vectors[:5] + 0.01
    for a, b in zip(v3.search(q, 50), v1.search(q, 50)):
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(v3.shard_of([0, 99, 100, 299]), [0, 0, 1, 2])


def test_tampered_shard_fails_its_checksum(sharded_ws, tmp_path):
    import shutil

    src = sharded_ws.versions_dir / "flat3"
    copy = tmp_path / "flat3"
    shutil.copytree(src, copy)
    shard = copy / json.loads((copy / "manifest.json").read_text())["shards"]["entries"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    from core.index.versions import _load_dir

    with pytest.raises(ArtifactError, match="shard-00001.faiss"):
        _load_dir(copy, "flat3")
    from core.index.backends import shard_entries
    from core.index.shards import load_shard

    entry = shard_entries(json.loads((copy / "manifest.json").read_text()))[1]
    with pytest.raises(ArtifactError, match="shard 1 fails its checksum"):
        load_shard(copy, entry, "Flat")


def test_trace_records_shards_and_why_not_names_the_ad_shard(sharded_ws):
    from core.funnel.engine import open_engine
    from core.funnel.explain import why_not

    eng = open_engine(sharded_ws, "ivf3")
    user = eng.user_ids[0]
    tr = eng.run(eng.default_request(user))
    assert set(tr.shard_timings_ms) == {0, 1, 2} and tr.backend == "local"
    np.testing.assert_array_equal(tr.candidates["shard"], tr.candidates["version_pos"] // 100)
    d = tr.to_dict()
    assert d["retrieve"]["backend"] == "local" and set(d["retrieve"]["shard_timings_ms"]) == {"0", "1", "2"}
    ad = str(eng.version.ad_ids[250])
    ex = why_not(eng, eng.default_request(user), ad)
    rv = ex.retrieval
    assert rv.shard == 2 and rv.n_shards == 3
    assert rv.ivf_list == int(eng.version.index.list_assignments()[250])
    assert f"shard 2 of 3 in IVF list {rv.ivf_list}" in rv.detail


def test_sharded_index_is_what_a_sharded_version_loads(sharded_ws):
    v = load_version(sharded_ws, "ivf3")
    assert isinstance(v.index, ShardedIndex) and v.index.kind == "ivf" and v.index.nlist == 8


def test_health_reports_shard_sizes_balance_latency_and_share(sharded_ws):
    from core.analysis.health import health
    from core.store.catalog import load_catalog
    from core.store.db import make_engine

    v = load_version(sharded_ws, "ivf3")
    rep = health(v, load_catalog(make_engine(sharded_ws.db_url)), n_requests=20, k=50)
    sh = rep.shards
    assert sh["backend"] == "local" and sh["n"] == 3 and sh["balance"] == pytest.approx(1.0)
    assert [r["ads"] for r in sh["rows"]] == [100, 100, 100]
    assert all(r["p50_ms"] >= 0 for r in sh["rows"])
    assert sum(r["result_share"] for r in sh["rows"]) == pytest.approx(1.0)
    assert rep.to_dict()["shards"]["n"] == 3


def test_cli_builds_a_sharded_version_and_reports_its_shards(sharded_ws, capsys):
    from core.cli import main

    ws = str(sharded_ws.workspace)
    assert main(["--workspace", ws, "build-index", "--name", "cli-sh", "--factory", "Flat", "--shards", "0",
                 "--no-map"]) == 2
    assert "--shards must be a positive integer" in capsys.readouterr().err
    assert main(["--workspace", ws, "health", "--version", "ivf3", "--requests", "20", "--k", "20"]) == 0
    out = capsys.readouterr().out
    assert "shards: 3 (local backend), balance (largest/mean) 1.00" in out and "shard 2: 100 ads" in out
    assert main(["--workspace", ws, "why-not", "--version", "ivf3", "--user", "u000", "--ad", "ad0250"]) == 0
    assert "held by shard 2 of 3 in IVF list" in capsys.readouterr().out
