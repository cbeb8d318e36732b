"""Immutable index versions: build, verify, load, list, delete.

A version is the folder ``<workspace>/versions/<name>/``::

    index.faiss            the AnnIndex over ad_vectors
    ad_ids.npy             unicode array, sorted; row i <-> FAISS position i
    ad_text_vectors.npy    (n, d_text) float32 sentence-transformer embeddings
    ad_vectors.npy         instead, for a version from imported ad vectors: the vectors as indexed
    encoder/               the query encoder (config.json [+ model.safetensors, vocab.json])
    manifest.json          lineage, model, factory, params, counts, timings, recall, sha256 of files

The ads come from AdLens's text embeddings or from imported ad vectors (core/vectors), with the
metric they declare (cosine, ip, l2); the query side is a trained tower, the history mean, or an
imported one (ONNX model, plugin, precomputed request vectors). The manifest records what was
imported (file sha256, metric, dimension, encoder signature).

`build_version` writes everything into a temporary folder inside versions/, fsyncs it, reads it
back through the same verification as `load_version`, renames it into place, and only then
registers an `IndexVersion` row (removing the folder again if registration fails).

Extension point: builders in `EXTRA_ARTIFACT_BUILDERS` run at build time with the
`BuildContext` and the temporary folder, write their files there (checksummed like the rest) and
return a dict merged into the manifest. Versions are immutable, except that `add_artifacts` may
later add *derived* files (e.g. a UMAP map for an older version): it never overwrites a file,
and rewrites manifest.json atomically (so the version's checksum changes with it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from core.common.errors import AdLensError, ArtifactError, NotFoundError
from core.common.names import validate_name
from core.common.progress import Progress, report, scaled
from core.data.features import FeatureStore
from core.data.request import sample_requests
from core.index import maps
from core.index.ann import AnnIndex, exact_search, recall_at, tune_search_params
from core.index.backends import LocalBackend, SearchBackend, open_backend, shard_entries
from core.index.manifest import Manifest
from core.index.parts import (
    AdSide,
    QuerySide,
    check_dims,
    check_fingerprint,
    imported_ad_side,
    probe_requests,
    query_side,
    recorded_fingerprints,
    text_ad_side,
)
from core.index.shards import ShardedIndex, build_shards, save_shards
from core.store.artifacts import (
    atomic_write_json,
    fsync_dir,
    fsync_tree,
    hash_tree,
    load_npy,
    save_npy,
    sha256_bytes,
    sha256_file,
    staging_dir,
)
from core.store.catalog import Catalog, load_catalog
from core.store.checksum_memo import verify_files_once
from core.store.db import make_engine, session_scope
from core.store.debris import clean_debris
from core.store.models import IndexVersion
from core.store.settings import Settings
from core.tower.query_encoder import QueryEncoder, UnitQueries, l2_normalize
from core.tower.registry import load_query_encoder
from core.vectors.query_side import QuerySpec

MANIFEST = "manifest.json"
AD_VECTORS_FILE = "ad_vectors.npy"  # versions from imported ad vectors: the vectors as indexed
RECALL_KS = (10, 100, 500)
RECALL_REQUESTS = 200
RECALL_TARGET = 0.95


@dataclass
class BuildContext:
    """Everything a build-time artifact builder may need (read-only)."""

    settings: Settings
    name: str
    catalog: Catalog
    ad_ids: np.ndarray
    ad_text_vectors: np.ndarray
    ad_vectors: np.ndarray
    index: AnnIndex
    encoder: QueryEncoder
    search_params: dict
    manifest: Manifest | None = None

    @cached_property
    def features(self) -> FeatureStore:
        return FeatureStore(self.catalog, self.ad_ids, self.ad_text_vectors)


ArtifactBuilder = Callable[[BuildContext, Path], dict]
EXTRA_ARTIFACT_BUILDERS: list[ArtifactBuilder] = []


@dataclass
class Version:
    """A loaded, verified index version."""

    name: str
    path: Path
    manifest: Manifest
    checksum: str
    ad_ids: np.ndarray
    ad_text_vectors: np.ndarray
    ad_vectors: np.ndarray
    index: AnnIndex | ShardedIndex
    encoder: QueryEncoder
    search_params: dict
    backend: SearchBackend | None = None  # None: search `index` in-process

    @property
    def backend_name(self) -> str:
        return self.backend.name if self.backend is not None else "local"

    @property
    def n_shards(self) -> int:
        return int((self.manifest.get("shards") or {}).get("n") or 1)

    @cached_property
    def _shard_starts(self) -> np.ndarray:
        return np.asarray([e.start for e in shard_entries(self.manifest)] if self.n_shards > 1 else [0])

    def shard_of(self, positions) -> np.ndarray:
        """The shard holding each position (0 for every ad of an unsharded version)."""
        return np.searchsorted(self._shard_starts, np.asarray(positions, np.int64), side="right") - 1

    def close(self) -> None:
        """Release the backend's resources (Ray actors); the in-process index stays usable."""
        if self.backend is not None:
            self.backend.close()

    @cached_property
    def _positions(self) -> pd.Index:
        return pd.Index(self.ad_ids)

    def position_of(self, ad_ids) -> np.ndarray:
        """FAISS position of each ad id; -1 where the id is not in this version."""
        return self._positions.get_indexer(pd.Index(np.atleast_1d(np.asarray(ad_ids, dtype=object))))

    def search(self, queries, k: int, params: dict | None = None, stats: dict | None = None):
        """Top-k through the serving backend with the version's search_params, overridden by
        `params`; `stats` (if given) receives {shard: milliseconds}."""
        merged = {**self.search_params, **(params or {})}
        backend = self.backend or LocalBackend(self.index)
        return backend.search(queries, k, merged, stats)

    def exact_search(self, queries, k: int):
        return exact_search(self.ad_vectors, queries, k, self.index.metric)

    @classmethod
    def in_memory(cls, name: str, ad_ids: np.ndarray, ad_text_vectors: np.ndarray, index: AnnIndex,
                  encoder: QueryEncoder, search_params: dict | None = None) -> "Version":
        """A version that lives only in memory (tests, notebooks): same behaviour, no folder."""
        ad_vectors = l2_normalize(encoder.transform_catalog(ad_text_vectors, ad_ids))
        manifest = Manifest(name=name, created_at="", factory=index.factory, index_kind=str(index.kind),
                            n_ads=int(index.ntotal), dims={"text": int(ad_text_vectors.shape[1]), "index": index.dim},
                            embedding={"model": "in-memory", "fingerprint": ""}, encoder=encoder.config(),
                            search_params=dict(search_params or {}))
        return cls(name=name, path=Path("."), manifest=manifest, checksum=f"in-memory:{name}",
                   ad_ids=np.asarray(ad_ids, dtype=object), ad_text_vectors=ad_text_vectors, ad_vectors=ad_vectors,
                   index=index, encoder=encoder, search_params=dict(search_params or {}))


