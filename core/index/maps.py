"""UMAP maps of a version's embedding space, computed once at build time (never on a page load).

Method (what keeps it tractable on 2 cores):
1. PCA of the index-space ad vectors to `pca_dims` (50) dimensions.
2. A stratified sample (by vertical) of at most `max_fit` ads is fitted with UMAP, using exact
   cosine kNN from FAISS as UMAP's precomputed neighbours (no NN-descent).
3. Every other ad, and every user query vector, is *placed*: the similarity-weighted mean of the
   coordinates of its nearest fitted ads (`place`). No pickled UMAP model is kept; placing a
   new query needs only the ad coordinates and a nearest-neighbour search, so it is fast.

The fit depends only on the ad vectors (and their strata and the fit parameters), so a version
whose ad vectors are identical to an existing version's, e.g. an IVF version of an exact
version's tower, reuses that version's fitted ad coordinates (checksummed; `fit_key` in the map
metadata) and only places its own users: the UMAP fit (single-threaded with a seed, the
slowest part of a build) runs once per distinct ad space.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from core.common.errors import AdLensError
from core.common.progress import Progress, report
from core.store.artifacts import sha256_file
from core.tower.query_encoder import l2_normalize

MAP_FIT_MAX = 20_000
"""Above this many ads, UMAP is fitted on a stratified sample and the rest are placed."""
ADS_FILE = "map_ads.parquet"
USERS_FILE = "map_users.parquet"
PLACE_K = 10
PLACE_TEMPERATURE = 0.05
LARGE_FIT_EPOCHS, LARGE_FIT = 200, 10_000
"""UMAP's own epochs for large data, from LARGE_FIT fitted ads up (UMAP uses 500 up to and
including 10,000 points: 2.5x the optimisation of the demo's 10k map; measured on the demo's
ad vectors, 10-NN preserved 0.345 at 200 epochs vs 0.378 at 500, for ~35 % less fit time)."""
FIT_KEY_VERSION = 1  # bump when the fit changes: older maps are then not reused


@dataclass
class MapLayout:
    """2-D coordinates: `ads` (ad_id, x, y, fitted) and `users` (user_id, ts, x, y)."""

    ads: pd.DataFrame
    users: pd.DataFrame
    meta: dict = field(default_factory=dict)


def stratified_sample(strata: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a sample of size ≤ n, proportional per stratum, ≥ 1 per stratum."""
    total = len(strata)
    if total <= n:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    codes, inverse = np.unique(np.asarray(strata, dtype=str), return_inverse=True)
    picked: list[np.ndarray] = []
    for c in range(len(codes)):
        members = np.flatnonzero(inverse == c)
        take = max(1, int(round(n * len(members) / total)))
        picked.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(picked))


def place(neighbour_scores: np.ndarray, neighbour_xy: np.ndarray) -> np.ndarray:
    """Similarity-weighted mean of neighbour coordinates.

    neighbour_scores: (n, k) similarities; neighbour_xy: (n, k, 2). Weights are a softmax of the
    similarities at a low temperature, so a vector identical to an ad lands on that ad."""
    s = np.asarray(neighbour_scores, dtype=np.float64)
    w = np.exp((s - s.max(axis=1, keepdims=True)) / PLACE_TEMPERATURE)
    w /= w.sum(axis=1, keepdims=True)
    return (w[:, :, None] * neighbour_xy).sum(axis=1).astype(np.float32)


def _knn(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(base)))


def _umap_fit(fit_x: np.ndarray, n_neighbors: int, seed: int) -> tuple[np.ndarray, int]:
    """UMAP of the fitted sample over FAISS's exact kNN graph; returns (xy, neighbours used)."""
    import umap  # heavy import (numba): only when a map is built

    nn = min(n_neighbors, len(fit_x) - 1)
    sims, idx = _knn(fit_x, fit_x, nn)
    dists = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims)).astype(np.float32)
    reducer = umap.UMAP(
        n_neighbors=nn, metric="cosine", random_state=seed, precomputed_knn=(idx, dists, None),
        n_epochs=LARGE_FIT_EPOCHS if len(fit_x) >= LARGE_FIT else None, init="spectral" if len(fit_x) > nn + 2 else "random",
    )
    with warnings.catch_warnings():
        # Expected with a seed (single-threaded) and precomputed neighbours (no transform()).
        warnings.filterwarnings("ignore", message=".*(n_jobs|knn_search_index).*", category=UserWarning)
        return reducer.fit_transform(fit_x).astype(np.float32), nn


