"""Index health for one version: recall-vs-effort curve, IVF list balance, dead ads, hub ads,
for the serving backend its shards (sizes, balance, per-shard latency, share of results), per
candidate source its coverage (ads it can ever return) and dead ads, and per rule of the version's
funnel how often it fails candidates (core.analysis.rule_health).

Everything is measured against the exact-search oracle on a seeded sample of real requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.analysis.rule_health import rule_rates
from core.analysis.sources import source_coverage
from core.common.jsonio import to_jsonable
from core.common.progress import Progress, report
from core.data.features import FeatureStore
from core.data.request import sample_requests
from core.index.ann import recall_at, similarity
from core.sources.registry import load_sources
from core.store.catalog import Catalog

NPROBE_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
EF_GRID = (16, 32, 64, 128, 256, 512, 1024)
RULE_REQUESTS = 100
"""The funnel-rule section samples at most this many users: a funnel run per request is most of
the report's time (on the demo 2.8 of 4.5 s at 200 requests), and 100 requests give the same flags
and shares within a fraction of a point there."""
HUB_FACTOR = 10.0
"""An ad is a hub when it is retrieved for ≥ HUB_FACTOR × the share an ad gets on average."""


@dataclass
class HealthReport:
    version: str
    kind: str
    k: int
    n_requests: int
    curve: pd.DataFrame  # param, value, recall_at_k, p50_ms, p99_ms, is_default
    ivf_lists: dict | None  # nlist, imbalance_factor, empty_lists, largest lists, sizes
    dead_ads: pd.DataFrame  # ad_id, vertical, title, best_score, reason
    dead_by_vertical: pd.DataFrame
    hub_ads: pd.DataFrame  # ad_id, vertical, title, share, expected_share
    tower_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    shards: dict | None = None  # backend, per-shard sizes, bytes, latency, share of results; balance
    sources: dict = field(default_factory=dict)  # per source: coverage and dead ads (core.analysis.sources)
    rules: dict | None = None  # per funnel rule: fail and primary-reason shares (core.analysis.rule_health)

    def to_dict(self) -> dict:
        return {
            "version": self.version, "kind": self.kind, "k": self.k, "n_requests": self.n_requests,
            "curve": self.curve.to_dict("records"), "ivf_lists": self.ivf_lists,
            "dead_ads": {"count": len(self.dead_ads), "by_vertical": self.dead_by_vertical.to_dict("records"),
                         "examples": self.dead_ads.head(50).to_dict("records")},
            "hub_ads": self.hub_ads.to_dict("records"), "tower_metrics": self.tower_metrics,
            "shards": self.shards,
            "sources": self.sources,
            "rules": to_jsonable(self.rules),
            "seconds": round(self.seconds, 3),
        }


def sample_query_vectors(version, catalog: Catalog, n: int, seed: int = 0,
                         features: FeatureStore | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """A seeded sample of real logged requests and their query vectors under `version`."""
    reqs = sample_requests(catalog.impressions, catalog.users, n, seed)
    if len(reqs) == 0:
        return reqs, np.zeros((0, version.ad_vectors.shape[1]), np.float32)
    features = features or FeatureStore(catalog, version.ad_ids, version.ad_text_vectors)
    return reqs, version.encoder.encode_requests(reqs, features)


def _timed_search(version, queries: np.ndarray, k: int, params: dict) -> tuple[list, np.ndarray]:
    results, times = [], []
    for q in queries:
        t = time.perf_counter()
        results.extend(version.index.search(q, k, params))
        times.append((time.perf_counter() - t) * 1000)
    return results, np.asarray(times)


def recall_curve(version, queries: np.ndarray, k: int, exact: list,
                 progress: Progress | None = None) -> pd.DataFrame:
    """Recall@k against exact and latency per query at each nprobe (IVF) or efSearch (HNSW);
    `progress(fraction, step)` after each grid value."""
    index, kind = version.index, version.index.kind
    default = version.search_params or {}
    if kind in ("ivf", "ivfpq"):
        name, grid = "nprobe", [v for v in NPROBE_GRID if v <= index.nlist]
        if index.nlist not in grid:
            grid.append(index.nlist)
    elif kind == "hnsw":
        name, grid = "efSearch", [v for v in EF_GRID if v >= min(k, 16)]
    else:
        name, grid = "exact", [0]
    rows = []
    values = sorted(set(grid) | ({default[name]} if name in default else set()))
    for i, v in enumerate(values):
        params = {**default, name: v} if name != "exact" else default
        res, ms = _timed_search(version, queries, k, params)
        recall = recall_at(res, exact, k, vectors=version.ad_vectors, queries=queries,  # the manifest's measure
                           metric=version.index.metric)
        rows.append({"param": name, "value": int(v), "recall_at_k": recall,
                     "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                     "is_default": default.get(name) == v})
        report(progress, (i + 1) / len(values), f"{name} {v}")
    return pd.DataFrame(rows)


def ivf_list_stats(index, top: int = 10) -> dict | None:
    """Inverted-list size distribution: imbalance factor (Σ n_i² · nlist / N²), empty and largest lists."""
    assign = index.list_assignments()
    if assign is None:
        return None
    sizes = np.bincount(assign, minlength=index.nlist)
    n = sizes.sum()
    largest = np.argsort(-sizes, kind="stable")[:top]
    return {
        "nlist": int(index.nlist), "n": int(n),
        "imbalance_factor": float((sizes.astype(np.float64) ** 2).sum() * index.nlist / max(n, 1) ** 2),
        "empty_lists": int((sizes == 0).sum()), "mean_size": float(sizes.mean()),
        "max_size": int(sizes.max()), "min_size": int(sizes.min()),
        "largest": [{"list": int(i), "size": int(sizes[i])} for i in largest],
        "sizes": sizes.tolist(),
    }


def dead_and_hub_ads(version, catalog: Catalog, queries: np.ndarray, approx: list, exact: list, k: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Dead ads (never retrieved by the index for any sampled request) with a reason, dead ads
    per vertical, and hub ads (retrieved for an outsized share of requests)."""
    n_ads = len(version.ad_ids)
    got = np.zeros(n_ads, np.int64)
    for _, pos in approx:
        got[pos] += 1
    in_exact = np.zeros(n_ads, bool)
    for _, pos in exact:
        in_exact[pos] = True
    meta = catalog.ads.set_index("ad_id").reindex(pd.Index(np.asarray(version.ad_ids, dtype=object)))
    dead = np.flatnonzero(got == 0)
    best = np.full(len(dead), np.nan, np.float32)
    if len(dead) and len(queries):
        best = similarity(version.ad_vectors[dead], queries, version.index.metric).max(axis=0)
    kth = np.array([e[0][min(k, len(e[0])) - 1] for e in exact if len(e[0])]) if exact else np.array([])
    dead_df = pd.DataFrame({
        "ad_id": np.asarray(version.ad_ids, dtype=object)[dead],
        "vertical": meta["vertical"].to_numpy()[dead] if len(dead) else [],
        "title": meta["title"].to_numpy()[dead] if len(dead) else [],
        "best_score": best,
        "median_kth_score": float(np.median(kth)) if len(kth) else np.nan,
        "reason": np.where(in_exact[dead], "lost by the ANN index (exact search retrieves it)",
                           "far from every sampled user (exact search never retrieves it either)"),
    })
    by_vertical = (dead_df.groupby("vertical", dropna=False).size().rename("dead").reset_index()
                   if len(dead_df) else pd.DataFrame(columns=["vertical", "dead"]))
    if len(by_vertical):
        totals = meta.groupby("vertical", dropna=False).size()
        by_vertical["ads"] = by_vertical["vertical"].map(totals).fillna(0).astype(int)
        by_vertical["dead_share"] = by_vertical["dead"] / by_vertical["ads"].clip(lower=1)
        by_vertical = by_vertical.sort_values("dead", ascending=False)
    n_req = max(len(approx), 1)
    share = got / n_req
    expected = float(np.mean([len(p) for _, p in approx]) / n_ads) if approx else 0.0
    hubs = np.flatnonzero(share >= max(HUB_FACTOR * expected, 1e-9))
    hubs = hubs[np.argsort(-share[hubs], kind="stable")]
    hub_df = pd.DataFrame({
        "ad_id": np.asarray(version.ad_ids, dtype=object)[hubs],
        "vertical": meta["vertical"].to_numpy()[hubs] if len(hubs) else [],
        "title": meta["title"].to_numpy()[hubs] if len(hubs) else [],
        "share": share[hubs], "expected_share": expected,
    })
    return dead_df, by_vertical, hub_df