# ---- loading --------------------------------------------------------------------------------
def _existing(settings: Settings) -> list[str]:
    d = settings.versions_dir
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def _load_dir(path: Path, name: str, backend: str = "local", ray_address: str | None = None,
              memo_dir: Path | None = None) -> Version:
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: missing; {path} is not a complete version")
    raw = mpath.read_bytes()
    try:
        manifest = Manifest.from_dict(json.loads(raw), where=str(mpath))
    except ValueError as exc:
        raise ArtifactError(f"{mpath}: not valid JSON ({exc})") from exc
    files, n, dims = manifest.files, manifest.n_ads, manifest.dims
    fingerprint = manifest.fingerprint
    verify_files_once(path, files, memo_dir)  # memo_dir None: every byte read
    ad_ids = load_npy(path / "ad_ids.npy").astype(object)
    imported = bool(manifest.ad_vectors)
    text = load_npy(path / (AD_VECTORS_FILE if imported else "ad_text_vectors.npy")).astype(np.float32, copy=False)
    server, index = open_backend(backend, path, manifest, ray_address=ray_address, label=name)
    encoder = load_query_encoder(path / "encoder")
    if manifest.normalize_queries:
        encoder = UnitQueries(encoder)
    if not (len(ad_ids) == len(text) == index.ntotal == n):
        raise ArtifactError(
            f"{path}: row counts disagree (manifest {n}, ad_ids.npy {len(ad_ids)}, "
            f"ad_text_vectors.npy {len(text)}, index.faiss {index.ntotal})"
        )
    if text.ndim != 2 or text.shape[1] != dims["text"]:
        raise ArtifactError(f"{path / 'ad_text_vectors.npy'}: dim {text.shape[1:]} but manifest says {dims['text']}")
    try:
        if imported:  # stored as indexed
            ad_vectors = text
        else:
            ad_vectors = l2_normalize(encoder.transform_catalog(text, ad_ids)) if n else np.zeros((0, index.dim), np.float32)
    except ValueError as exc:
        raise ArtifactError(f"{path / 'encoder'}: does not fit ad_text_vectors.npy ({exc})") from exc
    if index.dim != dims["index"] or ad_vectors.shape[1] != index.dim:
        raise ArtifactError(
            f"{path / 'index.faiss'}: dim {index.dim}, encoder gives {ad_vectors.shape[1]}, manifest says {dims['index']}"
        )
    check_fingerprint(recorded_fingerprints(path / "encoder", encoder.config()),
                       fingerprint, where=str(path / "encoder"), model=manifest.embedding.get("model"))
    return Version(name=name, path=path, manifest=manifest, checksum=sha256_bytes(raw), ad_ids=ad_ids,
                   ad_text_vectors=text, ad_vectors=ad_vectors, index=index, encoder=encoder,
                   search_params=dict(manifest.search_params), backend=server)


