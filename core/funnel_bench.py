"""Funnel latency: p50/p99 per stage and in total over many requests, and why-not latency.

`adlens bench` calls `bench_funnel(engine, requests, params)` with real logged requests
(`core.request.sample_requests`). One warm-up request runs first (first-call allocations).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from core.explain import why_not
from core.funnel import FunnelEngine, FunnelParams
from core.request import Request


def _requests(requests) -> list[Request]:
    if isinstance(requests, pd.DataFrame):
        out = []
        for r in requests.itertuples(index=False):
            c = None if r.community_id is None or (isinstance(r.community_id, float) and np.isnan(r.community_id)) \
                else str(r.community_id)
            out.append(Request(str(r.user_id), c, str(r.placement), str(r.device), str(r.country),
                               pd.Timestamp(r.ts).to_pydatetime()))
        return out
    return list(requests)


def _pct(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if not len(a):
        return {"p50": None, "p99": None, "mean": None}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def bench_funnel(engine: FunnelEngine, requests, params: FunnelParams | None = None,
                 why_not_samples: int = 20, seed: int = 0) -> dict:
    """Latency report (milliseconds) for `requests` (a requests frame or a list of Request).

    Why-not is timed on `why_not_samples` (request, ad) pairs: the ad is drawn from each
    request's retrieved candidates or, every other time, from the whole version (usually not
    retrieved: the costly counterfactual path)."""
    params = params or FunnelParams()
    reqs = _requests(requests)
    if not reqs:
        return {"n_requests": 0}
    engine.run(reqs[0], params)  # warm-up
    stages: dict[str, list[float]] = {}
    traces = []
    for r in reqs:
        tr = engine.run(r, params)
        for k, v in tr.stage_timings_ms.items():
            stages.setdefault(k, []).append(v)
        traces.append(tr)
    rng = np.random.default_rng(seed)
    wn: list[float] = []
    for i in range(min(why_not_samples, len(reqs))):
        tr = traces[i]
        if i % 2 == 0 and len(tr.candidates):
            ad = tr.candidates["ad_id"].iloc[int(rng.integers(len(tr.candidates)))]
        else:
            ad = engine.version.ad_ids[int(rng.integers(engine.n_ads))]
        t0 = time.perf_counter()
        why_not(engine, reqs[i], str(ad), params)
        wn.append((time.perf_counter() - t0) * 1e3)
    return {
        "n_requests": len(reqs),
        "n_ads": engine.n_ads,
        "index": getattr(engine.version.index, "factory", None),
        "k": params.k,
        "search_params": {**(getattr(engine.version, "search_params", None) or {}), **(params.search_params or {})},
        "stages_ms": {k: _pct(v) for k, v in stages.items()},
        "total_ms": _pct(stages.get("total", [])),
        "why_not_ms": _pct(wn),
        "engine_build_ms": engine.build_ms,
    }
