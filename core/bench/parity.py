"""`adlens bench --sections parity`: `adlens parity` over 1,000 logged requests at 100k ads (or
`--ads` when smaller) on the funnel bench's workspace (core.bench.funnel.bench_workspace, reused
when built). The logs are AdLens's own replay (core.traces.export), imported with --replace, so
the report must also say parity 1.0: a cheap end-to-end check at scale.

Target (issue 21): parity over 1,000 logged requests at 100k ads <= 60 s.
"""

from __future__ import annotations

import os
import resource
import shutil
import time

TARGET_S = 60.0
PARITY_REQUESTS = 1_000


def section_parity(ctx) -> dict:
    from core.bench.funnel import BENCH_VERSION, bench_workspace
    from core.funnel.engine import open_engine
    from core.store.db import make_engine
    from core.traces.export import export_replay
    from core.traces.importer import import_traces
    from core.traces.parity import run_parity

    n_ads = min(ctx.ads, 100_000)
    s = bench_workspace(ctx.settings, n_ads, seed=ctx.seed, log=ctx.log)
    t = time.perf_counter()
    engine = open_engine(s, BENCH_VERSION)
    build_s = time.perf_counter() - t
    out = s.workspace / "bench-parity-logs"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    exp = export_replay(engine, out, PARITY_REQUESTS, seed=ctx.seed)
    export_s = time.perf_counter() - t
    db = make_engine(s.db_url)
    try:
        imp = import_traces(s, db, out, replace=True)
        load0 = os.getloadavg()[0]
        rss0, cur0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mb()
        t = time.perf_counter()
        rep = run_parity(s, db, engine, n_requests=PARITY_REQUESTS, seed=ctx.seed)
        parity_s = time.perf_counter() - t
        rss1, cur1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mb()
    finally:
        db.dispose()
    ctx.log(f"parity at {n_ads:,} ads: {rep.n_requests:,} requests in {parity_s:.1f}s "
            f"({1000 * parity_s / max(1, rep.n_requests):.0f} ms each), slates equal {rep.slates_equal_rate}")
    return {
        "n_ads": engine.n_ads, "version": BENCH_VERSION, "requests": rep.n_requests,
        "logged_candidates": rep.n_logged_candidates, "engine_build_s": build_s, "export_s": export_s,
        "import_s": imp.seconds, "parity_s": parity_s, "ms_per_request": 1000 * parity_s / max(1, rep.n_requests),
        "slates_equal_rate": rep.slates_equal_rate, "recall": rep.recall.recall,
        "disagreements": len(rep.disagreements), "load_avg_1m_before": round(load0, 2),
        "peak_rss_mb_before": rss0, "peak_rss_mb_after": rss1, "rss_mb_before": cur0, "rss_mb_after": cur1, "target_s": TARGET_S,
        "meets_target": bool(parity_s <= TARGET_S and rep.n_requests == PARITY_REQUESTS),
        "workspace": str(s.workspace), "exported": exp.n_candidates,
    }


def format_section(sec: dict) -> list[str]:
    return [
        f"  parity over {sec['requests']:,} logged requests ({sec['logged_candidates']:,} candidates) at "
        f"{sec['n_ads']:,} ads: {sec['parity_s']:.1f} s, {sec['ms_per_request']:.0f} ms per request (target <= "
        f"{sec['target_s']:.0f} s: {'met' if sec['meets_target'] else 'NOT met'})",
        f"    own replay exported in {sec['export_s']:.1f} s and imported in {sec['import_s']:.1f} s; slates equal "
        f"{sec['slates_equal_rate']}, recall {sec['recall']}, {sec['disagreements']} disagreement(s) (must be 1.0 / 0)",
        f"    RSS {sec['rss_mb_before']:.0f} -> {sec['rss_mb_after']:.0f} MB over the run (peak {sec['peak_rss_mb_before']:.0f} "
        f"-> {sec['peak_rss_mb_after']:.0f} MB); load average before "
        f"{sec['load_avg_1m_before']}; workspace {sec['workspace']}",
    ]


def _rss_mb() -> float:
    """This process's resident memory now (Linux), 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0