def load_version(settings: Settings, name: str, *, engine: Engine | None = None,
                 backend: str | None = None) -> Version:
    """Load and verify a version: sha256 of every file against the manifest, the manifest's own
    sha256 against the registry (so re-hashed files and manifest together are still caught), row
    counts, dims and the text-model fingerprint (a file verified before at the same stamp is not
    read again: core.store.checksum_memo, memo in the workspace's cache dir). Served by `backend` (default `settings.backend`:
    local, or ray with one actor per shard)."""
    validate_name(name)
    path = settings.versions_dir / name
    if not path.is_dir():
        have = ", ".join(_existing(settings)) or "none; build one with `adlens build-index`"
        raise NotFoundError(f"version {name!r} not found in {settings.versions_dir}; existing: {have}")
    version = _load_dir(path, name, backend or settings.backend, settings.ray_address, memo_dir=settings.cache_dir)
    db = engine or make_engine(settings.db_url)
    try:
        with session_scope(db) as s:
            row = s.get(IndexVersion, name)
            registered = row.manifest_sha256 if row is not None else None
    finally:
        if engine is None:
            db.dispose()
    if registered and registered != version.checksum:
        version.close()
        raise ArtifactError(f"{path / MANIFEST}: sha256 {version.checksum[:12]}… differs from the one registered at "
                            f"build time ({registered[:12]}…): the version was modified after it was built. Rebuild "
                            f"it under a new name, or remove it with `adlens versions --delete {name}`")
    return version


