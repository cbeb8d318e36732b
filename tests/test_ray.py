"""The ray serving backend and `embed --ray`, against a real local Ray cluster (`ray_local`, started
in this process) and, through the CLI, a separately started head (`ray_head_address`, from .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.common.errors import AdLensError
from core.index.backends import shard_entries
from core.index.versions import load_version
from core.store.catalog import load_catalog
from core.store.db import make_engine
from tests.funnel_data import random_workspace, sharded_workspace

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return sharded_workspace(tmp_path_factory.mktemp("ray") / "ws")


def test_ray_backend_equals_local_and_unsharded_exact(ws, ray_local):
    local, ray_v, one = (load_version(ws, "flat3"), load_version(ws, "flat3", backend="ray"),
                         load_version(ws, "flat1", backend="ray"))
    try:
        assert ray_v.backend_name == "ray" and ray_v.n_shards == 3 and one.backend.n_shards == 1
        q = local.ad_vectors[:8] * 0.9 + local.ad_vectors[8:16] * 0.1
        exact = local.exact_search(q, 60)
        stats: dict = {}
        for a, b, c, e in zip(ray_v.search(q, 60, stats=stats), local.search(q, 60), one.search(q, 60), exact):
            np.testing.assert_array_equal(a[1], e[1])
            np.testing.assert_array_equal(a[1], b[1])
            np.testing.assert_array_equal(c[1], e[1])
        assert sorted(stats) == [0, 1, 2]
        assert [i["ntotal"] for i in ray_v.backend.actor_info] == [100, 100, 100]
    finally:
        ray_v.close()
        one.close()


def test_funnel_through_ray_matches_local_and_names_shards(ws, ray_local):
    from core.funnel.engine import FunnelEngine

    catalog = load_catalog(make_engine(ws.db_url))
    local = FunnelEngine(load_version(ws, "ivf3"), catalog)
    remote = FunnelEngine(load_version(ws, "ivf3", backend="ray"), catalog)
    try:
        req = local.default_request(local.user_ids[0])
        a, b = local.run(req), remote.run(req)
        assert b.backend == "ray" and set(b.shard_timings_ms) == {0, 1, 2}
        pd.testing.assert_frame_equal(a.candidates[["ad_id", "shard", "outcome"]],
                                      b.candidates[["ad_id", "shard", "outcome"]])
    finally:
        remote.version.close()


def test_killed_shard_actor_is_restarted_and_a_dead_one_fails_naming_the_shard(ws, ray_local):
    v = load_version(ws, "flat3", backend="ray")
    try:
        q = v.ad_vectors[:3]
        want = [r[1] for r in load_version(ws, "flat3").search(q, 20)]
        os.kill(v.backend.actor_info[1]["pid"], signal.SIGKILL)  # mid-run: the next request hits it
        got = [r[1] for r in v.search(q, 20)]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        ray_local.kill(v.backend.actors[2], no_restart=True)
        t = time.monotonic()
        with pytest.raises(AdLensError, match=r"shard 2 \(shards/shard-00002.faiss, ads 200\.\.299\)"):
            v.search(q, 20)
        assert time.monotonic() - t < 60
    finally:
        v.close()


def test_tampered_shard_fails_its_checksum_in_the_actor(ws, ray_local, tmp_path):
    from core.index.ray_backend import RayBackend

    copy = tmp_path / "flat3"
    shutil.copytree(ws.versions_dir / "flat3", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    entries = shard_entries(manifest)
    target = copy / entries[0].file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(AdLensError, match="shard 0 .* fails its checksum"):
        RayBackend(copy, entries, "Flat", label="flat3-copy")


def test_embed_on_ray_equals_embed_resumes_and_reencodes_nothing(tmp_path, ray_local):
    from core.store.settings import load_settings
    from core.text.embedding_cache import embed_catalog
    from core.text.embeddings import HashingEncoder
    from core.text.ray_embed import embed_catalog_ray, ray_runner

    ws = random_workspace(tmp_path / "a", {}, n_ads=240)
    catalog = load_catalog(make_engine(ws.db_url), with_impressions=False)
    plain = embed_catalog(ws, catalog, encoder=HashingEncoder(32))
    other = load_settings(workspace=tmp_path / "b", db_url=ws.db_url)  # an empty cache

    class Interrupt(Exception):
        pass

    calls = []
    real_run = ray_runner(lambda: HashingEncoder(32), chunk=100)

    def interrupted(keys, texts, cache, enc):  # dies after the first chunk is in the cache
        orig = cache.add

        def add(*a, **kw):
            orig(*a, **kw)
            calls.append(len(a[0]))
            raise Interrupt()

        cache.add = add
        return real_run(keys, texts, cache, enc)

    with pytest.raises(Interrupt):
        embed_catalog(other, catalog, encoder=HashingEncoder(32), runner=interrupted)
    done = calls[0]
    assert 0 < done < 240
    res = embed_catalog_ray(other, catalog, encoder=HashingEncoder(32),
                            make_encoder=lambda: HashingEncoder(32))
    assert res.n_encoded == plain.n_encoded - done  # resumed: only the rest was encoded
    np.testing.assert_array_equal(res.ad_ids, plain.ad_ids)
    np.testing.assert_allclose(res.vectors, plain.vectors, atol=1e-6)
    again = embed_catalog_ray(other, catalog, encoder=HashingEncoder(32),
                              make_encoder=lambda: HashingEncoder(32))
    assert again.n_encoded == 0 and again.n_reused == len(plain.ad_ids)


def _cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ADLENS_RAY_ADDRESS", "ADLENS_HOME", "ADLENS_DB_URL")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def test_cli_joins_a_separately_started_head_by_address(ws, ray_head_address):
    base = ["--workspace", str(ws.workspace), "inspect", "--version", "flat3", "--user", "u000", "--json"]
    local = _cli(base + ["--backend", "local"], _env())
    remote = _cli(base, _env(ADLENS_RAY_ADDRESS=ray_head_address))  # the env var alone selects ray
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert a["retrieve"]["backend"] == "local" and b["retrieve"]["backend"] == "ray"
    assert [c["ad_id"] for c in a["candidates"]] == [c["ad_id"] for c in b["candidates"]]
    assert sorted(b["retrieve"]["shard_timings_ms"]) == ["0", "1", "2"]


def test_unreachable_ray_address_fails_fast_with_how_to_start_one(ws):
    t = time.monotonic()
    r = _cli(["--workspace", str(ws.workspace), "inspect", "--version", "flat3", "--user", "u000", "--backend", "ray"],
             _env(ADLENS_RAY_ADDRESS="127.0.0.1:9"), timeout=120)
    assert r.returncode == 2, r.stderr
    assert "no Ray cluster answers at 127.0.0.1:9" in r.stderr
    assert "ray start --head --node-ip-address=127.0.0.1" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - t < 60
