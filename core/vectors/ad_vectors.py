"""`adlens import-vectors ads FILE --name N [--metric ip|cosine|l2] [--ids IDS]`: a team's own ad vectors.

Formats: Parquet with `ad_id` (string) and `vector` (list or fixed-size list of numbers), or an
`.npy` float matrix (loaded without pickle) with `--ids`: a text file with one ad id per line, a
unicode `.npy`, or a Parquet/CSV file with an `ad_id` column, in the matrix's row order.

Validated before anything is stored: one dimension throughout, finite values, unique non-empty
ids, non-zero vectors for the cosine metric, and coverage of the catalog (ids the catalog does not
know, catalog ads without a vector): a partial import needs `allow_partial`, and a version built
from it then holds only the ads in both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from core.common.errors import AdLensError, ValidationError
from core.common.names import validate_name
from core.store.artifacts import save_npy, sha256_file
from core.store.catalog import load_catalog
from core.store.db import make_engine
from core.store.settings import Settings
from core.vectors.store import (
    VectorSet,
    check_finite,
    load_set,
    unchanged,
    vector_column,
    write_set,
)

METRICS = ("ip", "cosine", "l2")
IDS_FILE, VECTORS_FILE = "ad_ids.npy", "vectors.npy"
EXAMPLES = 5


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise AdLensError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)} "
                          "(ip: inner product, cosine: inner product of normalised vectors, l2: Euclidean)")
    return metric


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise AdLensError(f"{path}: {what} file not found") from exc
    except ValueError as exc:
        if "pickle" in str(exc):
            raise AdLensError(f"{path}: an object array that needs pickle, which AdLens never loads; save a "
                              "numeric matrix (np.save(path, x.astype('float32'))) or ids as strings "
                              "(x.astype(str))") from exc
        raise AdLensError(f"{path}: not a readable .npy file ({exc})") from exc


def _read_ids(path: Path) -> np.ndarray:
    path = Path(path)
    if path.suffix == ".npy":
        ids = _read_npy(path, "ids")
        if ids.dtype.kind not in "UO" or ids.ndim != 1:
            raise AdLensError(f"{path}: ids must be a 1-D array of strings; got {ids.dtype} shape {ids.shape}")
        return ids.astype(object)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            return np.asarray(path.read_text().splitlines(), dtype=object)
    except FileNotFoundError as exc:
        raise AdLensError(f"{path}: ids file not found") from exc
    if "ad_id" not in frame.columns:
        raise AdLensError(f"{path}: no ad_id column (columns: {', '.join(map(str, frame.columns))})")
    return frame["ad_id"].astype(object).to_numpy()


def read_ad_vectors(path: Path, ids_path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ad ids, float32 matrix) from a Parquet or `.npy` + ids file, validated (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise AdLensError(f"{path}: file not found")
    if path.suffix == ".npy":
        if ids_path is None:
            raise AdLensError(f"{path}: an .npy matrix needs its ad ids: pass --ids FILE (one id per line, row order)")
        x = _read_npy(path, "vectors")
        if x.ndim != 2 or x.dtype.kind not in "fiu":
            raise AdLensError(f"{path}: expected a 2-D numeric matrix (ads × dimension); got {x.dtype} shape {x.shape}")
        ids = _read_ids(ids_path)
        if len(ids) != len(x):
            raise AdLensError(f"{ids_path}: {len(ids)} ids for {len(x)} matrix rows in {path}; one id per row")
        check_finite(x.astype(np.float64), str(path), ids)
        vectors = x.astype(np.float32)
    elif path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except pa.ArrowException as exc:
            raise AdLensError(f"{path}: not a readable Parquet file ({exc})") from exc
        missing = [c for c in ("ad_id", "vector") if c not in table.column_names]
        if missing:
            raise AdLensError(f"{path}: missing column(s) {', '.join(missing)}; an ad-vectors file has ad_id and "
                              f"vector (columns found: {', '.join(table.column_names)})")
        ids = table["ad_id"].to_pandas().astype(object).to_numpy()
        vectors, null = vector_column(table["vector"], f"{path}, column vector", ids)
        if null.any():
            r = int(np.flatnonzero(null)[0])
            raise AdLensError(f"{path}, column vector: row {r} (ad_id {ids[r]!r}) has no vector "
                              f"({int(null.sum())} row(s)); drop those ads or give them vectors")
    else:
        raise AdLensError(f"{path}: unsupported format {path.suffix!r}; use .parquet (ad_id, vector) or .npy with --ids")
    _check_ids(ids, path)
    if not len(ids):
        raise AdLensError(f"{path}: no rows")
    return ids, vectors


def _check_ids(ids: np.ndarray, where) -> None:
    blank = [i for i, v in enumerate(ids) if not isinstance(v, str) or not v.strip()]
    if blank:
        raise AdLensError(f"{where}: row {blank[0]} has an empty or non-text ad_id ({len(blank)} row(s))")
    dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
    if len(dup):
        raise AdLensError(f"{where}: ad_id {dup[0]!r} appears more than once ({len(dup)} duplicated id(s)); "
                          "keep one vector per ad")


def coverage(catalog_ids, ids) -> dict:
    """How the file's ids and the catalog's ads overlap (counts and a few examples)."""
    cat, got = pd.Index(np.asarray(catalog_ids, dtype=object)), pd.Index(np.asarray(ids, dtype=object))
    unknown, missing = got.difference(cat), cat.difference(got)
    return {"n_file": len(got), "n_catalog": len(cat), "n_common": len(got.intersection(cat)),
            "unknown_ids": len(unknown), "unknown_examples": [str(v) for v in unknown[:EXAMPLES]],
            "catalog_ads_without_vector": len(missing), "missing_examples": [str(v) for v in missing[:EXAMPLES]]}


def check_coverage(cov: dict, allow_partial: bool, where: str) -> None:
    """ValidationError when the file and the catalog differ and a partial build was not asked for."""
    if cov["n_common"] == 0:
        raise AdLensError(f"{where}: none of the {cov['n_file']:,} ad ids is in the catalog "
                          f"(e.g. {cov['unknown_examples'][:3]}); ingest the ads first or fix the ids")
    problems = []
    if cov["unknown_ids"]:
        problems.append(f"{where}: {cov['unknown_ids']:,} ad id(s) unknown to the catalog, e.g. {cov['unknown_examples']}")
    if cov["catalog_ads_without_vector"]:
        problems.append(f"{where}: {cov['catalog_ads_without_vector']:,} catalog ad(s) have no vector, "
                        f"e.g. {cov['missing_examples']}")
    if problems and not allow_partial:
        problems.append(f"pass --allow-partial (allow_partial=True) to use only the {cov['n_common']:,} ads in both")
        raise ValidationError(problems)


def source_sha256(path: Path, ids_path: Path | None) -> str:
    """sha256 of the file (of both files, in order, for .npy + ids)."""
    if ids_path is None:
        return sha256_file(path)
    return hashlib.sha256((sha256_file(path) + sha256_file(Path(ids_path))).encode()).hexdigest()


def import_ad_vectors(settings: Settings, path: Path, name: str, *, metric: str = "ip",
                      ids_path: Path | None = None, allow_partial: bool = False,
                      engine: Engine | None = None) -> dict:
    """Validate and store an ad-vectors file as set `name`; returns its manifest (with
    `unchanged: True` when this file was already imported under this name)."""
    validate_name(name, "vectors")
    check_metric(metric)
    path = Path(path)
    if not path.is_file():
        raise AdLensError(f"{path}: file not found")
    sha = source_sha256(path, ids_path)
    prior = unchanged(settings, name, "ads", sha, metric)
    if prior is not None:
        return prior
    ids, vectors = read_ad_vectors(path, ids_path)
    if metric == "cosine":
        zero = np.flatnonzero(np.linalg.norm(vectors, axis=1) == 0)
        if len(zero):
            raise AdLensError(f"{path}: row {int(zero[0])} (ad_id {ids[zero[0]]!r}) is all zeros, which has no "
                              f"direction for the cosine metric ({len(zero)} row(s)); use --metric ip or l2")
    catalog = load_catalog(engine or make_engine(settings.db_url), with_impressions=False)
    if catalog.n_ads == 0:
        raise AdLensError("the catalog has no ads: run `adlens ingest DIR` first, so the vectors can be checked against it")
    cov = coverage(catalog.ads["ad_id"], ids)
    check_coverage(cov, allow_partial, str(path))
    order = np.argsort(ids.astype(str), kind="stable")  # stored sorted by id, like every version

    def write(tmp: Path) -> None:
        save_npy(tmp / IDS_FILE, ids[order].astype(str))
        save_npy(tmp / VECTORS_FILE, vectors[order])

    manifest = {"kind": "ads", "metric": metric, "dim": int(vectors.shape[1]), "n": len(ids),
                "source": {"file": path.name, "sha256": sha, "format": path.suffix.lstrip("."),
                           "ids_file": Path(ids_path).name if ids_path else None},
                "allow_partial": allow_partial, "coverage": cov}
    return write_set(settings, name, manifest, write)


def load_ad_vectors(settings: Settings, name: str) -> tuple[VectorSet, np.ndarray, np.ndarray]:
    """(set, ad ids sorted, float32 vectors) of imported ad vectors `name` (verified)."""
    vs = load_set(settings, name, "ads")
    ids, vectors = vs.array(IDS_FILE).astype(object), vs.array(VECTORS_FILE).astype(np.float32, copy=False)
    if vectors.shape != (vs.manifest["n"], vs.dim) or len(ids) != len(vectors):
        raise AdLensError(f"{vs.path}: arrays do not match the manifest ({vectors.shape}, {len(ids)} ids)")
    return vs, ids, vectors