# ---- building -------------------------------------------------------------------------------
def _recall_queries(catalog: Catalog, features: FeatureStore, encoder: QueryEncoder,
                    ad_vectors: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    reqs = sample_requests(catalog.impressions, catalog.users, RECALL_REQUESTS, seed=seed)
    if len(reqs):
        return encoder.encode_requests(reqs, features), "sampled_requests"
    # No impression log: ads themselves stand in for queries (documented in the manifest).
    rows = np.random.default_rng(seed).choice(len(ad_vectors), min(RECALL_REQUESTS, len(ad_vectors)), replace=False)
    return ad_vectors[np.sort(rows)], "ad_vectors"


def _check_params(params: dict | None) -> None:
    from core.index.ann import SEARCH_PARAM_KEYS

    for key, value in (params or {}).items():
        if key not in SEARCH_PARAM_KEYS:
            raise AdLensError(f"unknown search params [{key!r}]; valid: {', '.join(SEARCH_PARAM_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise AdLensError(f"search param {key} must be a positive integer; got {value!r}")


def _check_new(settings: Settings, engine: Engine, name: str, parent: str | None) -> None:
    final = settings.versions_dir / name
    with session_scope(engine) as s:
        if final.exists() or s.get(IndexVersion, name) is not None:
            raise AdLensError(f"version {name!r} already exists; versions are immutable, pick a new name")
        if parent is not None and s.get(IndexVersion, parent) is None:
            have = ", ".join(s.scalars(select(IndexVersion.name)).all()) or "none"
            raise NotFoundError(f"parent version {parent!r} not found; existing: {have}")


@dataclass
class RecallCheck:
    """The search params a build settled on and the recall@K they reach against exact search."""

    search_params: dict
    params_source: str  # "given", or how they were tuned
    recall: dict  # {"recall@K": value} for RECALL_KS
    k: int  # the K searched: max(RECALL_KS), at most the number of ads


def _measure_recall(index: AnnIndex, queries: np.ndarray, ad_vectors: np.ndarray,
                    search_params: dict | None) -> RecallCheck:
    """Search params (tuned when not given) and recall@K vs exact on the recall queries."""
    kmax = min(max(RECALL_KS), index.ntotal)
    exact = exact_search(ad_vectors, queries, kmax, index.metric)
    if search_params is None:
        search_params, _ = tune_search_params(index, queries, exact, k=kmax, target=RECALL_TARGET,
                                              vectors=ad_vectors)
        params_source = f"tuned: cheapest reaching recall@{max(RECALL_KS)} >= {RECALL_TARGET}"
    else:
        params_source = "given"
    approx = index.search(queries, kmax, search_params)
    recall = {f"recall@{k}": recall_at(approx, exact, min(k, kmax), vectors=ad_vectors, queries=queries,
                                       metric=index.metric) for k in RECALL_KS}
    return RecallCheck(search_params, params_source, recall, kmax)


def _publish(settings: Settings, ctx: BuildContext, ads: AdSide, side: QuerySide, builders: list,
             timings: dict, t_start: float, progress: Progress | None = None) -> Manifest:
    """Write the version into a staging folder, run the artifact builders, checksum, read back
    through the loader, and rename into place; returns the final manifest. `progress` covers
    writing (0) through each builder to the read-back (1)."""
    name, manifest, index = ctx.name, ctx.manifest, ctx.index
    report(progress, 0.0, "Writing the version")
    settings.versions_dir.mkdir(parents=True, exist_ok=True)
    clean_debris(settings, under=settings.versions_dir)
    with staging_dir(settings.versions_dir, name) as tmp:
        t = time.perf_counter()
        if isinstance(index, ShardedIndex):
            entries = save_shards(index, tmp)
            manifest.extras["shards"] = {"n": len(entries), "split": "contiguous position ranges",
                                         "quantizer_sha256": index.quantizer_fingerprints()[0],
                                         "entries": [e.to_dict() for e in entries]}
            index_bytes = sum(e.bytes for e in entries)
        else:
            index.save(tmp / "index.faiss")
            index_bytes = (tmp / "index.faiss").stat().st_size
        save_npy(tmp / "ad_ids.npy", ads.ad_ids.astype(str))
        if ads.imported:
            save_npy(tmp / AD_VECTORS_FILE, ads.ad_vectors)
        else:
            save_npy(tmp / "ad_text_vectors.npy", ads.item_vectors)
        if side.tower_dir:
            shutil.copytree(side.tower_dir, tmp / "encoder")
        else:
            side.encoder.save(tmp / "encoder")
        timings["write_s"] = time.perf_counter() - t
        for i, builder in enumerate(builders):
            what = getattr(builder, "__name__", "artifact").removesuffix("_artifact_builder")
            report(progress, 0.1 + 0.8 * i / len(builders), f"Building the version's {what} artifacts")
            t = time.perf_counter()
            extra = builder(ctx, tmp) or {}
            manifest.extras.update({k: v for k, v in extra.items() if k != "files"})
            timings[f"{getattr(builder, '__name__', 'artifact')}_s"] = time.perf_counter() - t
        manifest.index_bytes = index_bytes
        manifest.bytes_per_ad = manifest.index_bytes / max(index.ntotal, 1)
        manifest.files = hash_tree(tmp, exclude=(MANIFEST,))
        timings["total_s"] = time.perf_counter() - t_start
        manifest.timings = {k: round(v, 4) for k, v in timings.items()}
        atomic_write_json(tmp / MANIFEST, manifest.to_dict())
        report(progress, 0.9, "Checking the written version")
        fsync_tree(tmp)
        _load_dir(tmp, name)  # read back through the loader's checks before publishing
        try:
            os.rename(tmp, settings.versions_dir / name)
        except OSError as exc:
            raise AdLensError(f"version {name!r} already exists ({settings.versions_dir / name}); pick a new name") from exc
        fsync_dir(settings.versions_dir)
    return manifest


def build_version(settings: Settings, name: str, factory: str, *, tower: str | None = None,
                  search_params: dict | None = None, parent: str | None = None, engine: Engine | None = None,
                  progress: Progress | None = None, text_encoder=None, seed: int = 0,
                  with_map: bool = False, ad_vectors: str | None = None, query: QuerySpec | None = None,
                  allow_partial: bool = False, shards: int | None = None,
                  extra_builders: tuple[ArtifactBuilder, ...] = ()) -> Version:
    """Build, verify and register version `name` from the current catalog.

    Ads: AdLens's text embeddings (`text_encoder` overrides the model), or imported ad vectors
    `ad_vectors` (core.vectors; `allow_partial` builds on the ads both the catalog and the file
    have). Queries: `tower`, an imported query side (`query`: ONNX, plugin, request vectors), or
    the history mean. `search_params=None` picks the cheapest params reaching recall@500 ≥ 0.95 on
    the sampled requests (recorded as tuned in the manifest). `with_map` also computes the
    version's UMAP map (core.index.maps) at build time (the CLI and the demo do; library callers
    such as tests usually skip it). `shards` > 1 splits the index into that many shards sharing
    one trained quantizer (core.index.shards). `extra_builders` run after EXTRA_ARTIFACT_BUILDERS (e.g.
    core.sources.registry.sources_artifact_builder, which the CLI and the demo pass: higher layers
    hook in without this module importing them). `progress(fraction, step)` (core.common.progress)
    follows the stages and ends at 1.0."""
    _check_build_args(name, search_params, shards)
    query = query or QuerySpec()
    t_start = time.perf_counter()
    engine = engine or make_engine(settings.db_url)
    _check_new(settings, engine, name, parent)
    timings: dict[str, float] = {}

    report(progress, 0.0, "Loading the catalog")
    t = time.perf_counter()
    catalog = load_catalog(engine)
    if catalog.n_ads == 0:
        raise AdLensError("the catalog has no ads: run `adlens ingest DIR` or `adlens demo` first")
    timings["catalog_s"] = time.perf_counter() - t
    report(progress, 0.02, "Loading the imported ad vectors" if ad_vectors else "Embedding the ad texts")
    t = time.perf_counter()
    ads = (imported_ad_side(settings, catalog, ad_vectors, allow_partial) if ad_vectors
           else text_ad_side(settings, catalog, scaled(progress, 0.02, 0.5), text_encoder))
    timings["embed_s"] = time.perf_counter() - t

    report(progress, 0.5, "Encoding the recall queries")
    t = time.perf_counter()
    side, features, queries, source = _query_side_and_recall_queries(settings, engine, catalog, ads, tower, query,
                                                                     seed)
    timings["encoder_s"] = time.perf_counter() - t

    report(progress, 0.6, "Building the index")
    t = time.perf_counter()
    index = _build_index(ads, factory, seed, shards)
    timings["index_build_s"] = time.perf_counter() - t

    report(progress, 0.75, "Measuring recall against exact search")
    t = time.perf_counter()
    check = _measure_recall(index, queries, ads.ad_vectors, search_params)
    timings["recall_s"] = time.perf_counter() - t

    manifest = _new_manifest(name, parent, tower, factory, ads, side, index, check,
                             {"source": source, "n": len(queries), "seed": seed, "k": check.k})
    ctx = BuildContext(settings, name, catalog, ads.ad_ids, ads.item_vectors, ads.ad_vectors, index, side.encoder,
                       check.search_params, manifest)
    ctx.__dict__["features"] = features  # already built: seed the cached property
    builders = [*EXTRA_ARTIFACT_BUILDERS, *extra_builders] + ([maps.map_artifact_builder] if with_map else [])
    manifest = _publish(settings, ctx, ads, side, builders, timings, t_start, scaled(progress, 0.85, 0.98))
    report(progress, 0.98, "Registering the version")
    _register_or_remove(settings, engine, name, manifest)
    version = _load_dir(settings.versions_dir / name, name)
    report(progress, 1.0, "done")
    return version


def _check_build_args(name: str, search_params: dict | None, shards: int | None) -> None:
    validate_name(name)
    _check_params(search_params)
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int) or shards < 1):
        raise AdLensError(f"--shards must be a positive integer; got {shards!r}")


