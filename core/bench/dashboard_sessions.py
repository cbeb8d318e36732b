"""`adlens bench --sections dashboard --sessions N`: N analysts on one dashboard server at once.

One headless Chromium with N browser contexts (separate Streamlit sessions, as N people would
have) opens Inspect, Compare and Embedding map in turn, `loads` rounds each, every load a new
user. A page's time runs from navigation to its content being on the page and its script run
being over (no running-status widget, no stale elements). The report gives median and p95 per
page, pages that showed an exception, and the Streamlit server's resident memory (VmRSS from
/proc, sampled while the sessions run). Goal: median <= GOAL_S per page with 8 sessions on 2 cores
at the demo size (10k ads). The browser shares the machine's cores with the server, as it does on
an analyst's laptop; the report records the load average.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

GOAL_S = 3.0
LOADS = 3
LOAD_MS = 300_000  # a cold server loads the catalog, the version's index and tower on the first page
PAGES = {  # name -> (url path, selectors proving the page's content rendered)
    "inspect": ("", ["[data-testid='stDataFrame']", ".js-plotly-plot"]),
    "compare": ("compare", ["[data-testid='stDataFrame']"]),
    "map": ("map", [".js-plotly-plot"]),
}
RUN_OVER = ("() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
            " && !document.querySelector(\"[data-stale='true']\")")


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` in MB (Linux /proc), None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds process `pid` has used (Linux /proc), None where unavailable."""
    f = _stat(pid)
    return None if f is None else (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def descendants_cpu_s(root: int, exclude: int) -> dict[int, float]:
    """CPU seconds used so far by each live descendant of `root` outside `exclude`'s subtree (here:
    the Playwright driver and Chromium's processes, not the Streamlit server), by pid."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (f := _stat(int(d.name))) is not None:
            parent[int(d.name)] = int(f[1])

    def under(pid: int, top: int) -> bool:
        while pid > 1:
            if pid == top:
                return True
            pid = parent.get(pid, 0)
        return False

    return {p: cpu_s(p) or 0.0 for p in parent if p != root and under(p, root) and not under(p, exclude)}


class ServerSampler:
    """Samples a process's VmRSS in a background thread (start, peak and last value in MB) and
    the CPU seconds it used meanwhile (how much of the page time the server itself accounts for)."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid, self.every_s = pid, every_s
        self.cpu0, self.cpu1, self.t0, self.t1 = cpu_s(pid), None, time.perf_counter(), None
        self.browser0 = self.browser_cpu = None
        self.start = rss_mb(pid)
        self.peak = self.last = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            v = rss_mb(self.pid)
            if v is not None:
                self.last, self.peak = v, max(self.peak or 0.0, v)

    def mark(self) -> None:
        """Start the CPU and wall-clock counts here (after the warm-up)."""
        self.cpu0, self.t0 = cpu_s(self.pid), time.perf_counter()
        self.browser0 = descendants_cpu_s(os.getpid(), exclude=self.pid)

    def browser_done(self) -> None:
        """Called before the browser closes: the browser's CPU since `mark`."""
        # per process: a renderer that exited since `mark` takes its CPU with it, so a difference of
        # sums could go negative; each live process's own growth cannot
        now = descendants_cpu_s(os.getpid(), exclude=self.pid)
        self.browser_cpu = sum(max(0.0, cpu - self.browser0.get(pid, 0.0)) for pid, cpu in now.items())

    def __enter__(self) -> "ServerSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu1, self.t1 = cpu_s(self.pid), time.perf_counter()

    def report(self) -> dict:
        r = lambda v: None if v is None else round(v, 1)  # noqa: E731
        cpu = None if self.cpu0 is None or self.cpu1 is None else self.cpu1 - self.cpu0
        return {"start_mb": r(self.start), "peak_mb": r(self.peak), "end_mb": r(self.last), "cpu_s": r(cpu),
                "wall_s": r(self.t1 - self.t0) if self.t1 else None, "browser_cpu_s": r(self.browser_cpu)}


def _quantiles(values: list[float]) -> dict:
    s = sorted(values)
    if not s:
        return {"n": 0, "median_s": None, "p95_s": None, "max_s": None}
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return {"n": len(s), "median_s": round(statistics.median(s), 3), "p95_s": round(p95, 3),
            "max_s": round(s[-1], 3)}


async def _session(browser, url: str, users: list[str], i: int, loads: int, rows: list, log) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await ctx.new_page()
    page.set_default_timeout(LOAD_MS)
    page.set_default_navigation_timeout(LOAD_MS)
    try:
        for r in range(loads):
            for j, (name, (path, selectors)) in enumerate(PAGES.items()):
                user = users[((i * loads + r) * len(PAGES) + j) % len(users)]  # a new user every load
                t = time.perf_counter()
                try:
                    await page.goto(f"{url}/{path}?{urlencode({'user': user})}")
                    for sel in selectors:
                        await page.wait_for_selector(sel)
                    await page.wait_for_function(RUN_OVER)
                except PlaywrightTimeout:  # counted, not fatal: the other sessions go on
                    rows.append({"session": i, "round": r, "page": name, "user": user, "s": None,
                                 "exceptions": 0, "timed_out": True})
                    log(f"  session {i} round {r} {name:<8} timed out after {LOAD_MS / 1000:.0f} s")
                    continue
                took = time.perf_counter() - t
                errors = await page.locator("[data-testid='stException']").count()
                rows.append({"session": i, "round": r, "page": name, "user": user, "s": round(took, 3),
                             "exceptions": errors, "timed_out": False})
                log(f"  session {i} round {r} {name:<8} {took:6.2f} s" + (f"  {errors} exception(s)" if errors else ""))
    finally:
        await ctx.close()


async def _run_sessions(url: str, users: list[str], sessions: int, loads: int, chromium: str, log,
                        warmed=lambda: None, done=lambda: None) -> list[dict]:
    from playwright.async_api import async_playwright

    from core.bench.dashboard import CHROMIUM_ARGS

    rows: list[dict] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # one warm-up load: the first page of a fresh server loads the catalog and the version
            await _session(browser, url, users, -1, 1, warm := [], lambda m: None)
            log("warm-up (first loads on a fresh server): "
                + ", ".join(f"{w['page']} {w['s']:.1f} s" for w in warm))
            warmed()
            await asyncio.gather(*(_session(browser, url, users, i, loads, rows, log) for i in range(sessions)))
            done()
        finally:
            await browser.close()
    return rows


def _users(workspace: Path, n: int) -> list[str]:
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.store.settings import load_settings

    s = load_settings(workspace=workspace)
    eng = make_engine(s.db_url)
    try:
        ids = sorted(map(str, load_catalog(eng, with_impressions=False).users["user_id"]))
    finally:
        eng.dispose()
    step = max(1, len(ids) // max(n, 1))
    return ids[::step][:n] or ids


def measure_sessions(workspace: Path, sessions: int = 8, loads: int = LOADS, chromium: str | None = None,
                     env: dict[str, str] | None = None, log=lambda msg: None) -> dict:
    """Serve the dashboard on `workspace` and load Inspect, Compare and Map `loads` times in each
    of `sessions` concurrent browser sessions; per-page median/p95 and the server's RSS."""
    from core.bench.dashboard import find_chromium, serve_dashboard

    chromium = chromium or find_chromium()
    users = _users(workspace, sessions * loads * len(PAGES) + 1)
    procs: list = []
    t0 = time.perf_counter()
    with serve_dashboard({**(os.environ if env is None else env), "ADLENS_HOME": str(workspace)},
                         procs=procs) as url:
        with ServerSampler(procs[0].pid) as server:
            rows = asyncio.run(_run_sessions(url, users, sessions, loads, chromium, log, warmed=server.mark,
                                             done=server.browser_done))
    by_page = {name: _quantiles([r["s"] for r in rows if r["page"] == name and r["s"] is not None])
               for name in PAGES}
    worst = max(float("inf") if q["median_s"] is None else q["median_s"] for q in by_page.values())
    return {"sessions": sessions, "loads_per_session": loads * len(PAGES), "pages": by_page,
            "exceptions": sum(r["exceptions"] for r in rows), "timeouts": sum(r["timed_out"] for r in rows),
            "server": server.report(),
            "goal_median_s": GOAL_S, "meets_goal": bool(worst <= GOAL_S), "wall_s": round(time.perf_counter() - t0, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "cpus": os.cpu_count(), "loads": rows}


def section_sessions(ctx) -> dict:
    """`adlens bench --sections dashboard --sessions N`: the report of `measure_sessions`."""
    from core.bench.dashboard import served_workspace, skip_reason

    reason = skip_reason()
    if reason:
        ctx.log(f"dashboard section skipped: {reason}")
        return {"skipped": reason}
    workspace, n = served_workspace(ctx)
    rep = measure_sessions(workspace, sessions=ctx.sessions, log=ctx.log)
    rep.update(ads=n, workspace=str(workspace))
    ctx.log(f"dashboard at {n:,} ads, {ctx.sessions} sessions: " + ", ".join(
        f"{k} median {q['median_s']:.2f} s p95 {q['p95_s']:.2f} s" for k, q in rep["pages"].items()))
    return rep


def format_sessions(sec: dict) -> list[str]:
    """Plain-text lines of a sessions report (for `adlens bench`)."""
    srv = sec["server"]
    lines = [f"  {sec['sessions']} concurrent sessions x {sec['loads_per_session']} page loads at {sec['ads']:,} ads "
             f"({sec['cpus']} CPUs, browser on the same machine; load avg {sec['load_avg_1m']}): goal median <= "
             f"{sec['goal_median_s']:.0f} s per page: {'met' if sec['meets_goal'] else 'NOT met'}"]
    for name, q in sec["pages"].items():
        if not q["n"]:
            lines.append(f"    {name:<8} no load finished")
            continue
        lines.append(f"    {name:<8} median {q['median_s']:6.2f} s   p95 {q['p95_s']:6.2f} s   max {q['max_s']:6.2f} s"
                     f"   ({q['n']} loads)")
    lines.append(f"    pages with an exception: {sec['exceptions']}, timed out: {sec['timeouts']}; server RSS start {srv['start_mb']} MB, "
                 f"peak {srv['peak_mb']} MB, end {srv['end_mb']} MB; server CPU {srv['cpu_s']} s "
                 f"in {srv['wall_s']} s of concurrent loads; browser CPU {srv['browser_cpu_s']} s meanwhile")
    done = sum(q["n"] for q in sec["pages"].values())
    if done and srv.get("cpu_s") is not None and srv.get("browser_cpu_s") is not None:
        # where the time goes: with the browser on the same cores, its rendering competes with the server
        lines.append(f"    CPU per page load: server {srv['cpu_s'] / done:.2f} s, browser {srv['browser_cpu_s'] / done:.2f} s")
    lines.append(f"  workspace {sec['workspace']}")
    return lines
