"""`adlens bench --sections traces`: import N synthetic logged candidate rows (N/100 requests),
report import time and the import's peak memory (RSS of the `adlens import-traces` process), then
open ~50 random logged requests (p50/p99), through the row-offset index the import records and,
for comparison, through Parquet row-group statistics alone (what a store without the index does).

Targets (issue 21): 10M rows import in <= 5 min; opening one request <= 300 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TARGET_IMPORT_S = 300.0
TARGET_OPEN_MS = 300.0
DEFAULT_ROWS = 10_000_000
ROWS_PER_REQUEST = 100
SOURCES = ("two_tower", "co_engagement", "popular_in_context", "targeting", "prod_lookalike")
FILTER_REASONS = ("GEO_MISMATCH", "FREQUENCY_CAP", "BUDGET_EXHAUSTED", "PACING_THROTTLE", "BRAND_SAFETY")
STAGES = ("retrieved", "eligible", "ranked", "slate")
GEN_BATCH_REQUESTS = 10_000


def _strings(prefix: str, idx: np.ndarray, n: int, width: int) -> pa.Array:
    dictionary = pa.array([f"{prefix}{i:0{width}d}" for i in range(n)])
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), dictionary).dictionary_decode()


def _lists(lengths: np.ndarray, values: pa.Array) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def generate(directory: Path, rows: int, seed: int = 0, n_ads: int = 100_000) -> dict:
    """requests.parquet + trace_candidates.parquet with `rows` candidates over rows/100 requests,
    written in request batches (bounded memory); requests appear in random order, each one's
    candidates together (as a production log groups them)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    n_req = max(1, rows // ROWS_PER_REQUEST)
    n_users = max(10, n_req // 5)
    counts = rng.multinomial(rows, np.full(n_req, 1.0 / n_req))
    order = rng.permutation(n_req)
    base = np.datetime64("2026-10-01T00:00:00", "us")
    ts = base + (rng.integers(0, 14 * 86400, n_req) * 1_000_000).astype("timedelta64[us]")
    pq.write_table(pa.table({
        "request_id": _strings("req_", np.arange(n_req), n_req, 7),
        "user_id": _strings("u_", rng.integers(0, n_users, n_req), n_users, 6),
        "ts": pa.array(ts), "community_id": _strings("c_", rng.integers(0, 200, n_req), 200, 3),
        "placement": pa.array(np.array(["home_feed", "community_feed", "conversation"])[rng.integers(0, 3, n_req)]),
        "device": pa.array(np.array(["ios", "android", "desktop"])[rng.integers(0, 3, n_req)]),
        "country": pa.array(np.array(["US", "CA", "GB", "DE"])[rng.integers(0, 4, n_req)]),
        "experiment": pa.array(np.array(["control", "treatment"])[rng.integers(0, 2, n_req)]),
    }), directory / "requests.parquet")
    writer = None
    for b in range(0, n_req, GEN_BATCH_REQUESTS):
        reqs = order[b:b + GEN_BATCH_REQUESTS]
        c = counts[reqs]
        n = int(c.sum())
        start = np.repeat(np.cumsum(c) - c, c)
        within = np.arange(n) - start
        ad = (np.repeat(rng.integers(0, n_ads, len(reqs)), c) + within * 7919) % n_ads
        n_src = 1 + (rng.random(n) < 0.3) + (rng.random(n) < 0.1)
        first = rng.integers(0, len(SOURCES), n)
        src_idx = (np.repeat(first, n_src) + (np.arange(n_src.sum()) - np.repeat(np.cumsum(n_src) - n_src, n_src))) \
            % len(SOURCES)
        stage = rng.choice(4, size=n, p=[0.4, 0.45, 0.1, 0.05])
        slate = stage == 3
        cum = np.cumsum(slate)
        pos = np.where(slate, cum - np.repeat(np.concatenate([[0], cum])[np.cumsum(c) - c], c), 0)
        n_reason = np.select([stage == 0, stage < 3], [1 + (rng.random(n) < 0.3), 1], 0)
        reason_codes = np.where(np.repeat(stage, n_reason) == 0, rng.integers(0, len(FILTER_REASONS), n_reason.sum()),
                                np.where(np.repeat(stage, n_reason) == 1, len(FILTER_REASONS), len(FILTER_REASONS) + 1))
        reasons_dict = pa.array([*FILTER_REASONS, "BELOW_CUTOFF", "ADVERTISER_CAP"])
        table = pa.table({
            "request_id": _strings("req_", np.repeat(reqs, c), n_req, 7),
            "ad_id": _strings("ad_", ad, n_ads, 6),
            "sources": _lists(n_src, pa.DictionaryArray.from_arrays(pa.array(src_idx.astype(np.int32)),
                                                                   pa.array(SOURCES)).dictionary_decode()),
            "stage_reached": pa.DictionaryArray.from_arrays(pa.array(stage.astype(np.int32)),
                                                            pa.array(STAGES)).dictionary_decode(),
            "reasons": _lists(n_reason, pa.DictionaryArray.from_arrays(pa.array(reason_codes.astype(np.int32)),
                                                                      reasons_dict).dictionary_decode()),
            "source_ranks": _lists(n_src, pa.array(rng.integers(1, 501, n_src.sum()).astype(np.int64))),
            "source_scores": _lists(n_src, pa.array(rng.random(n_src.sum()))),
            "early_score": pa.array(rng.random(n) * 0.05),
            "bid": pa.array(rng.random(n) * 5),
            "ecpm": pa.array(rng.random(n) * 100),
            "slate_position": pa.array(np.where(slate, pos, 0), mask=~slate),
        })
        if writer is None:
            writer = pq.ParquetWriter(directory / "trace_candidates.parquet", table.schema)
        writer.write_table(table, row_group_size=128_000)
    writer.close()
    return {"requests": n_req, "rows": rows, "users": n_users,
            "bytes": sum(p.stat().st_size for p in directory.iterdir())}


def _percentiles(ms: list[float]) -> dict:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(max(ms)),
            "n": len(ms)}


def section_traces(ctx) -> dict:
    from core.store.db import make_engine
    from core.store.settings import load_settings
    from core.traces.logged import load_logged_request, sample_request_ids

    rows = int(ctx.shared.get("trace_rows") or DEFAULT_ROWS)
    root = ctx.settings.workspace / "bench" / f"traces-{rows}"
    data, ws = root / "data", root / "ws"
    t = time.perf_counter()
    if not (data / "trace_candidates.parquet").exists():
        shutil.rmtree(data, ignore_errors=True)
        gen = generate(data, rows, seed=ctx.seed)
    else:
        gen = {"rows": rows, "reused": True, "bytes": sum(p.stat().st_size for p in data.iterdir())}
    gen["seconds"] = time.perf_counter() - t
    ctx.log(f"traces: {rows:,} candidate rows generated in {gen['seconds']:.1f}s ({gen['bytes'] / 2**20:.0f} MiB)")
    shutil.rmtree(ws, ignore_errors=True)
    env = {**os.environ, "ADLENS_HOME": str(ws)}
    env.pop("ADLENS_DB_URL", None)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "--workspace", str(ws), "import-traces", str(data),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    out, err = proc.communicate()
    import_s = time.perf_counter() - t
    peak_mb = _child_peak_mb()
    if proc.returncode != 0:
        raise RuntimeError(f"import-traces failed ({proc.returncode}): {err.decode()[-2000:]}")
    rep = json.loads(out)
    ctx.log(f"traces: imported in {import_s:.1f}s, peak RSS {peak_mb:.0f} MB")
    settings = load_settings(workspace=ws)
    engine = make_engine(settings.db_url)
    try:
        ids = sample_request_ids(engine, 50, seed=ctx.seed)
        t = time.perf_counter()
        first = load_logged_request(settings, engine, ids[0])
        first_ms = (time.perf_counter() - t) * 1000
        ms, n_cands = [], []
        for rid in ids:
            t = time.perf_counter()
            lr = load_logged_request(settings, engine, rid)
            ms.append((time.perf_counter() - t) * 1000)
            n_cands.append(len(lr.candidates))
        stats_ms = _open_by_statistics(ws / "traces" / rep["set_id"] / "candidates.parquet", ids[:20])
    finally:
        engine.dispose()
    open_ms = _percentiles(ms)
    ctx.log(f"traces: open one request p50 {open_ms['p50']:.1f} ms, p99 {open_ms['p99']:.1f} ms "
            f"(by statistics only: p50 {stats_ms['p50']:.1f} ms)")
    return {
        "rows": rows, "requests": rep["n_requests"], "generate": gen, "import_s": import_s,
        "import_peak_rss_mb": peak_mb, "import_timings": rep.get("timings"), "stored_bytes": rep.get("bytes"),
        "load_avg_1m_before_import": round(load0, 2),
        "open_first_ms": first_ms, "open_ms": open_ms, "candidates_per_request_mean": float(np.mean(n_cands)),
        "open_by_statistics_ms": stats_ms, "first_request_candidates": len(first.candidates),
        "targets": {"import_s": TARGET_IMPORT_S, "open_p99_ms": TARGET_OPEN_MS},
        "meets_target": bool(import_s <= TARGET_IMPORT_S and open_ms["p99"] <= TARGET_OPEN_MS),
        "workspace": str(ws),
    }


def _child_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _open_by_statistics(path: Path, ids: list[str]) -> dict:
    """One request read with a row filter on request_id (row-group min/max statistics prune the
    sorted file): the layout without the database's row-offset index, for comparison."""
    ms = []
    for rid in ids:
        t = time.perf_counter()
        pq.read_table(path, filters=[("request_id", "=", rid)])
        ms.append((time.perf_counter() - t) * 1000)
    return _percentiles(ms)


def format_section(sec: dict) -> list[str]:
    o, s = sec["open_ms"], sec["open_by_statistics_ms"]
    return [
        f"  {sec['rows']:,} logged candidate rows, {sec['requests']:,} requests "
        f"(target: import <= {sec['targets']['import_s']:.0f} s, open p99 <= {sec['targets']['open_p99_ms']:.0f} ms: "
        f"{'met' if sec['meets_target'] else 'NOT met'})",
        f"    import {sec['import_s']:.1f} s, peak RSS {sec['import_peak_rss_mb']:.0f} MB, stored "
        f"{(sec['stored_bytes'] or 0) / 2**20:.0f} MiB; steps {sec['import_timings']}",
        f"    open one request: p50 {o['p50']:.1f} ms, p99 {o['p99']:.1f} ms (first {sec['open_first_ms']:.1f} ms); "
        f"by row-group statistics alone: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms",
        f"    load average before the import {sec['load_avg_1m_before_import']}; workspace {sec['workspace']}",
    ]