def _query_side_and_recall_queries(settings: Settings, engine: Engine, catalog: Catalog, ads: AdSide,
                                   tower: str | None, query: QuerySpec,
                                   seed: int) -> tuple[QuerySide, FeatureStore, np.ndarray, str]:
    """The query encoder (and the indexed ad vectors it implies, set on `ads`), the features it
    reads, and the recall queries with where they came from; checks the query dimension."""
    side = query_side(settings, engine, ads, tower, query)
    if ads.ad_vectors is None:
        ads.ad_vectors = l2_normalize(side.encoder.transform_catalog(ads.item_vectors, ads.ad_ids))
    features = FeatureStore(catalog, ads.ad_ids, ads.item_vectors)
    queries, source = _recall_queries(catalog, features, side.encoder, ads.ad_vectors, seed)
    probe = queries if source == "sampled_requests" else side.encoder.encode_requests(probe_requests(catalog), features)
    check_dims(probe, ads, side)
    return side, features, queries, source


def _new_manifest(name: str, parent: str | None, tower: str | None, factory: str, ads: AdSide, side: QuerySide,
                  index: AnnIndex | ShardedIndex, check: RecallCheck, recall_queries: dict) -> Manifest:
    """The version's manifest before publishing (files, sizes and timings are added then)."""
    return Manifest(
        name=name, created_at=datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
        parent=parent, tower=tower, embedding=ads.embedding, encoder=side.encoder.config(),
        metric=ads.metric, ad_vectors=ads.imported, query_side=side.description,
        normalize_queries=isinstance(side.encoder, UnitQueries),
        dims={"text": int(ads.item_vectors.shape[1]), "index": int(index.dim)},
        factory=factory, index_kind=str(index.kind), nlist=index.nlist,
        search_params=check.search_params, search_params_source=check.params_source,
        n_ads=int(index.ntotal), recall=check.recall, recall_queries=recall_queries,
        tower_metrics=side.tower_info.get("metrics", {}),
    )


