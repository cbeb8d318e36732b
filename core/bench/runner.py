"""`adlens bench`: what this machine does with AdLens's heavy parts, in one process.

The report is a dict of sections, each computed by a function in `BENCH_SECTIONS` from a shared
`BenchContext` (other modules add sections, e.g. funnel latency, by registering a function).

- ``machine``: CPU count, library versions.
- ``embedding``: sentences/s of the configured text model on a few hundred ad-like texts, with
  the torch, onnx and onnx-int8 backends side by side (speed-up and cosine to torch's vectors).
- ``ann``: synthetic clustered vectors (no text encoding, so 1M ads take minutes, not hours):
  per index configuration, build time, bytes per ad, single-query p50/p99, batch queries/s,
  recall@10/100/500 against the exact oracle, and speed-up over exact search; plus whether the
  target holds (some ANN config ≥ 10× faster than exact, single-query p50, at recall@500 ≥ 0.95).
- ``funnel`` (core/funnel_bench.py): per-stage request latency, why-not and map placement at 10k
  and 100k ads on a generated bench workspace.
- ``dashboard`` (core/bench/dashboard.py): each page's first view from a cold server
  (core/bench/dashboard_first_view.py), then Inspect's re-render after a user switch at 100k ads,
  in headless Chromium (skipped, with the reason, where no browser is available); with
  `sessions` > 1, that many concurrent sessions loading Inspect, Compare and Map, with median/p95
  page time and the server's RSS (core/bench/dashboard_sessions.py).
- ``traces`` (core/bench/traces.py, only when named): import `trace_rows` synthetic logged
  candidate rows, its time and peak RSS, and opening one logged request (p50/p99).
- ``parity`` (core/bench/parity.py, only when named): `adlens parity` over 1,000 logged requests
  at 100k ads (AdLens's own replay as the log; target <= 60 s).

Every search asks for k=500 (the funnel's K); recall@K compares its top K with the exact top K.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core.bench.synthetic import (  # noqa: F401
    DIM,
    TARGET_RECALL,
    K,
    clustered_vectors,
    synthetic_queries,
)
from core.common.errors import AdLensError
from core.index.ann import AnnIndex, exact_search, recall_at, suggest_nlist
from core.store.settings import Settings

RECALL_KS = (10, 100, 500)
TARGET_SPEEDUP = 10.0
HNSW_MAX_DEFAULT = 300_000  # HNSW builds take too long on a laptop above this unless asked for


@dataclass
class BenchContext:
    settings: Settings
    ads: int = 100_000
    queries: int = 200
    types: tuple[str, ...] = ("flat", "ivf", "hnsw", "ivfpq")
    seed: int = 0
    sessions: int = 1  # dashboard section: concurrent browser sessions
    dashboard_workspace: str | None = None  # dashboard section: serve this workspace
    log: Callable[[str], None] = lambda msg: None
    report: dict = field(default_factory=dict)  # sections computed so far
    shared: dict = field(default_factory=dict)  # lazily computed data shared between sections

    def synthetic(self) -> tuple[np.ndarray, np.ndarray]:
        """(ad vectors, query vectors) of the synthetic catalog, built once."""
        if "synthetic" not in self.shared:
            t = time.perf_counter()
            x = clustered_vectors(self.ads, DIM, seed=self.seed)
            q = synthetic_queries(x, self.queries, seed=self.seed + 1)
            self.shared["synthetic"] = (x, q)
            self.log(f"synthetic data: {self.ads:,} x {DIM} in {time.perf_counter() - t:.1f}s")
        return self.shared["synthetic"]


# ---- sections -----------------------------------------------------------------------------
def section_machine(ctx: BenchContext) -> dict:
    import faiss

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {"cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "omp_env": {k: v for k, v in os.environ.items() if k.startswith("OMP_")},
            "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
            "memory_gb": round(mem / 2**30, 1) if mem else None}


_VERBS = ["Save", "Discover", "Try", "Upgrade", "Get", "Explore", "Book", "Shop", "Learn", "Join"]
_THINGS = ["running shoes", "noise-cancelling headphones", "a weekend in Lisbon", "meal kits", "a budgeting app",
           "cloud storage", "hiking boots", "an online Spanish course", "car insurance", "a gaming laptop",
           "organic coffee", "yoga classes", "a VPN", "pet food delivery", "a standing desk"]
_HOOKS = ["up to 40% off this week", "free shipping on every order", "trusted by 2 million customers",
          "cancel any time", "new arrivals just dropped", "limited spots left", "rated 4.8 stars"]
_VERTICALS = ["retail", "travel", "finance", "education", "gaming", "food", "fitness", "tech"]


def ad_like_texts(n: int, seed: int = 0) -> list[str]:
    """Composed ad texts (title, body, call to action, category) like the demo catalog's."""
    import pandas as pd

    from core.text.embeddings import compose_ad_text

    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    rows = [{"title": f"{pick(_VERBS)} {pick(_THINGS)}", "body": f"{pick(_HOOKS).capitalize()}. {pick(_HOOKS).capitalize()}.",
             "call_to_action": pick(["Shop now", "Learn more", "Sign up", "Book now"]), "vertical": pick(_VERTICALS)}
            for _ in range(n)]
    return compose_ad_text(pd.DataFrame(rows))


