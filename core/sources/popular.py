"""`popular_in_context`: the ads most clicked in the request's context over a trailing window.

Build: the training-side clicks grouped by scope (the community, the placement, the user's
country, and everything: "global"), each group sorted by time, stored as NPY arrays.
Request: the window is the `window_days` before the request's hour (clicks strictly before that
hour, so a request never sees its own hour's clicks); ads are taken from the narrowest scope
first (community, else placement, then country, then global) by click count, each wider scope
filling what is left of K. The ranking depends only on (scope, hour): it is computed once per
pair and memoised (a bounded, thread-safe cache), so a request is a few dictionary lookups.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd

from core.data.request import Request, request_arrays
from core.sources.base import (
    CandidateSource,
    RetrieveOptions,
    SourceBuildContext,
    SourceExplanation,
    pad,
)
from core.store.artifacts import load_npy, save_npy

DEFAULTS = {"window_days": 14}
HOUR_NS = 3600 * 10**9
CACHE_SIZE = 512


def scope_keys(community_id, placement, country) -> list[str]:
    """The request's scopes, narrowest first."""
    keys = [f"community:{community_id}"] if community_id is not None and not pd.isna(community_id) else []
    return keys + [f"placement:{placement}", f"country:{country}", "global"]


def _hour(ts) -> int:
    t = int(np.datetime64(ts, "ns").astype(np.int64)) if not isinstance(ts, pd.Timestamp) else \
        int(ts.as_unit("ns").value)
    return t - t % HOUR_NS