def _build_index(ads: AdSide, factory: str, seed: int, shards: int | None = None) -> AnnIndex | ShardedIndex:
    """The FAISS index over the ad vectors, with the metric the ads declare (cosine: inner product
    on normalised vectors); `shards` > 1: that many shards sharing one trained quantizer."""
    metric = "l2" if ads.metric == "l2" else "ip"
    try:
        if shards is not None and shards > 1:
            return build_shards(ads.ad_vectors, factory, shards, seed=seed, metric=metric)
        return AnnIndex.build(ads.ad_vectors, factory, seed=seed, metric=metric)
    except ValueError as exc:
        raise AdLensError(str(exc)) from exc


def _register_or_remove(settings: Settings, engine: Engine, name: str, manifest: Manifest) -> None:
    """Register the published version; if that fails, remove its folder again."""
    final = settings.versions_dir / name
    try:
        _register(engine, name, final, manifest)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        fsync_dir(settings.versions_dir)
        raise


def _register(engine: Engine, name: str, path: Path, manifest: Manifest) -> None:
    with session_scope(engine, write="register a version") as s:
        s.add(IndexVersion(
            name=name, created_at=datetime.fromisoformat(manifest.created_at), parent=manifest.parent,
            tower=manifest.tower, factory=manifest.factory, embedding_model=manifest.embedding["model"],
            model_fingerprint=manifest.fingerprint, dim=manifest.dims["index"],
            n_ads=manifest.n_ads, path=path.relative_to(path.parent.parent).as_posix(), manifest_sha256=sha256_file(path / MANIFEST),
            manifest=manifest.to_dict(),
        ))


