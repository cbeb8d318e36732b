"""Per-user features for query encoders: click history before a time, and profiles.

Built once from a Catalog and the ad text embeddings; lookups are array slices (no SQL).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.data.request import request_arrays
from core.store.catalog import Catalog


def _to_ns(ts) -> np.ndarray:
    if isinstance(ts, np.ndarray) and ts.dtype.kind == "M":  # already datetime64: skip pandas (fast path)
        return ts.astype("datetime64[ns]").astype(np.int64)
    return pd.to_datetime(pd.Series(ts)).to_numpy(dtype="datetime64[ns]").astype(np.int64)


class FeatureStore:
    """Click histories aligned to `ad_ids` (the rows of `ad_text_vectors`) and user profiles.

    `ad_ids` must be sorted (as `Catalog.ads.ad_id` is) so ids map to rows by binary search.
    """

    def __init__(self, catalog: Catalog, ad_ids: np.ndarray, ad_text_vectors: np.ndarray):
        ad_ids = np.asarray(ad_ids, dtype=object)
        if len(ad_ids) != len(ad_text_vectors):
            raise ValueError(
                f"ad_ids ({len(ad_ids)}) and ad_text_vectors ({len(ad_text_vectors)}) differ in length"
            )
        self.catalog = catalog
        self.ad_ids = ad_ids
        self.ad_text_vectors = np.ascontiguousarray(ad_text_vectors, dtype=np.float32)
        self.dim = int(self.ad_text_vectors.shape[1])
        self._ad_pos = pd.Index(ad_ids)
        imps = catalog.impressions
        clicks = imps[imps["clicked"].astype(bool)] if len(imps) else imps
        pos = self.ad_positions(clicks["ad_id"].to_numpy()) if len(clicks) else np.empty(0, np.int64)
        keep = pos >= 0
        clicks = clicks[keep]
        # Catalog.impressions is sorted by (user_id, ts): each user's clicks are one slice.
        self._click_user = clicks["user_id"].to_numpy(dtype=object)
        self._click_ts = _to_ns(clicks["ts"]) if len(clicks) else np.empty(0, np.int64)
        self._click_pos = pos[keep].astype(np.int64)
        starts: dict[str, tuple[int, int]] = {}
        if len(clicks):
            u = self._click_user
            bounds = np.flatnonzero(np.r_[True, u[1:] != u[:-1], True])
            for a, b in zip(bounds[:-1], bounds[1:]):
                starts[u[a]] = (int(a), int(b))
        self._slices = starts
        counts = np.bincount(self._click_pos, minlength=len(ad_ids)).astype(np.float64)
        self.click_counts = counts
        # Cold-start fallback: the popularity-weighted mean of clicked ads (or of all ads).
        w = counts if counts.sum() > 0 else np.ones(len(ad_ids))
        g = (w[:, None] * self.ad_text_vectors).sum(0) if len(ad_ids) else np.zeros(self.dim)
        self.global_mean = (g / max(np.linalg.norm(g), 1e-12)).astype(np.float32)
        self.users = catalog.users.set_index("user_id", drop=False) if len(catalog.users) else catalog.users

    def ad_positions(self, ad_ids) -> np.ndarray:
        """Row of each ad id in `ad_ids`; -1 for ids not in the catalog."""
        return self._ad_pos.get_indexer(pd.Index(np.asarray(ad_ids, dtype=object)))

    def click_histories(self, user_ids, before, limit: int | None = None) -> list[np.ndarray]:
        """Rows of the ads each user clicked strictly before its time, oldest first (the last `limit`);
        times are converted in one call (fast)."""
        ts = _to_ns(before) if len(user_ids) else np.empty(0, np.int64)
        return [self._history_rows(u, t, limit) for u, t in zip(user_ids, ts)]

    def _history_rows(self, user_id: str, t: int, limit: int | None) -> np.ndarray:
        sl = self._slices.get(user_id)
        if sl is None:
            return np.empty(0, np.int64)
        a, b = sl
        end = a + int(np.searchsorted(self._click_ts[a:b], t, side="left"))
        start = a if limit is None else max(a, end - limit)
        return self._click_pos[start:end]

    def history_means(self, requests: pd.DataFrame, limit: int | None = 50) -> tuple[np.ndarray, np.ndarray]:
        """Mean text embedding of each request's prior clicks (zeros if none) and the click counts."""
        out = np.zeros((len(requests), self.dim), np.float32)
        counts = np.zeros(len(requests), np.int64)
        b = request_arrays(requests)
        histories = self.click_histories(b.user_id, b.ts, limit)
        for i, rows in enumerate(histories):
            counts[i] = len(rows)
            if len(rows):
                out[i] = self.ad_text_vectors[rows].mean(0)
        return out, counts