def _place_rest(reduced: np.ndarray, fit_pos: np.ndarray, fit_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ad's xy: the fitted sample's own, the rest placed by their fitted neighbours."""
    xy = np.zeros((len(reduced), 2), np.float32)
    xy[fit_pos] = fit_xy
    fitted = np.zeros(len(reduced), bool)
    fitted[fit_pos] = True
    rest = np.flatnonzero(~fitted)
    if len(rest):
        s, i = _knn(reduced[fit_pos], reduced[rest], PLACE_K)
        xy[rest] = place(s, fit_xy[i])
    return xy, fitted


def compute_layout(
    ad_ids: np.ndarray,
    ad_vectors: np.ndarray,
    strata: np.ndarray,
    user_ids: np.ndarray,
    user_ts: np.ndarray,
    user_vectors: np.ndarray,
    *,
    seed: int = 0,
    max_fit: int = MAP_FIT_MAX,
    pca_dims: int = 50,
    n_neighbors: int = 15,
    progress: Progress | None = None,
    fitted_ads: pd.DataFrame | None = None,
) -> MapLayout:
    """Fit the map for a version (see the module docstring for the method). `fitted_ads`: the
    ad coordinates (ad_id, x, y, fitted) of a map fitted on these same ad vectors (`fit_key`);
    the UMAP fit is then skipped and only the users are placed."""
    from sklearn.decomposition import PCA

    if len(ad_ids) < 5:
        raise AdLensError(f"a map needs at least 5 ads, got {len(ad_ids)}; build the version with --no-map")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    fit_pos = stratified_sample(strata, max_fit, seed)
    dims = min(pca_dims, ad_vectors.shape[1], len(fit_pos))
    pca = PCA(n_components=dims, random_state=seed).fit(ad_vectors[fit_pos])
    reduced = l2_normalize(pca.transform(ad_vectors))
    timings["pca_s"] = time.perf_counter() - t0
    report(progress, 0.2, "map: UMAP fit")

    t = time.perf_counter()
    if fitted_ads is not None:
        got = fitted_ads.set_index("ad_id").reindex(pd.Index(np.asarray(ad_ids, dtype=str)))
        if got["x"].isna().any():
            raise AdLensError("the reused map does not cover every ad of this version")
        xy = got[["x", "y"]].to_numpy(np.float32)
        fitted = got["fitted"].to_numpy(bool)
        nn = min(n_neighbors, len(fit_pos) - 1)
    else:
        fit_xy, nn = _umap_fit(reduced[fit_pos], n_neighbors, seed)
    timings["umap_fit_s"] = time.perf_counter() - t
    report(progress, 0.8, "map: placing the rest")

    t = time.perf_counter()
    if fitted_ads is None:
        xy, fitted = _place_rest(reduced, fit_pos, fit_xy)
    if len(user_vectors):
        uq = l2_normalize(pca.transform(np.asarray(user_vectors, np.float32)))
        s, i = _knn(reduced, uq, PLACE_K)
        user_xy = place(s, xy[i])
    else:
        user_xy = np.zeros((0, 2), np.float32)
    timings["place_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    ads = pd.DataFrame({"ad_id": np.asarray(ad_ids, dtype=str), "x": xy[:, 0], "y": xy[:, 1], "fitted": fitted})
    users = pd.DataFrame({
        "user_id": np.asarray(user_ids, dtype=str), "ts": pd.to_datetime(pd.Series(user_ts)).to_numpy(),
        "x": user_xy[:, 0], "y": user_xy[:, 1],
    })
    meta = {"n_fit": int(len(fit_pos)), "n_placed": int((~fitted).sum()), "n_users": int(len(users)),
            "pca_dims": int(dims), "n_neighbors": int(nn), "max_fit": int(max_fit), "seed": seed,
            "fit_key": fit_key(ad_ids, ad_vectors, strata, seed=seed, max_fit=max_fit, pca_dims=pca_dims,
                               n_neighbors=n_neighbors),
            "timings": {k: round(v, 3) for k, v in timings.items()}}
    if fitted_ads is not None:
        meta["fit_reused"] = True
    return MapLayout(ads=ads, users=users, meta=meta)


def fit_key(ad_ids: np.ndarray, ad_vectors: np.ndarray, strata: np.ndarray, *, seed: int = 0,
            max_fit: int = MAP_FIT_MAX, pca_dims: int = 50, n_neighbors: int = 15) -> str:
    """sha256 of everything the ads' layout depends on: ids, vectors, strata, compute_layout's
    fit parameters (same defaults). Hashed incrementally: the vectors can be large."""
    params = {"v": FIT_KEY_VERSION, "seed": seed, "max_fit": max_fit, "pca_dims": pca_dims, "n_neighbors": n_neighbors}
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for part in (np.asarray(ad_ids, dtype=str), np.asarray(strata, dtype=str)):
        h.update("\x1f".join(part.tolist()).encode())
    h.update(np.ascontiguousarray(ad_vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


def find_fitted_ads(versions_dir: Path, key: str) -> pd.DataFrame | None:
    """The ad coordinates of an existing version whose map was fitted with `fit_key` == key, its
    map file matching the version's checksum; None when there is none."""
    for path in sorted(Path(versions_dir).glob("*/manifest.json")):
        if path.parent.name.startswith("."):  # a staging folder (core.store.artifacts)
            continue
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        meta = m.get("map") if isinstance(m, dict) else None
        if not isinstance(meta, dict) or meta.get("fit_key") != key:
            continue
        ads = path.parent / ADS_FILE
        recorded = (m.get("files") or {}).get(ADS_FILE)
        if recorded and ads.is_file() and sha256_file(ads) == recorded:
            return pd.read_parquet(ads, columns=["ad_id", "x", "y", "fitted"])
    return None


def save_layout(layout: MapLayout, directory: Path) -> list[Path]:
    """Write map_ads.parquet and map_users.parquet into `directory` (a version's temp dir)."""
    paths = [Path(directory) / ADS_FILE, Path(directory) / USERS_FILE]
    layout.ads.to_parquet(paths[0], index=False)
    layout.users.to_parquet(paths[1], index=False)
    return paths


def load_layout(directory: Path) -> MapLayout | None:
    """The version's map, or None when it has none yet (`adlens map --version V` builds one)."""
    a, u = Path(directory) / ADS_FILE, Path(directory) / USERS_FILE
    if not a.is_file():
        return None
    users = pd.read_parquet(u) if u.is_file() else pd.DataFrame(columns=["user_id", "ts", "x", "y"])
    return MapLayout(ads=pd.read_parquet(a), users=users)


class MapPlacer:
    """Places new query vectors on a version's map with the version's own index (≤ 50 ms)."""

    def __init__(self, version, ads_layout: pd.DataFrame):
        self.version = version
        xy = ads_layout.set_index("ad_id").reindex(pd.Index(np.asarray(version.ad_ids, dtype=str)))
        self._xy = xy[["x", "y"]].to_numpy(dtype=np.float32)

    def place(self, query_vectors: np.ndarray, k: int = PLACE_K) -> np.ndarray:
        """(n, 2) coordinates for (n, d) index-space query vectors."""
        q = np.atleast_2d(np.asarray(query_vectors, np.float32))
        out = np.full((len(q), 2), np.nan, np.float32)
        for row, (scores, pos) in enumerate(self.version.search(q, k)):
            ok = ~np.isnan(self._xy[pos, 0])
            if ok.any():
                out[row] = place(scores[ok][None, :], self._xy[pos[ok]][None, :, :])[0]
        return out


def align_to(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """`other`'s ad coordinates rotated/reflected, scaled and shifted onto `reference` (orthogonal
    Procrustes on the ads both share), so two versions' maps can be overlaid to show movement."""
    from scipy.linalg import orthogonal_procrustes

    common = reference.merge(other, on="ad_id", suffixes=("_ref", "_oth"))
    if len(common) < 3:
        raise AdLensError(f"aligning maps needs ≥ 3 shared ads, found {len(common)}")
    a = common[["x_ref", "y_ref"]].to_numpy(np.float64)
    b = common[["x_oth", "y_oth"]].to_numpy(np.float64)
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    r, scale = orthogonal_procrustes(b0, a0)
    s = scale / max((b0**2).sum(), 1e-12)
    xy = (other[["x", "y"]].to_numpy(np.float64) - mb) @ r * s + ma
    out = other.copy()
    out["x"], out["y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    return out


MAP_USERS = 2_000
"""User points on a map: the latest sampled logged request of up to this many users."""


def map_artifact_builder(ctx, directory: Path) -> dict:
    """Version build hook (core.index.versions.BuildContext → files + manifest fields): the version's map."""
    from core.data.request import sample_requests

    cat = ctx.catalog
    strata = cat.ads.set_index("ad_id")["vertical"].reindex(pd.Index(np.asarray(ctx.ad_ids, dtype=object)))
    reqs = sample_requests(cat.impressions, cat.users, MAP_USERS * 5, seed=0)
    reqs = reqs.sort_values("ts").drop_duplicates("user_id", keep="last").head(MAP_USERS).reset_index(drop=True)
    uvec = ctx.encoder.encode_requests(reqs, ctx.features) if len(reqs) else np.zeros((0, ctx.ad_vectors.shape[1]))
    strata = strata.fillna("unknown").to_numpy(dtype=str)
    key = fit_key(ctx.ad_ids, ctx.ad_vectors, strata, seed=0)
    layout = compute_layout(ctx.ad_ids, ctx.ad_vectors, strata, reqs["user_id"].to_numpy(), reqs["ts"].to_numpy(),
                            uvec, seed=0, fitted_ads=find_fitted_ads(ctx.settings.versions_dir, key))
    save_layout(layout, directory)
    return {"map": layout.meta}