# ---- listing, deleting, derived artifacts -----------------------------------------------------
def describe_sides(m: Manifest) -> dict:
    """Short labels for a manifest's ad side, query side and metric (versions list, Health page)."""
    qs = m.query_side or {}
    src = qs.get("source") or ("tower" if m.tower else "history_mean")
    query = {"tower": f"tower {m.tower}", "history_mean": "history mean",
             "onnx": f"ONNX {qs.get('file')} ({str(qs.get('sha256', ''))[:12]})",
             "request_vectors": f"request vectors {qs.get('name')}",
             "plugin": f"plugin {qs.get('name')}"}.get(src, src)
    imp = m.ad_vectors or {}
    sha = str((imp.get("source") or {}).get("sha256", ""))[:12]
    ads = (f"imported {imp.get('name')} ({imp.get('dim')}-d, sha256 {sha})" if imp
           else f"text embeddings {m.embedding.get('model')}")
    return {"ads": ads, "query": query, "metric": m.metric}


def _summary(raw: dict, path: Path, status: str) -> dict:
    try:
        m = Manifest.from_dict(raw, where=str(path / MANIFEST))
    except ArtifactError:
        return {"name": raw.get("name") or path.name, "created_at": raw.get("created_at"), "path": str(path),
                "status": "invalid manifest"}
    return {
        **describe_sides(m), "name": m.name, "created_at": m.created_at, "parent": m.parent, "tower": m.tower, "factory": m.factory,
        "index_kind": m.index_kind, "search_params": m.search_params, "n_ads": m.n_ads, "dim": m.dims["index"],
        "embedding_model": m.embedding.get("model"), "model_fingerprint": m.fingerprint[:12],
        **{k: m.recall.get(k) for k in (f"recall@{k}" for k in RECALL_KS)},
        "bytes_per_ad": m.bytes_per_ad, "build_s": m.total_build_s,
        "shards": int((m.extras.get("shards") or {}).get("n") or 1), "path": str(path), "status": status,
    }