def shard_stats(version, queries: np.ndarray, k: int, approx: list) -> dict:
    """Shard sizes and bytes (manifest), balance (largest / mean size), each shard's latency
    through the serving backend (p50/p99 over single-query searches) and its share of the
    top-k results (an uneven share means some shards answer most requests)."""
    from core.index.backends import shard_entries

    entries = shard_entries(version.manifest)
    sizes = np.array([e.count for e in entries], np.float64)
    times = []
    for q in queries:
        stats: dict = {}
        version.search(q, k, stats=stats)
        times.append([stats.get(i, np.nan) for i in range(len(entries))])
    times = np.asarray(times, np.float64).reshape(len(queries), len(entries))
    hits = np.zeros(len(entries))
    for _, pos in approx:
        hits += np.bincount(version.shard_of(pos), minlength=len(entries))[:len(entries)]
    share = hits / max(hits.sum(), 1)
    has_times = len(queries) > 0
    return {
        "backend": version.backend_name, "n": len(entries),
        "balance": float(sizes.max() / max(sizes.mean(), 1)),
        "rows": [{"shard": e.shard, "ads": e.count, "bytes": e.bytes, "file": e.file,
                  "p50_ms": float(np.nanpercentile(times[:, i], 50)) if has_times else None,
                  "p99_ms": float(np.nanpercentile(times[:, i], 99)) if has_times else None,
                  "result_share": float(share[i])} for i, e in enumerate(entries)],
    }