class PopularSource(CandidateSource):
    name = "popular_in_context"
    files = ("scopes.npy", "indptr.npy", "ts.npy", "positions.npy")

    def __init__(self, params: dict, n_ads: int, scopes: np.ndarray, indptr: np.ndarray, ts: np.ndarray,
                 pos: np.ndarray):
        super().__init__({**DEFAULTS, **params}, n_ads)
        self.scopes, self.indptr, self.ts, self.pos = scopes, indptr, ts, pos
        for a in (indptr, ts, pos):
            a.setflags(write=False)
        self._slot = {str(s): i for i, s in enumerate(scopes)}
        self._window = int(float(self.params["window_days"]) * 24 * HOUR_NS)
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    @classmethod
    def build(cls, ctx: SourceBuildContext, **params) -> "PopularSource":
        imps, reqs = ctx.train_impressions, ctx.train_requests
        clicked = imps["clicked"].astype(bool).to_numpy() if len(imps) else np.zeros(0, bool)
        pos = ctx.positions(imps["ad_id"].to_numpy()) if len(imps) else np.empty(0, np.int64)
        keep = clicked & (pos >= 0)
        r = reqs[keep]
        ts = pd.to_datetime(r["ts"]).to_numpy(dtype="datetime64[ns]").astype(np.int64)
        pos = pos[keep]
        parts = []
        for col, prefix in (("community_id", "community"), ("placement", "placement"), ("country", "country")):
            vals = r[col].astype(object).to_numpy()
            ok = pd.notna(vals)
            parts.append((np.array([f"{prefix}:{v}" for v in vals[ok]], dtype=object), ts[ok], pos[ok]))
        parts.append((np.full(len(ts), "global", dtype=object), ts, pos))
        keys = np.concatenate([p[0] for p in parts]) if len(ts) else np.empty(0, object)
        all_ts = np.concatenate([p[1] for p in parts]) if len(ts) else np.empty(0, np.int64)
        all_pos = np.concatenate([p[2] for p in parts]) if len(ts) else np.empty(0, np.int64)
        order = np.lexsort((all_ts, keys.astype(str))) if len(keys) else np.empty(0, np.int64)
        keys, all_ts, all_pos = keys[order], all_ts[order], all_pos[order]
        scopes, starts = np.unique(keys.astype(str), return_index=True) if len(keys) else (np.empty(0, str), [])
        indptr = np.r_[np.asarray(starts, np.int64), len(keys)].astype(np.int64)
        return cls({**DEFAULTS, **params}, ctx.n_ads, scopes.astype(str), indptr, all_ts.astype(np.int64),
                   all_pos.astype(np.int32))

    def save(self, directory: Path) -> None:
        for name, arr in zip(self.files, (self.scopes, self.indptr, self.ts, self.pos)):
            save_npy(directory / name, arr)

    @classmethod
    def load(cls, directory: Path, params: dict, n_ads: int) -> "PopularSource":
        arrays = [load_npy(directory / f) for f in cls.files]
        return cls(params, n_ads, *arrays)

    def stats(self) -> dict:
        return {**super().stats(), "scopes": int(len(self.scopes)),
                "clicks": int(self.indptr[self._slot["global"] + 1] - self.indptr[self._slot["global"]])
                if "global" in self._slot else 0}

    def ranking(self, scope: str, hour: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, click counts) of `scope` over the window before `hour`, most clicked first."""
        slot = self._slot.get(scope)
        if slot is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        key = (slot, hour)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        a, b = int(self.indptr[slot]), int(self.indptr[slot + 1])
        ts = self.ts[a:b]
        lo = a + int(np.searchsorted(ts, hour - self._window, side="left"))
        hi = a + int(np.searchsorted(ts, hour, side="left"))
        uniq, counts = np.unique(self.pos[lo:hi], return_counts=True)
        order = np.lexsort((uniq, -counts))
        res = (uniq[order].astype(np.int64), counts[order].astype(np.float32))
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = res
        return res

    def _one(self, community_id, placement, country, ts, k: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        hour = _hour(ts)
        picked_p, picked_s, picked_scope = [], [], []
        seen = None  # bool [n_ads] once a scope has picked ads (a scope's ranking has no repeats)
        n_seen = 0
        for scope in scope_keys(community_id, placement, country):
            if n_seen >= k:
                break
            p, s = self.ranking(scope, hour)
            if seen is not None:
                new = ~seen[p]
                p, s = p[new], s[new]
            p, s = p[:k - n_seen], s[:k - n_seen]
            picked_p.append(p)
            picked_s.append(s)
            picked_scope += [scope] * len(p)
            if len(p):
                if seen is None:
                    seen = np.zeros(self.n_ads, bool)
                seen[p] = True
                n_seen += len(p)
        pos = np.concatenate(picked_p) if picked_p else np.empty(0, np.int64)
        sc = np.concatenate(picked_s) if picked_s else np.empty(0, np.float32)
        return pos, sc, picked_scope

    def retrieve(self, requests, k, options=None):
        b = request_arrays(requests)
        rows = [self._one(c, p, co, t, k)[:2] for c, p, co, t in zip(b.community_id, b.placement, b.country, b.ts)]
        return pad(rows, k)

    def explain(self, request: Request, ad_pos: int, k: int, options: RetrieveOptions | None = None
                ) -> SourceExplanation:
        pos, sc, scopes = self._one(request.community_id, request.placement, request.country, request.ts,
                                    self.n_ads)
        days = float(self.params["window_days"])
        since = pd.Timestamp(_hour(request.ts)).isoformat(sep=" ")
        hit = np.flatnonzero(pos == ad_pos)
        if not len(hit):
            where = ", ".join(s.replace(":", " ") for s in scope_keys(request.community_id, request.placement,
                                                                       request.country))
            return SourceExplanation(self.name, None, None, f"popular_in_context: no clicks on this ad in the "
                                                            f"{days:g} days before {since} ({where})")
        r = int(hit[0]) + 1
        scope = scopes[hit[0]].replace(":", " ")
        detail = f"{int(sc[hit[0]])} click(s) in {scope} over the {days:g} days before {since}"
        if r <= k:
            return SourceExplanation(self.name, r, float(sc[hit[0]]), f"popular_in_context: rank {r:,}, {detail}, "
                                                                      f"K = {k:,}", True)
        return SourceExplanation(self.name, r, float(sc[hit[0]]), f"popular_in_context: rank {r:,} > K = {k:,} "
                                                                  f"({detail})")

    def reachable(self) -> np.ndarray:
        out = np.zeros(self.n_ads, bool)
        out[self.pos] = True
        return out
