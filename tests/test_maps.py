"""UMAP maps: every ad gets coordinates, placement lands an ad's own vector on it, alignment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.index.maps import align_to, compute_layout, place, stratified_sample


def _clustered(n: int, d: int = 32, k: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    labels = rng.integers(0, k, n)
    x = centers[labels] + 0.3 * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def test_stratified_sample_keeps_every_stratum():
    strata = np.array(["a"] * 90 + ["b"] * 9 + ["c"])
    pos = stratified_sample(strata, 20, seed=1)
    assert len(pos) <= 22 and len(set(strata[pos])) == 3
    assert (np.diff(pos) > 0).all()
    assert len(stratified_sample(strata, 1000)) == 100


def test_place_weights_the_most_similar_neighbour():
    xy = np.array([[[0.0, 0.0], [10.0, 10.0]]])
    assert np.allclose(place(np.array([[1.0, 0.2]]), xy), [[0.0, 0.0]], atol=1e-3)
    assert np.allclose(place(np.array([[0.5, 0.5]]), xy), [[5.0, 5.0]])


@pytest.mark.slow
def test_layout_covers_every_ad_and_places_own_vectors_nearby():
    x, labels = _clustered(400)
    ad_ids = np.array([f"ad_{i:04d}" for i in range(len(x))])
    users = x[:5] + 0.0
    # max_fit below n: the rest of the ads are placed by interpolation.
    lay = compute_layout(ad_ids, x, labels.astype(str), np.array(["u1"] * 5),
                         np.array(["2026-01-01"] * 5), users, max_fit=250, seed=0)
    assert len(lay.ads) == 400 and lay.ads[["x", "y"]].notna().all().all()
    assert lay.ads["fitted"].sum() <= 252 and lay.meta["n_placed"] > 0
    spread = np.ptp(lay.ads[["x", "y"]].to_numpy(), axis=0).max()
    # A user vector equal to an ad's vector lands close to that ad (relative to the map's spread).
    d = np.linalg.norm(lay.users[["x", "y"]].to_numpy() - lay.ads[["x", "y"]].to_numpy()[:5], axis=1)
    assert (d < 0.05 * spread).all(), d
    # Clusters stay together: mean distance within a cluster is well below the overall mean.
    xy = lay.ads[["x", "y"]].to_numpy()
    within = np.mean([np.linalg.norm(xy[labels == c] - xy[labels == c].mean(0), axis=1).mean() for c in range(6)])
    overall = np.linalg.norm(xy - xy.mean(0), axis=1).mean()
    assert within < 0.6 * overall


def test_align_recovers_a_rotation_and_shift():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"ad_id": [f"a{i}" for i in range(50)], "x": rng.normal(size=50), "y": rng.normal(size=50)})
    theta = 1.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = ref.copy()
    moved[["x", "y"]] = ref[["x", "y"]].to_numpy() @ rot * 3.0 + [5.0, -2.0]
    back = align_to(ref, moved)
    assert np.allclose(back[["x", "y"]].to_numpy(), ref[["x", "y"]].to_numpy(), atol=1e-4)


def test_a_map_fitted_on_the_same_ad_vectors_is_found_and_reused(tmp_path):
    """Two versions with identical ad vectors share one UMAP fit (no refit); other vectors, or a
    map file changed after its build, are not reused."""
    from core.index.maps import ADS_FILE, find_fitted_ads, fit_key
    from core.store.artifacts import sha256_file

    x, labels = _clustered(60)
    ad_ids = np.array([f"ad_{i:04d}" for i in range(len(x))])
    strata = labels.astype(str)
    key = fit_key(ad_ids, x, strata, seed=0)
    fitted = pd.DataFrame({"ad_id": ad_ids, "x": (10.0 * labels).astype(np.float32),  # one x per cluster
                           "y": np.zeros(60, np.float32), "fitted": True})
    folder = tmp_path / "exact"
    folder.mkdir()
    fitted.to_parquet(folder / ADS_FILE, index=False)
    (folder / "manifest.json").write_text(json.dumps({"map": {"fit_key": key},
                                                      "files": {ADS_FILE: sha256_file(folder / ADS_FILE)}}))
    found = find_fitted_ads(tmp_path, key)
    assert found is not None and found["x"].tolist() == (10.0 * labels).tolist()
    assert find_fitted_ads(tmp_path, fit_key(ad_ids, x * 0.5, strata, seed=0)) is None
    assert fit_key(ad_ids, x, strata, seed=1) != key
    # reused: the ads keep the fitted coordinates, a user equal to ad 7 lands in its cluster
    lay = compute_layout(ad_ids, x, strata, np.array(["u1"]), np.array(["2026-01-01"]), x[7:8],
                         seed=0, fitted_ads=found.iloc[::-1])
    assert lay.meta["fit_reused"] and lay.meta["fit_key"] == key
    assert lay.ads["x"].tolist() == (10.0 * labels).tolist()
    assert abs(float(lay.users["x"].iloc[0]) - 10.0 * labels[7]) < 1.0
    (folder / ADS_FILE).write_bytes((folder / ADS_FILE).read_bytes() + b"tampered")
    assert find_fitted_ads(tmp_path, key) is None