def list_versions(settings: Settings, *, engine: Engine | None = None) -> list[dict]:
    """Key manifest fields of every version, oldest first. `status`: "ok"; "missing" (registered,
    folder gone); "unregistered" (folder without a registry row, e.g. a crash mid-build)."""
    engine = engine or make_engine(settings.db_url)
    with session_scope(engine) as s:
        # Located by name inside this workspace: the row's path is informative only.
        rows = [(r.name, dict(r.manifest or {}), settings.versions_dir / r.name) for r in s.scalars(select(IndexVersion))]
    out, seen = [], set()
    for name, m, path in rows:
        seen.add(name)
        out.append(_summary(m, path, "ok" if (path / MANIFEST).is_file() else "missing"))
    for name in _existing(settings):
        mpath = settings.versions_dir / name / MANIFEST
        if name not in seen and mpath.is_file():
            try:
                out.append(_summary(json.loads(mpath.read_text()), mpath.parent, "unregistered"))
            except ValueError:
                continue
    return sorted(out, key=lambda d: (d["created_at"] or "", d["name"] or ""))


def delete_version(settings: Settings, name: str, *, engine: Engine | None = None) -> None:
    """Remove a version's folder and registry row (folder moved aside first, restored if the
    database delete fails)."""
    validate_name(name)
    engine = engine or make_engine(settings.db_url)
    path = settings.versions_dir / name
    with session_scope(engine) as s:
        registered = s.get(IndexVersion, name) is not None
    if not registered and not path.exists():
        have = ", ".join(v["name"] for v in list_versions(settings, engine=engine)) or "none"
        raise NotFoundError(f"version {name!r} not found; existing: {have}")
    aside = settings.versions_dir / f".deleting-{name}-{uuid.uuid4().hex[:8]}"
    if path.exists():
        os.rename(path, aside)
    try:
        with session_scope(engine, write="delete a version") as s:
            row = s.get(IndexVersion, name)
            if row is not None:
                s.delete(row)
    except BaseException:
        if aside.exists():
            os.rename(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    fsync_dir(settings.versions_dir)


def add_artifacts(settings: Settings, name: str, builder: ArtifactBuilder, *,
                  engine: Engine | None = None) -> Version:
    """Add derived files to an existing version (e.g. a map computed after the build).

    `builder(ctx, staging_dir)` writes new files and returns manifest fields. Existing files are
    never overwritten; the manifest is rewritten atomically and the registry row updated."""
    engine = engine or make_engine(settings.db_url)
    v = load_version(settings, name)
    ctx = BuildContext(settings, name, load_catalog(engine), v.ad_ids, v.ad_text_vectors, v.ad_vectors,
                       v.index, v.encoder, v.search_params, v.manifest)
    manifest = Manifest.from_dict(v.manifest.to_dict())
    with staging_dir(v.path, "artifacts") as tmp:
        extra = builder(ctx, tmp) or {}
        new = hash_tree(tmp)
        clash = [rel for rel in new if (v.path / rel).exists() or rel == MANIFEST]
        if clash:
            raise AdLensError(f"version {name!r} already has {', '.join(clash)}; versions are immutable")
        fsync_tree(tmp)
        for rel in new:
            (v.path / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, v.path / rel)
    manifest.extras.update({k: val for k, val in extra.items() if k != "files"})
    manifest.files = {**v.manifest.files, **new}
    atomic_write_json(v.path / MANIFEST, manifest.to_dict())
    with session_scope(engine, write="add version artifacts") as s:
        row = s.get(IndexVersion, name)
        if row is not None:
            row.manifest = manifest.to_dict()
            row.manifest_sha256 = sha256_file(v.path / MANIFEST)
    return load_version(settings, name)


def build_version_map(settings, name: str) -> dict:
    """Compute the map of an existing version that has none (`adlens map`); returns its metadata."""
    v = load_version(settings, name)
    if (v.path / maps.ADS_FILE).exists():
        raise AdLensError(f"version {name!r} already has a map ({maps.ADS_FILE}); versions are immutable")
    return add_artifacts(settings, name, maps.map_artifact_builder).manifest.get("map", {})