def section_embedding(ctx: BenchContext) -> dict:
    """Sentences/s of the text model with each backend (torch, onnx, onnx-int8) on the same ad
    texts, with each ONNX backend's speed-up over torch and the cosine of its vectors to torch's."""
    from core.text.embeddings import AdEncoder, embedding_throughput
    from core.text.onnx_backend import BACKENDS

    texts = ad_like_texts(320, seed=ctx.seed)
    out: dict = {"model": ctx.settings.embedding_model, "batch_size": 64, "n_texts": len(texts),
                 "target": "onnx-int8 >= 1.3x torch at mean cosine >= 0.99"}
    ref = None
    for backend in BACKENDS:
        t = time.perf_counter()
        enc = AdEncoder.load(ctx.settings.embedding_model, backend, ctx.settings.cache_dir)
        load_s = time.perf_counter() - t
        res = embedding_throughput(enc, texts)
        vecs = enc.encode(texts)
        row = {"load_s": load_s, **res}
        if ref is None:
            ref = vecs
            out.update({"model_path": str(enc.path), "dim": enc.dim, **res})  # torch: the headline numbers
        else:
            cos = (vecs * ref).sum(1)
            row.update({"speedup_vs_torch": res["sentences_per_s"] / out["sentences_per_s"],
                        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())})
        out[backend] = row
        ctx.log(f"embedding ({backend}): {res['sentences_per_s']:.0f} sentences/s"
                + (f", {row['speedup_vs_torch']:.2f}x torch, cosine {row['cosine_mean']:.4f}" if backend != "torch" else ""))
    return out