def health(version, catalog: Catalog, *, n_requests: int = 200, k: int = 100, seed: int = 0,
           progress: Progress | None = None, engine=None) -> HealthReport:
    """The full health report for `version` (see module docstring); `progress(fraction, step)`
    reports the steps (encoding, exact search, each point of the recall curve, dead/hub ads).
    With the version's funnel `engine` (core.funnel.engine), `rules` holds each funnel rule's
    rates on up to RULE_REQUESTS sampled requests (core.analysis.rule_health)."""
    def step(fraction: float, what: str) -> None:
        if progress:
            progress(min(1.0, fraction), what)

    t0 = time.perf_counter()
    step(0.0, f"Encoding {n_requests} sampled requests")
    features = FeatureStore(catalog, version.ad_ids, version.ad_text_vectors)
    reqs, q = sample_query_vectors(version, catalog, n_requests, seed, features)
    k = min(k, len(version.ad_ids))
    step(0.1, "Exact search (the oracle)")
    exact = version.exact_search(q, k) if len(q) else []
    curve_step = "Recall and latency at each search setting"
    step(0.2, curve_step)
    curve = recall_curve(version, q, k, exact, progress=lambda f, what: step(0.2 + 0.7 * f, f"{curve_step}: {what}")) \
        if len(q) else pd.DataFrame()
    step(0.9, "Dead and hub ads")
    approx = version.search(q, k) if len(q) else []
    dead, dead_by_vertical, hubs = dead_and_hub_ads(version, catalog, q, approx, exact, k)
    step(0.95, "Shard latency through the serving backend")
    shards = shard_stats(version, q[:50], k, approx)
    step(0.97, "Candidate sources: coverage and dead ads")
    sources = source_coverage(load_sources(version, features), reqs, q) if len(q) else {}
    rules = None
    if engine is not None:
        rules = rule_rates(engine, n_requests=min(n_requests, RULE_REQUESTS), seed=seed,
                           progress=lambda f, what: step(0.97 + 0.03 * f, f"Funnel rules: {what}"))
    step(1.0, "Done")
    return HealthReport(
        version=version.name, kind=version.index.kind, k=k, n_requests=len(q), curve=curve,
        ivf_lists=ivf_list_stats(version.index), dead_ads=dead, dead_by_vertical=dead_by_vertical,
        hub_ads=hubs, tower_metrics=version.manifest.tower_metrics,
        seconds=time.perf_counter() - t0, shards=shards, sources=sources, rules=rules,
    )
