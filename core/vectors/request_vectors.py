"""`adlens import-vectors requests FILE --name N`: precomputed request (query) vectors.

Parquet with `user_id` and `vector` (list of numbers), and optionally the context columns
`community_id` (or `community`), `placement`, `device` and a `ts` timestamp. A null context
value or ts is a wildcard. Which row a request uses is decided by
core.tower.request_encoder.RequestVectorsEncoder (the user's latest row at or before the request
that matches its context, most specific first).

Rows without a user_id or without a vector are skipped and reported; a file with no usable row,
vectors of different lengths, NaN/inf or an unparseable ts are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.common.errors import AdLensError
from core.common.names import validate_name
from core.store.artifacts import save_npy, save_parquet, sha256_file
from core.store.settings import Settings
from core.tower.request_encoder import (
    CONTEXT_COLUMNS,
    ROWS_FILE,
    VECTORS_FILE,
    RequestVectorsEncoder,
)
from core.vectors.store import load_set, unchanged, vector_column, write_set

ALIASES = {"community": "community_id"}


def read_request_vectors(path: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """(key rows with source_row, float32 vectors, report of skipped rows) from a Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise AdLensError(f"{path}: file not found")
    if path.suffix != ".parquet":
        raise AdLensError(f"{path}: unsupported format {path.suffix!r}; request vectors are a .parquet file "
                          "with user_id, vector and optional community_id, placement, device, ts")
    try:
        table = pq.read_table(path)
    except pa.ArrowException as exc:
        raise AdLensError(f"{path}: not a readable Parquet file ({exc})") from exc
    table = table.rename_columns([ALIASES.get(c, c) for c in table.column_names])
    missing = [c for c in ("user_id", "vector") if c not in table.column_names]
    if missing:
        raise AdLensError(f"{path}: missing column(s) {', '.join(missing)}; a request-vectors file has user_id, "
                          f"vector and optional {', '.join(CONTEXT_COLUMNS)}, ts (found: {', '.join(table.column_names)})")
    vectors, null_vec = vector_column(table["vector"], f"{path}, column vector")
    keys = table.drop_columns(["vector"]).to_pandas()
    rows = pd.DataFrame({"source_row": np.arange(len(keys), dtype=np.int64)})
    rows["user_id"] = keys["user_id"].astype(object).where(keys["user_id"].notna(), None)
    for c in CONTEXT_COLUMNS:
        rows[c] = keys[c].astype(object).where(keys[c].notna(), None) if c in keys else None
    rows["ts"] = _parse_ts(keys["ts"], path) if "ts" in keys else pd.NaT
    no_user = rows["user_id"].map(lambda u: not isinstance(u, str) or not u.strip()).to_numpy(bool)
    usable = ~no_user & ~null_vec
    report = {"n_file": len(rows), "n_usable": int(usable.sum()), "skipped_no_user": int(no_user.sum()),
              "skipped_no_vector": int((null_vec & ~no_user).sum()),
              "skipped_rows": [int(r) for r in np.flatnonzero(~usable)[:5]]}
    if not usable.any():
        raise AdLensError(f"{path}: no usable rows ({len(rows)} row(s): {report['skipped_no_user']} without a "
                          f"user_id, {report['skipped_no_vector']} without a vector); every row needs both")
    report["users"] = int(rows.loc[usable, "user_id"].nunique())
    return rows[usable].reset_index(drop=True), vectors[usable], report


def _parse_ts(values: pd.Series, path: Path) -> pd.Series:
    ts = pd.to_datetime(values, errors="coerce", utc=True)
    bad = np.flatnonzero(ts.isna().to_numpy() & values.notna().to_numpy())
    if len(bad):
        raise AdLensError(f"{path}, column ts: row {int(bad[0])} has {values.iloc[bad[0]]!r}, not a timestamp "
                          f"({len(bad)} row(s)); use ISO 8601 (2026-05-01T12:00:00) or a Parquet timestamp")
    return ts.dt.tz_localize(None)


def import_request_vectors(settings: Settings, path: Path, name: str) -> dict:
    """Validate and store a request-vectors file as set `name`; returns its manifest (with
    `unchanged: True` when this file was already imported under this name)."""
    validate_name(name, "vectors")
    path = Path(path)
    if not path.is_file():
        raise AdLensError(f"{path}: file not found")
    sha = sha256_file(path)
    prior = unchanged(settings, name, "requests", sha, None)
    if prior is not None:
        return prior
    rows, vectors, report = read_request_vectors(path)

    def write(tmp: Path) -> None:
        save_parquet(tmp / ROWS_FILE, rows)
        save_npy(tmp / VECTORS_FILE, vectors)

    manifest = {"kind": "requests", "metric": None, "dim": int(vectors.shape[1]), "n": len(rows),
                "source": {"file": path.name, "sha256": sha, "format": "parquet"},
                "context_columns": [c for c in CONTEXT_COLUMNS if rows[c].notna().any()],
                "has_ts": bool(rows["ts"].notna().any()), "report": report}
    return write_set(settings, name, manifest, write)


def request_vectors_encoder(settings: Settings, name: str) -> RequestVectorsEncoder:
    """The query encoder over imported request vectors `name` (verified)."""
    vs = load_set(settings, name, "requests")
    return RequestVectorsEncoder(pd.read_parquet(vs.path / ROWS_FILE), vs.array(VECTORS_FILE),
                                 name=name, source_sha256=vs.manifest["source"]["sha256"])