def ann_configs(n: int, types: tuple[str, ...]) -> list[tuple[str, str, list[dict]]]:
    """(family, factory, [search params]) measured at `n` ads: nlist ≈ 4·√n, nprobe from
    nlist/256 to nlist/8; PQ48 (8 dims per code byte) plain, with exact re-ranking (RFlat),
    and with compact re-ranking (Refine(SQ8)) for the memory comparison."""
    nlist = suggest_nlist(n)
    probes = sorted({max(1, nlist // d) for d in (256, 128, 64, 32, 16, 8)})
    mid = sorted({max(1, nlist // 64), max(1, nlist // 32)})
    out = []
    if "ivf" in types:
        out.append(("ivf", f"IVF{nlist},Flat", [{"nprobe": p} for p in probes]))
    if "hnsw" in types:
        out.append(("hnsw", "HNSW32", [{"efSearch": ef} for ef in (512, 1024)]))
    if "ivfpq" in types:
        out.append(("ivfpq", f"IVF{nlist},PQ48", [{"nprobe": p} for p in mid]))
        refined = [{"nprobe": p, "k_factor": kf} for p in mid for kf in (2, 4, 8)]
        out.append(("ivfpq", f"IVF{nlist},PQ48,RFlat", refined))
        out.append(("ivfpq", f"IVF{nlist},PQ48,Refine(SQ8)", refined))
    return out


def _measure(index: AnnIndex, q: np.ndarray, params: dict | None, n_single: int) -> dict:
    lat = []
    for i in range(n_single):
        t = time.perf_counter_ns()
        index.search(q[i], K, params)
        lat.append((time.perf_counter_ns() - t) / 1e6)
    t = time.perf_counter()
    res = index.search(q, K, params)
    batch_s = time.perf_counter() - t
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "batch_qps": len(q) / batch_s if batch_s > 0 else float("nan"), "_results": res}


def section_ann(ctx: BenchContext) -> dict:
    x, q = ctx.synthetic()
    n = len(x)
    n_single = len(q)
    t = time.perf_counter()
    truth = exact_search(x, q, K)
    ctx.log(f"exact oracle for {len(q)} queries: {time.perf_counter() - t:.1f}s")
    rows: list[dict] = []

    def record(family: str, factory: str, index: AnnIndex, build_s: float, params: dict | None) -> dict:
        m = _measure(index, q, params, n_single)
        res = m.pop("_results")
        row = {"family": family, "factory": factory, "params": params or {}, "build_s": build_s,
               "bytes_per_ad": index.nbytes() / n, **m}
        for k in RECALL_KS:
            row[f"recall@{k}"] = recall_at(res, truth, k)
        rows.append(row)
        ctx.log(f"  {factory:<24} {str(params or {}):<32} p50 {row['p50_ms']:7.2f} ms  "
                f"recall@500 {row['recall@500']:.3f}")
        return row

    t = time.perf_counter()
    flat = AnnIndex.build(x, "Flat")
    exact_row = record("flat", "Flat", flat, time.perf_counter() - t, None)
    del flat
    # Above 300k ads, train the coarse k-means on a sample (32 per list) with 10 iterations,
    # so 1M ads build in minutes on a laptop; the report records it.
    big = n > 300_000
    max_train = 32 * suggest_nlist(n) if big else None
    iters = 10 if big else None
    for family, factory, grid in ann_configs(n, ctx.types):
        if family == "hnsw" and n > HNSW_MAX_DEFAULT and "hnsw" not in ctx.shared.get("explicit_types", ()):
            ctx.log(f"skipping {factory} at {n:,} ads (slow to build here; pass --types hnsw to force)")
            continue
        t = time.perf_counter()
        index = AnnIndex.build(x, factory, seed=ctx.seed, max_train=max_train, kmeans_iters=iters)
        build_s = time.perf_counter() - t
        ctx.log(f"built {factory} in {build_s:.1f}s")
        for params in grid:
            record(family, factory, index, build_s, params)
        del index
    for r in rows:
        r["speedup_p50"] = exact_row["p50_ms"] / r["p50_ms"] if r["p50_ms"] > 0 else float("nan")
        r["speedup_batch"] = r["batch_qps"] / exact_row["batch_qps"] if exact_row["batch_qps"] > 0 else float("nan")
    ok = [r for r in rows if r["family"] != "flat" and r["recall@500"] >= TARGET_RECALL]
    best = max(ok, key=lambda r: r["speedup_p50"]) if ok else None
    return {
        "n_ads": n, "dim": x.shape[1], "n_queries": len(q), "k": K,
        "data": "clustered_vectors: 100 topics, ~n/200 fine clusters (lognormal sizes), unit norm; "
                "queries: random ads + noise (cosine ~0.9)",
        "ivf_training": {"sample": max_train or "all", "kmeans_iters": iters or 25},
        "rows": rows,
        "target": {"rule": f"some ANN config >= {TARGET_SPEEDUP:g}x faster than exact (single-query p50) "
                           f"at recall@500 >= {TARGET_RECALL}",
                   "holds": bool(best and best["speedup_p50"] >= TARGET_SPEEDUP),
                   "best": {k: best[k] for k in ("factory", "params", "speedup_p50", "recall@500", "p50_ms")}
                   if best else None},
    }


def section_funnel(ctx: BenchContext) -> dict:
    from core.bench.funnel import (
        section_funnel as run,  # imports torch: only when this section runs
    )

    return run(ctx)


def section_shards(ctx: BenchContext) -> dict:
    from core.bench.shards import section_shards as run  # may start Ray actors

    return run(ctx)


def section_dashboard(ctx: BenchContext) -> dict:
    if ctx.sessions > 1:  # starts streamlit and a browser
        from core.bench.dashboard_sessions import section_sessions as run
    else:
        from core.bench.dashboard_first_view import section_first_views as run
    return run(ctx)


def section_traces(ctx: BenchContext) -> dict:
    from core.bench.traces import section_traces as run  # generates and imports logged traces

    return run(ctx)


def section_parity(ctx: BenchContext) -> dict:
    from core.bench.parity import section_parity as run  # replays 1,000 logged requests

    return run(ctx)


def section_demo(ctx: BenchContext) -> dict:
    from core.bench.demo import section_demo as run  # builds a demo workspace, serves and opens it

    return run(ctx)


BENCH_SECTIONS: dict[str, Callable[[BenchContext], dict]] = {
    "machine": section_machine,
    "embedding": section_embedding,
    "ann": section_ann,
    "funnel": section_funnel,
    "dashboard": section_dashboard,
    "shards": section_shards,
    "traces": section_traces,
    "parity": section_parity,
    "demo": section_demo,
}
ON_REQUEST = ("shards", "traces", "parity", "demo")  # run only when named (or, for shards, when --shards is given)


def run_bench(settings: Settings, *, ads: int = 100_000, queries: int | None = None,
              types: list[str] | None = None, embed: bool = True, sections: list[str] | None = None,
              seed: int = 0, threads: int | None = None, log: bool = True, shards: int | None = None,
              backend: str = "local", nlist: int | None = None, factories: list[str] | None = None,
              sessions: int = 1, dashboard_workspace: str | None = None, dashboard_page: str = "inspect",
              trace_rows: int | None = None, demo_ads: int = 10_000, demo_users: int = 5_000) -> dict:
    """Run the requested sections (default: all registered but `ON_REQUEST`; with `shards`:
    machine and shards) and return the report. `threads` sets FAISS's OpenMP thread count for
    this process (a bench-only knob); `shards`, `backend`, `nlist`, `factories` configure the
    sharded-vs-unsharded section (core/bench/shards.py); `sessions`, `dashboard_workspace`, `dashboard_page` the
    dashboard section (core/bench/dashboard.py, core/bench/dashboard_sessions.py)."""
    if ads < 1000:
        raise AdLensError(f"--ads must be at least 1000; got {ads}")
    if not 1 <= sessions <= 64:
        raise AdLensError(f"--sessions must be between 1 and 64; got {sessions}")
    default = ["machine", "shards"] if shards else [n for n in BENCH_SECTIONS if n not in ON_REQUEST]
    names = list(sections or default)
    unknown = [s for s in names if s not in BENCH_SECTIONS]
    if unknown:
        raise AdLensError(f"unknown bench sections {unknown}; known: {', '.join(BENCH_SECTIONS)}")
    if not embed and "embedding" in names:
        names.remove("embedding")
    queries = queries or (200 if ads <= 300_000 else 50)
    if threads is not None:
        import faiss

        faiss.omp_set_num_threads(int(threads))
    ctx = BenchContext(settings=settings, ads=ads, queries=queries, seed=seed, sessions=sessions,
                       dashboard_workspace=dashboard_workspace,
                       types=tuple(types or ("flat", "ivf", "hnsw", "ivfpq")),
                       log=(lambda m: print(m, file=sys.stderr, flush=True)) if log else (lambda m: None))
    ctx.shared["explicit_types"] = tuple(types or ())
    ctx.shared.update(shards=shards, backend=backend, nlist=nlist, factories=factories, trace_rows=trace_rows,
                      demo_ads=demo_ads, demo_users=demo_users,
                      dashboard_page="" if dashboard_page == "inspect" else dashboard_page)
    t0 = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        ctx.log(f"[bench] {name}")
        ctx.report[name] = BENCH_SECTIONS[name](ctx)
        ctx.report[name]["section_s"] = time.perf_counter() - t
    ctx.report["total_s"] = time.perf_counter() - t0
    if hasattr(os, "getloadavg"):  # other processes competing for the CPUs skew every timing
        ctx.report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    ctx.report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return ctx.report


def format_report(report: dict) -> str:
    """Plain-text rendering: rows as a table, other fields as key: value lines."""
    lines: list[str] = []
    for name, sec in report.items():
        if not isinstance(sec, dict):
            lines.append(f"{name}: {sec:.1f}" if isinstance(sec, float) else f"{name}: {sec}")
            continue
        lines.append(f"== {name} ==")
        if name == "funnel":
            lines.extend(_format_funnel(sec))
            continue
        if name == "dashboard" and "pages" in sec:
            from core.bench.dashboard_sessions import format_sessions

            lines.extend(format_sessions(sec))
            continue
        if name == "embedding" and "torch" in sec:
            lines.extend(_format_embedding(sec))
            continue
        if name == "dashboard" and ("switches" in sec or "first_view" in sec):
            lines.extend(_format_dashboard(sec))
            continue
        if name == "demo":
            from core.bench.demo import format_demo

            lines.extend(format_demo(sec))
            continue
        if name == "shards":
            from core.bench.shards import format_section

            lines.extend(format_section(sec))
            continue
        if name == "traces":
            from core.bench.traces import format_section as format_traces

            lines.extend(format_traces(sec))
            continue
        if name == "parity":
            from core.bench.parity import format_section as format_parity

            lines.extend(format_parity(sec))
            continue
        for k, v in sec.items():
            if k == "rows":
                continue
            lines.append(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
        if sec.get("rows"):
            hdr = f"  {'factory':<26} {'params':<28} {'build_s':>8} {'B/ad':>6} {'p50ms':>7} {'p99ms':>7} " \
                  f"{'qps':>8} {'r@10':>6} {'r@100':>6} {'r@500':>6} {'x p50':>6} {'x batch':>7}"
            lines.append(hdr)
            for r in sec["rows"]:
                p = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
                lines.append(f"  {r['factory']:<26} {p:<28} {r['build_s']:8.1f} {r['bytes_per_ad']:6.0f} "
                             f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['batch_qps']:8.0f} {r['recall@10']:6.3f} "
                             f"{r['recall@100']:6.3f} {r['recall@500']:6.3f} {r['speedup_p50']:6.1f} "
                             f"{r['speedup_batch']:7.1f}")
    return "\n".join(lines)


def _format_embedding(sec: dict) -> list[str]:
    lines = [f"  {sec['model']} ({sec.get('dim')}-d), {sec['n_texts']} ad texts, batch {sec['batch_size']}; "
             f"target: {sec['target']}",
             f"  {'backend':<10} {'sent/s':>8} {'first pass':>10} {'x torch':>8} {'cos mean':>9} {'cos min':>8} {'load_s':>7}"]
    for backend in ("torch", "onnx", "onnx-int8"):
        r = sec.get(backend)
        if r:
            lines.append(f"  {backend:<10} {r['sentences_per_s']:8.0f} {r['first_pass_sentences_per_s']:10.0f} "
                         f"{r.get('speedup_vs_torch', 1.0):8.2f} {r.get('cosine_mean', 1.0):9.4f} "
                         f"{r.get('cosine_min', 1.0):8.4f} {r['load_s']:7.1f}")
    return lines


def _format_funnel(sec: dict) -> list[str]:
    lines = []
    for n, rep in sec.items():
        if not isinstance(rep, dict):
            lines.append(f"  {n}: {rep:.4g}" if isinstance(rep, float) else f"  {n}: {rep}")
            continue
        lines.append(f"  {int(n):,} ads, {rep['index']} {rep['search_params']}, K={rep['k']}, "
                     f"{rep['n_requests']} logged requests (target p50 <= {rep['target_p50_ms']:.0f} ms: "
                     f"{'met' if rep['meets_target'] else 'NOT met'})")
        for stage, d in rep["stages_ms"].items():
            lines.append(f"    {stage:<12} p50 {d['p50']:7.2f} ms   p99 {d['p99']:7.2f} ms")
        for label, key in (("table", "candidates_table_ms"), ("with table", "total_with_table_ms"),
                           ("why-not", "why_not_ms")):
            if rep.get(key):  # table: the Trace's candidates frame, built when a page first reads it
                lines.append(f"    {label:<12} p50 {rep[key]['p50']:7.2f} ms   p99 {rep[key]['p99']:7.2f} ms")
        m = rep.get("map") or {}
        if m.get("available"):
            mb = (m.get("build") or {}).get("timings", {})
            lines.append(f"    map: place one query p50 {m['place_ms']['p50']:.2f} ms (target <= 50); "
                         f"UMAP build {mb.get('total_s', float('nan')):.1f} s at build time")
        if rd := rep.get("rules_from_definition"):
            lines.append(f"    eligibility: built-in rules p50 {rd['builtin_p50_ms']:.3f} ms, {rd['definition']} "
                         f"({rd['rules']} rules as expressions) p50 {rd['definition_p50_ms']:.3f} ms: "
                         f"x{rd['ratio_p50']:.2f} (target <= {rd['target_ratio']}: "
                         f"{'met' if rd['meets_target'] else 'NOT met'}); same verdicts {rd['same_verdicts']}")
        lines.append(f"    engine build {rep['engine_build_ms'] / 1000:.1f} s; workspace {rep['workspace']}")
    return lines


def _format_dashboard(sec: dict) -> list[str]:
    from core.bench.dashboard_first_view import format_first_views

    lines = format_first_views(sec["first_view"]) if sec.get("first_view") else []
    if "switches" not in sec:
        return [*lines, f"  workspace {sec['workspace']}"]
    page = "Embedding map" if sec.get("page") == "map" else "Inspect"
    lines += [f"  {page} at {sec['ads']:,} ads, user switch in Chromium: median rerun {sec['rerun_median_s']:.2f} s, "
             f"settled {sec['settled_median_s']:.2f} s (target <= {sec['target_s']:.0f} s: "
             f"{'met' if sec['meets_target'] else 'NOT met'}); first load {sec['first_load_s']:.1f} s"]
    lines += [f"    {r['user']:<14} rerun {r['rerun_s']:.2f} s   settled {r['settled_s']:.2f} s" for r in sec["switches"]]
    lines.append(f"  workspace {sec['workspace']}")
    return lines
