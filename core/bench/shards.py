"""`adlens bench --sections shards --shards S --backend local|ray`: sharded vs unsharded, one run.

Per index configuration (IVF-Flat, IVF-PQ with SQ8 re-ranking, or `--factories`), on the
synthetic catalog of `core.bench.runner`:
- one trained empty index (the shared quantizer), cloned into the unsharded index and into S
  shards (`core.index.shards`); build time = shared training + adding;
- search params: the cheapest on `param_ladder` reaching recall@500 >= 0.95 on the unsharded
  index (the shards probe the same lists, so they get the same params);
- single-query p50/p99 (ms) unsharded in-process and sharded through the chosen backend, each
  shard's p50 time, recall@500 against the exact oracle, bytes per ad, bytes per shard, and
  with the Ray backend each shard actor's peak RSS;
- speed-up of each over exact search (single query, numpy, in-process).

Above `STREAM_ABOVE` ads the vectors are never held at once: chunks are generated, added to
the shards and folded into the exact top-500 (a `faiss.ResultHeap`) in one pass; the training
sample and the queries come from the first rows (the synthetic rows are in random order). The
unsharded index is skipped there (it would double the memory), and the build's peak RSS is
reported.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from core.bench.synthetic import (
    DIM,
    TARGET_RECALL,
    K,
    clustered_chunks,
    synthetic_queries,
)
from core.index.ann import (
    AnnIndex,
    exact_search,
    recall_at,
    suggest_nlist,
    train_empty,
    tune_search_params,
)
from core.index.backends import LocalBackend
from core.index.shards import build_shards_streaming, save_shards, shard_ranges

STREAM_ABOVE = 2_000_000
CHUNK = 250_000
TARGET_RAY_RATIO = 2.0  # sharded p50 on Ray within 2x the single-process p50
TARGET_SPEEDUP = 200.0  # vs exact single-process at 1M
TARGET_RECALL_10M = 0.9


def default_factories(n: int, types: tuple[str, ...], nlist: int | None = None) -> list[str]:
    nlist = nlist or suggest_nlist(n)
    coarse = f"IVF{nlist}_HNSW32" if n > STREAM_ABOVE else f"IVF{nlist}"  # HNSW assigns 10M ads in minutes
    out = []
    if "ivf" in types:
        out.append(f"{coarse},Flat")
    if "ivfpq" in types:
        out.append(f"{coarse},PQ48,Refine(SQ8)")
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _latency(search, q: np.ndarray, params: dict, n_shards: int) -> dict:
    lat, per_shard = [], []
    for row in q:
        stats: dict = {}
        t = time.perf_counter_ns()
        search(row, K, params, stats)
        lat.append((time.perf_counter_ns() - t) / 1e6)
        per_shard.append([stats.get(i, np.nan) for i in range(n_shards)])
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "shard_p50_ms": np.median(np.asarray(per_shard), axis=0).round(3).tolist()}


def _serve(sharded, backend: str, factory: str, ctx, tmp: Path):
    """(search function, per-shard peak RSS in MB or None, closer) for the chosen backend."""
    if backend == "local":
        b = LocalBackend(sharded)
        return b.search, None, b.close
    from core.index.ray_backend import RayBackend

    entries = save_shards(sharded, tmp)
    b = RayBackend(tmp, entries, factory, address=ctx.settings.ray_address, label=f"bench-{factory}")
    return b.search, [round(i["peak_rss_mb"], 1) for i in b.actor_info], b.close


def _exact_p50(x_or_none, q: np.ndarray, n_single: int) -> float | None:
    if x_or_none is None:
        return None
    lat = []
    for row in q[:n_single]:
        t = time.perf_counter_ns()
        exact_search(x_or_none, row, K)
        lat.append((time.perf_counter_ns() - t) / 1e6)
    return float(np.percentile(lat, 50))


def section_shards(ctx) -> dict:
    n, s = ctx.ads, int(ctx.shared.get("shards") or 4)
    backend = ctx.shared.get("backend") or "local"
    factories = list(ctx.shared.get("factories") or default_factories(n, ctx.types, ctx.shared.get("nlist")))
    stream = n > STREAM_ABOVE
    ranges = shard_ranges(n, s)
    rows: list[dict] = []
    x = truth = exact_p50 = None
    if not stream:
        x, q = ctx.synthetic()
        t = time.perf_counter()
        truth = exact_search(x, q, K)
        ctx.log(f"exact oracle: {time.perf_counter() - t:.1f}s")
        exact_p50 = _exact_p50(x, q, min(len(q), 30))
    tmp_root = Path(tempfile.mkdtemp(prefix="adlens-bench-shards-"))
    try:
        for factory in factories:
            template, head_q, train_s = _train_template(ctx, factory, n, x)
            params = None
            if stream:
                q = head_q
            else:
                rows.append(_unsharded_row(ctx, template, factory, x, q, truth, train_s))
                params = rows[-1]["params"]
            rows.append(_sharded_row(ctx, template, factory, ranges, x, q, truth, train_s, params, backend,
                                     tmp_root / f"f{len(rows)}"))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    for r in rows:
        r["speedup_vs_exact_p50"] = exact_p50 / r["p50_ms"] if exact_p50 and r["p50_ms"] > 0 else None
    return {"n_ads": n, "dim": DIM, "n_queries": len(q), "k": K, "backend": backend, "shards": s,
            "streamed": stream, "exact_p50_ms": exact_p50, "rows": rows, "targets": _targets(rows, n, backend)}


def _train_template(ctx, factory: str, n: int, x: np.ndarray | None) -> tuple[faiss.Index, np.ndarray | None, float]:
    """The trained empty index both layouts clone, its training seconds and, for a streamed
    catalog (`x` None), the queries made from the first rows."""
    nlist = int(factory.split(",")[0][3:].split("_")[0])
    max_train = 32 * nlist if n > 300_000 else None
    t = time.perf_counter()
    q = None
    if x is None:
        sample, q = _stream_head(n, max(max_train or 0, 50_000), ctx.queries, ctx.seed)
        template = train_empty(sample, factory, n_total=n, seed=ctx.seed, max_train=max_train, kmeans_iters=10)
        del sample
    else:
        template = train_empty(x, factory, n_total=n, seed=ctx.seed, max_train=max_train,
                               kmeans_iters=10 if max_train else None)
    train_s = time.perf_counter() - t
    ctx.log(f"{factory}: trained in {train_s:.1f}s")
    return template, q, train_s


def _unsharded_row(ctx, template: faiss.Index, factory: str, x: np.ndarray, q: np.ndarray, truth,
                   train_s: float) -> dict:
    """One in-process index over every ad: tuned params, latency, recall, size."""
    n = ctx.ads
    t = time.perf_counter()
    whole = faiss.clone_index(template)
    whole.add(x)
    whole = AnnIndex(whole, factory)
    build_s = train_s + time.perf_counter() - t
    params, _ = tune_search_params(whole, q, truth, k=K, target=TARGET_RECALL)
    m = _latency(LocalBackend(whole).search, q, params, 1)
    row = {"factory": factory, "layout": "unsharded (1 process)", "shards": 1, "params": params,
           "build_s": build_s, "bytes_per_ad": whole.nbytes() / n, "shard_mb": [whole.nbytes() / 2**20],
           **m, f"recall@{K}": recall_at(whole.search(q, K, params), truth, K)}
    ctx.log(f"  unsharded: p50 {m['p50_ms']:.2f} ms, recall@500 {row[f'recall@{K}']:.3f}")
    return row


def _sharded_row(ctx, template: faiss.Index, factory: str, ranges: list[tuple[int, int]], x: np.ndarray | None,
                 q: np.ndarray, truth, train_s: float, params: dict | None, backend: str, tmp: Path) -> dict:
    """The shards (streamed when `x` is None, which also gives the exact truth) served through
    `backend`: params (the unsharded ones, else tuned here), latency, recall, sizes, memory."""
    n, s = ctx.ads, len(ranges)
    t = time.perf_counter()
    rss0 = _rss_mb()
    if x is None:
        sharded, truth = _stream_build(template, factory, ranges, n, q, ctx)
    else:
        sharded = build_shards_streaming(template, factory, ranges, ((a, x[a:a + c]) for a, c in ranges))
    build_s = train_s + time.perf_counter() - t
    if params is None:
        params, _ = tune_search_params(sharded, q, truth, k=K, target=TARGET_RECALL_10M)
    search, actor_rss, close = _serve(sharded, backend, factory, ctx, tmp)
    try:
        m = _latency(search, q, params, s)
        rec = recall_at(search(q, K, params, None), truth, K)
    finally:
        close()
    row = {"factory": factory, "layout": f"{s} shards ({backend} backend)", "shards": s, "params": params,
           "build_s": build_s, "bytes_per_ad": sharded.nbytes() / n,
           "shard_mb": [round(sh.nbytes() / 2**20, 1) for sh in sharded.shards],
           "shard_actor_peak_rss_mb": actor_rss, **m, f"recall@{K}": rec,
           "build_peak_rss_mb": round(_rss_mb(), 1), "build_rss_growth_mb": round(_rss_mb() - rss0, 1)}
    ctx.log(f"  {s} shards/{backend}: p50 {m['p50_ms']:.2f} ms, recall@500 {rec:.3f}, built in {build_s:.1f}s")
    return row


def _targets(rows: list[dict], n: int, backend: str) -> dict:
    out = {}
    for f in sorted({r["factory"] for r in rows}):
        pair = {r["shards"] == 1: r for r in rows if r["factory"] == f}
        sh, un = pair.get(False), pair.get(True)
        if sh and un:
            ratio = sh["p50_ms"] / un["p50_ms"] if un["p50_ms"] > 0 else float("nan")
            out[f] = {"sharded_over_unsharded_p50": ratio, "sharded_recall": sh[f"recall@{K}"],
                      "holds_2x": bool(ratio <= TARGET_RAY_RATIO and sh[f"recall@{K}"] >= TARGET_RECALL),
                      "speedup_vs_exact": sh["speedup_vs_exact_p50"],
                      "holds_200x": bool((sh["speedup_vs_exact_p50"] or 0) >= TARGET_SPEEDUP)}
        elif sh:
            out[f] = {"sharded_recall": sh[f"recall@{K}"],
                      "holds_recall_0.9": bool(sh[f"recall@{K}"] >= TARGET_RECALL_10M)}
    return out


def _stream_head(n: int, rows: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `rows` vectors (the training sample) and queries made from them."""
    got = []
    have = 0
    for _a, x in clustered_chunks(n, DIM, seed=seed, chunk=CHUNK):
        got.append(x)
        have += len(x)
        if have >= rows:
            break
    head = np.concatenate(got)[:rows]
    return head, synthetic_queries(head, n_queries, seed=seed + 1)


