"""The store of imported vector sets: `<workspace>/vectors/<name>/` holds the arrays and a
`manifest.json` (kind, source file and its sha256, metric, dimension, counts, sha256 of every file).

A set is immutable and keyed by its source file's sha256: importing the same file under the same
name again is a no-op; another file under an existing name is refused. Written to a staging folder
and renamed into place, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.common.errors import AdLensError, ArtifactError, NotFoundError
from core.common.names import validate_name
from core.store.artifacts import (
    atomic_write_json,
    fsync_dir,
    fsync_tree,
    hash_tree,
    load_npy,
    staging_dir,
    verify_files,
)
from core.store.debris import clean_debris
from core.store.settings import Settings

MANIFEST = "manifest.json"
KINDS = ("ads", "requests")


def vectors_root(settings: Settings) -> Path:
    return settings.vectors_dir


@dataclass
class VectorSet:
    """A loaded, verified imported set (arrays are read by the kind's module)."""

    name: str
    path: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def array(self, file: str) -> np.ndarray:
        return load_npy(self.path / file)


def existing(settings: Settings) -> list[str]:
    root = vectors_root(settings)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())


def load_set(settings: Settings, name: str, kind: str | None = None) -> VectorSet:
    """Load and verify imported set `name` (sha256 of every file); `kind` checks it is ads/requests."""
    validate_name(name, "vectors")
    path = vectors_root(settings) / name
    if not (path / MANIFEST).is_file():
        have = ", ".join(existing(settings)) or "none; import one with `adlens import-vectors ads|requests FILE --name N`"
        raise NotFoundError(f"no imported vectors {name!r} in {vectors_root(settings)}; existing: {have}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        verify_files(path, manifest["files"])
    except (ValueError, KeyError) as exc:
        raise ArtifactError(f"{path / MANIFEST}: not a valid manifest ({exc})") from exc
    if kind is not None and manifest.get("kind") != kind:
        raise AdLensError(f"imported vectors {name!r} are {manifest.get('kind')} vectors, not {kind}; "
                          f"import {kind} vectors with `adlens import-vectors {kind} FILE --name N`")
    return VectorSet(name, path, manifest)


def list_sets(settings: Settings) -> list[dict]:
    """Manifest summaries of every imported set."""
    out = []
    for name in existing(settings):
        m = json.loads((vectors_root(settings) / name / MANIFEST).read_text())
        out.append({k: m.get(k) for k in ("name", "kind", "metric", "dim", "n", "created_at")}
                   | {"source_sha256": (m.get("source") or {}).get("sha256", "")[:12]})
    return out


def unchanged(settings: Settings, name: str, kind: str, source_sha256: str, metric: str | None) -> dict | None:
    """The existing manifest if `name` already holds this very import (a no-op), None if the name
    is free; AdLensError if it holds something else (sets are immutable)."""
    path = vectors_root(settings) / name / MANIFEST
    if not path.is_file():
        return None
    m = load_set(settings, name).manifest
    same = m.get("kind") == kind and m["source"]["sha256"] == source_sha256 and m.get("metric") == metric
    if not same:
        raise AdLensError(f"imported vectors {name!r} already exist ({m.get('kind')}, metric {m.get('metric')}, "
                          f"file sha256 {m['source']['sha256'][:12]}…); imports are immutable: pick a new name")
    return {**m, "unchanged": True}


def write_set(settings: Settings, name: str, manifest: dict, writer: Callable[[Path], None]) -> dict:
    """Write a new set atomically: `writer(staging)` writes the arrays, then the manifest is
    completed (files, created_at), fsynced, and the folder renamed into place."""
    validate_name(name, "vectors")
    root = vectors_root(settings)
    clean_debris(settings, under=root)
    with staging_dir(root, name) as tmp:
        writer(tmp)
        manifest = {**manifest, "name": name,
                    "created_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
                    "files": hash_tree(tmp, exclude=(MANIFEST,))}
        atomic_write_json(tmp / MANIFEST, manifest)
        fsync_tree(tmp)
        try:
            os.rename(tmp, root / name)
        except OSError as exc:
            raise AdLensError(f"imported vectors {name!r} already exist ({root / name}); pick a new name") from exc
        fsync_dir(root)
    return {**manifest, "unchanged": False}


def vector_column(column: pa.ChunkedArray | pa.Array, where: str, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """A Parquet list / fixed-size-list column of numbers as (float32 matrix, null-row mask).

    Null rows are zero in the matrix and True in the mask; rows of another length than the first
    non-null one, null or NaN/inf elements are refused with the row number."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise AdLensError(f"{where}: the vector column has type {col.type}; expected a list of floats "
                          "(e.g. pyarrow list<float32> or a fixed_size_list)")
    if not (pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)):
        raise AdLensError(f"{where}: vector elements have type {col.type.value_type}; expected numbers")
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
    lengths = np.asarray(pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    if (~null).sum() == 0:
        return np.zeros((len(col), 0), np.float32), null
    dim = int(lengths[~null][0])
    bad = np.flatnonzero(~null & (lengths != dim))
    if len(bad):
        raise AdLensError(f"{where}: row {int(bad[0])} has a vector of {int(lengths[bad[0]])} values but row "
                          f"{int(np.flatnonzero(~null)[0])} has {dim}; every vector must have one dimension "
                          f"({len(bad)} row(s) differ)")
    if dim == 0:
        raise AdLensError(f"{where}: the vectors are empty (0 values per row)")
    flat = pc.list_flatten(col)
    if flat.null_count:
        raise AdLensError(f"{where}: a vector contains null elements; every element must be a finite number")
    values = np.asarray(flat.to_numpy(zero_copy_only=False), np.float64)
    out = np.zeros((len(col), dim), np.float64)
    out[~null] = values.reshape(-1, dim)
    check_finite(out, where, labels)
    return out.astype(np.float32), null


def check_finite(matrix: np.ndarray, where: str, labels=None) -> None:
    """AdLensError naming the first row with NaN or inf (and its label) and how many there are."""
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        label = f" ({labels[bad[0]]!r})" if labels is not None else ""
        raise AdLensError(f"{where}: row {int(bad[0])}{label} has NaN or infinite values ({len(bad)} row(s)); "
                          "every vector must be finite: fix or drop those rows")
