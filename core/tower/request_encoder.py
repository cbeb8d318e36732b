"""Precomputed request vectors as a query encoder: the team's production user tower already ran.

The encoder folder holds `rows.parquet` (source_row, user_id, community_id, placement, device,
ts; a null context value or ts is a wildcard) and `vectors.npy` (one float32 row per key row).
A request uses the user's row that matches its context (every non-null context value equal to the
request's) at or before its time, most specific first (most non-null context values), then the
latest; ties go to the later row in the file. With no matching row the request gets the mean of
all request vectors, and `describe_requests` says so (the Trace shows which row was used).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.features import FeatureStore
from core.store.artifacts import load_npy, load_parquet, save_npy, save_parquet
from core.tower.query_encoder import QueryEncoder

CONTEXT_COLUMNS: tuple[str, ...] = ("community_id", "placement", "device")
ROWS_FILE, VECTORS_FILE = "rows.parquet", "vectors.npy"
NO_TS = np.iinfo(np.int64).min  # a row without ts is valid from the beginning of time


def _ns(values) -> np.ndarray:
    ts = pd.to_datetime(pd.Series(values))
    return np.where(ts.isna(), NO_TS, ts.to_numpy(dtype="datetime64[ns]").astype(np.int64))


class RequestVectorsEncoder(QueryEncoder):
    """Look up each request's vector in an imported table of request vectors."""

    kind = "request_vectors"

    def __init__(self, rows: pd.DataFrame, vectors: np.ndarray, *, name: str | None = None,
                 source_sha256: str | None = None):
        self.rows = rows.reset_index(drop=True)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.name, self.source_sha256 = name, source_sha256
        self.dim = int(self.vectors.shape[1])
        self.fallback = self.vectors.mean(0).astype(np.float32)
        self._ts = _ns(self.rows["ts"])
        self._ctx = {c: self.rows[c].astype(object).where(self.rows[c].notna(), None).to_numpy(dtype=object)
                     for c in CONTEXT_COLUMNS}
        self._specificity = sum(np.array([x is not None for x in v], np.int64) for v in self._ctx.values())
        self._by_user = {u: np.asarray(ix, np.int64) for u, ix in self.rows.groupby("user_id", sort=False).indices.items()}

    def lookup(self, requests: pd.DataFrame) -> np.ndarray:
        """Row index (into `rows`) used for each request; -1 where no row matches."""
        out = np.full(len(requests), -1, np.int64)
        ts = _ns(requests["ts"]) if len(requests) else np.empty(0, np.int64)
        ctx = {c: requests[c].to_numpy(dtype=object) if c in requests else np.full(len(requests), None)
               for c in CONTEXT_COLUMNS}
        for i, user in enumerate(requests["user_id"].to_numpy(dtype=object)):
            rows = self._by_user.get(user)
            if rows is None:
                continue
            ok = self._ts[rows] <= ts[i]
            for c in CONTEXT_COLUMNS:
                want = ctx[c][i]
                have = self._ctx[c][rows]
                ok &= np.array([h is None or (want is not None and h == want) for h in have], bool)
            cand = rows[ok]
            if len(cand):  # most specific, then latest, then last in the file
                out[i] = cand[np.lexsort((cand, self._ts[cand], self._specificity[cand]))[-1]]
        return out

    def encode_requests(self, requests: pd.DataFrame, features: FeatureStore) -> np.ndarray:
        hit = self.lookup(requests)
        out = np.repeat(self.fallback[None, :], len(requests), axis=0)
        out[hit >= 0] = self.vectors[hit[hit >= 0]]
        return out

    def describe_requests(self, requests: pd.DataFrame, features: FeatureStore) -> list[dict]:
        out = []
        for r in self.lookup(requests):
            if r < 0:
                out.append({"encoder": self.kind, "matched": False,
                            "detail": "no request-vectors row for this user matches the context at or before "
                                      f"the request time; used the mean of all {len(self.rows):,} request vectors"})
                continue
            row = self.rows.iloc[int(r)]
            ctx = {c: row[c] for c in CONTEXT_COLUMNS if row[c] is not None and not pd.isna(row[c])}
            out.append({"encoder": self.kind, "matched": True, "row": int(row["source_row"]),
                        "ts": None if pd.isna(row["ts"]) else pd.Timestamp(row["ts"]).isoformat(),
                        "context": ctx, "specificity": len(ctx),
                        "detail": f"row {int(row['source_row'])} of the imported file"})
        return out

    def config(self) -> dict:
        return {"kind": self.kind, "name": self.name, "source_sha256": self.source_sha256, "dim": self.dim,
                "n_rows": len(self.rows)}

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_parquet(directory / ROWS_FILE, self.rows)
        save_npy(directory / VECTORS_FILE, self.vectors)
        (directory / "config.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, directory: Path) -> "RequestVectorsEncoder":
        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        return cls(load_parquet(directory / ROWS_FILE), load_npy(directory / VECTORS_FILE),
                   name=cfg.get("name"), source_sha256=cfg.get("source_sha256"))