def _stream_build(template, factory: str, ranges, n: int, q: np.ndarray, ctx):
    """One pass over generated chunks: add to the shards and fold into the exact top-K."""
    heap = faiss.ResultHeap(len(q), K, keep_max=True)

    def chunks():
        t = time.perf_counter()
        for a, x in clustered_chunks(n, DIM, seed=ctx.seed, chunk=CHUNK):
            scores = q @ x.T
            top = (np.argpartition(-scores, K - 1, axis=1)[:, :K] if x.shape[0] > K
                   else np.tile(np.arange(len(x)), (len(q), 1)))
            heap.add_result(np.take_along_axis(scores, top, 1).astype(np.float32), (top + a).astype(np.int64))
            yield a, x
            if (a // CHUNK) % 8 == 7:
                ctx.log(f"  streamed {a + len(x):,}/{n:,} in {time.perf_counter() - t:.0f}s, "
                        f"peak RSS {_rss_mb():.0f} MB")

    sharded = build_shards_streaming(template, factory, ranges, chunks())
    heap.finalize()
    truth = []
    for d, i in zip(heap.D, heap.I):
        order = np.lexsort((i, -d))
        truth.append((d[order].astype(np.float32), i[order].astype(np.int64)))
    return sharded, truth


def format_section(sec: dict) -> list[str]:
    """Plain-text table: one row per (factory, layout)."""
    exact = f"{sec['exact_p50_ms']:.1f} ms" if sec.get("exact_p50_ms") else "not measured (streamed)"
    lines = [f"  {sec['n_ads']:,} ads x {sec['dim']}, {sec['n_queries']} queries, K={sec['k']}, exact single-query "
             f"p50 {exact}{', vectors streamed in chunks' if sec['streamed'] else ''}",
             f"  {'factory':<32} {'layout':<26} {'params':<22} {'build_s':>8} {'B/ad':>6} {'p50ms':>7} {'p99ms':>7} "
             f"{'r@500':>6} {'x exact':>7}  per shard (MB; p50 ms)"]
    for r in sec["rows"]:
        p = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        sp = f"{r['speedup_vs_exact_p50']:7.0f}" if r.get("speedup_vs_exact_p50") else f"{'-':>7}"
        shard = "; ".join(f"{mb:.0f}" for mb in r["shard_mb"]) + " MB; " + \
            "/".join(f"{ms:.2f}" for ms in r["shard_p50_ms"]) + " ms p50"
        if r.get("shard_actor_peak_rss_mb"):
            shard += "; actor RSS " + "/".join(f"{v:.0f}" for v in r["shard_actor_peak_rss_mb"]) + " MB"
        if r.get("build_peak_rss_mb"):
            shard += f"; process peak RSS {r['build_peak_rss_mb']:.0f} MB"
        lines.append(f"  {r['factory']:<32} {r['layout']:<26} {p:<22} {r['build_s']:8.1f} {r['bytes_per_ad']:6.0f} "
                     f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['recall@500']:6.3f} {sp}  {shard}")
    for f, t in sec["targets"].items():
        lines.append(f"  target {f}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in t.items()))
    return lines
