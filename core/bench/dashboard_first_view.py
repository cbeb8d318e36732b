"""`adlens bench --sections dashboard`, first views: each page opened by a new user on a cold server.

Per page (Inspect, Why not, Embedding map, Compare, Health, Parity), a fresh `streamlit run dashboard`
process is started on the workspace and a headless Chromium, already running (as a user's browser
is), opens that page directly in a new tab (a deep link naming a user, and an ad for Why not):
as a returning browser or a new visitor, as soon as the server answers or once it is warm
(`measure_first_views`). Times, all from the server's start:

- ``ready_s``: the server answers /_stcore/health (Streamlit imported, and its warm-up over or past
  its bound: dashboard/streamlit_app.py);
- ``open_s``: the page is requested (at ``ready_s``, or once the server's warm-up is over);
- ``drawn_s``: the page's content is on screen, down to its last section (`FIRST_VIEW_PAGES`);
- ``done_s``: the page's script run is over too (no running-status widget, no stale element);

and ``view_s`` = ``done_s`` - ``open_s``, what the user waits after opening the page: the target,
``view_s`` <= FIRST_VIEW_TARGET_S on the demo (10k ads). The server warms its caches as it starts
(dashboard/warm.py) and answers once that is over (up to a bound; a larger catalog's warm-up goes on
while it answers, and a page opened then waits for it: the worst case). What the server spent: its
CPU seconds and resident memory when the page was done, when its first script run of the page
began and ended (``server_start_s``, ``server_done_s``: before, the browser loads the app; after,
it draws what is left), when its warm-up ended (``warm_up_done_s``), and the dashboard's own
timing log (``server_steps``: what it loaded or built, in seconds, written by
core.common.timer.StepLog to the file named by ADLENS_DASHBOARD_TIMINGS). A page that shows an
exception, or never draws its content, is reported as such (``exceptions``, ``timed_out``).
``browser_cpu_view_s``: the CPU seconds Chromium's processes (and Playwright's driver) used from
the page's request to done.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlencode

from core.store.settings import ENV_DASHBOARD_TIMINGS

FIRST_VIEW_TARGET_S = 5.0
PRIME_LOADS = 2  # loads of every page that make a browser "returning" (code cached from the second on)
VIEW_MS = 300_000
PAGE_NAMES = {"inspect": "Inspect", "why_not": "Why not", "map": "Embedding map", "compare": "Compare",
              "health": "Health", "parity": "Parity"}
_FRAMES = "document.querySelectorAll(\"[data-testid='stDataFrame']\").length"
_HEADING = "[...document.querySelectorAll('h2, h3')].some(h => h.innerText.startsWith(%r))"
FIRST_VIEW_PAGES = {  # name -> (url path, JS condition: the page's content is drawn, its last part included)
    "inspect": ("", "document.querySelector(\".st-key-candidates_table [data-testid='stDataFrame']\")"
                    " && document.querySelectorAll('.js-plotly-plot').length >= 2"),
    "why_not": ("why-not", f"{_FRAMES} >= 3 && " + _HEADING % "Audience: who can see this ad"),
    "map": ("map", "document.querySelector('.st-key-map_chart .js-plotly-plot .scatterlayer, "
                   ".st-key-map_chart .js-plotly-plot .gl-container')"),
    "compare": ("compare", f"{_FRAMES} >= 4 && " + _HEADING % "Rank shift of common candidates"),
    "health": ("health", f"{_FRAMES} >= 1 && " + _HEADING % "Tower evaluation"),
    # with logged traces its tables; without, the page only says how to import them
    "parity": ("parity", f"({_FRAMES} >= 3 && " + _HEADING % "Rules and sources that disagree most" + ")"
                         " || [...document.querySelectorAll('[data-testid=\"stAlert\"]')]"
                         ".some(a => a.innerText.includes('import-traces'))"),
}
RUN_OVER = ("() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
            " && !document.querySelector(\"[data-stale='true']\")")


def first_view_link(page: str, user: str, ad: str | None) -> str:
    """The url path and query of `page`'s deep link for `user` (and `ad` on Why not)."""
    path, _ = FIRST_VIEW_PAGES[page]
    params = {"user": user, **({"ad": ad} if page == "why_not" and ad else {})}
    return f"{path}?{urlencode(params)}"


def read_timings(path: Path) -> list[dict]:
    """The dashboard's timing log (one JSON object per line: step, s), in the order written."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by the server's end
            continue
    return rows


def _pick(workspace: Path) -> tuple[str, str]:
    """A user of the catalog's user list (the sidebar's first after the default) and an ad."""
    from core.store.catalog import load_catalog
    from core.store.db import make_engine
    from core.store.settings import load_settings

    eng = make_engine(load_settings(workspace=workspace).db_url)
    try:
        cat = load_catalog(eng, with_impressions=False)
    finally:
        eng.dispose()
    users = sorted(map(str, cat.users["user_id"]))
    ads = sorted(map(str, cat.ads["ad_id"]))
    return users[min(1, len(users) - 1)], ads[len(ads) // 2]


def measure_page(workspace: Path, page: str, user: str, ad: str | None, context, env: dict[str, str],
                 scratch: Path, port: int | None = None, after_warm_up: bool = False) -> dict:
    """One cold-server first view of `page` in a new tab of browser `context` (see the module
    docstring); `port`: serve on this port (a returning browser has the app cached for its origin);
    `after_warm_up`: open the page once the server's log says its warm-up is over (dashboard/warm.py)
    instead of the moment it answers."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from core.bench.dashboard import serve_dashboard
    from core.bench.dashboard_sessions import cpu_s, descendants_cpu_s, rss_mb

    timings = scratch / f"timings-{page}.jsonl"
    timings.unlink(missing_ok=True)
    log = scratch / f"server-{page}.log"
    procs: list = []
    row: dict = {"page": page, "title": PAGE_NAMES[page], "user": user, "timed_out": False}
    tab = context.new_page()
    tab.set_default_timeout(VIEW_MS)
    try:
        t0, wall0 = time.perf_counter(), time.time()
        with serve_dashboard({**env, "ADLENS_HOME": str(workspace), ENV_DASHBOARD_TIMINGS: str(timings)},
                             log=log, procs=procs, port=port) as url:
            row["ready_s"] = round(time.perf_counter() - t0, 3)
            pid = procs[0].pid
            cpu_ready = cpu_s(pid)
            try:
                while after_warm_up and not any(str(r.get("step", "")).startswith("warm up")
                                                for r in read_timings(timings)):
                    if time.perf_counter() - t0 > VIEW_MS / 1000:
                        raise PlaywrightTimeout("the server's warm-up did not end")
                    time.sleep(0.05)
                browser_cpu = descendants_cpu_s(os.getpid(), pid)
                row["open_s"] = round(time.perf_counter() - t0, 3)
                tab.goto(f"{url}/{first_view_link(page, user, ad)}")
                tab.wait_for_function(f"() => !!({FIRST_VIEW_PAGES[page][1]})", polling=100)
                row["drawn_s"] = round(time.perf_counter() - t0, 3)
                tab.wait_for_function(RUN_OVER)
                row["done_s"] = round(time.perf_counter() - t0, 3)
                row["view_s"] = round(row["done_s"] - row["open_s"], 3)
            except PlaywrightTimeout:
                row["timed_out"] = True
            row["browser_cpu_view_s"] = round(sum(v - browser_cpu.get(k, 0.0) for k, v in
                                                  descendants_cpu_s(os.getpid(), pid).items()), 2)
            row["exceptions"] = tab.locator("[data-testid='stException']").count()
            cpu = cpu_s(pid)
            row["server_cpu_s"] = None if cpu is None else round(cpu, 2)
            row["server_cpu_view_s"] = None if cpu is None or cpu_ready is None else round(cpu - cpu_ready, 2)
            mb = rss_mb(pid)
            row["server_rss_mb"] = None if mb is None else round(mb, 1)
    finally:
        tab.close()
    row["server_steps"] = read_timings(timings)
    runs = [s for s in row["server_steps"] if s["step"] == f"script run {page}" and "t" in s]
    # the page's first script run on the server: before it, the browser loaded the app; after it,
    # the browser drew what the run sent (elements stream while it runs)
    row["server_start_s"] = round(runs[0]["t"] - runs[0]["s"] - wall0, 3) if runs else None
    warm = [s for s in row["server_steps"] if s["step"] == "warm up" and "t" in s]
    row["warm_up_done_s"] = round(warm[0]["t"] - wall0, 3) if warm else None  # dashboard/warm.py's end
    row["server_done_s"] = round(runs[0]["t"] - wall0, 3) if runs else None
    return row


def _summary(rows: list[dict]) -> dict:
    views = [r["view_s"] for r in rows if not r["timed_out"]]
    return {"worst_view_s": max(views) if views else None,
            "meets_target": bool(len(views) == len(rows) and max(views) <= FIRST_VIEW_TARGET_S
                                 and not any(r["exceptions"] for r in rows))}


def measure_first_views(workspace: Path, pages: list[str] | None = None, chromium: str | None = None,
                        env: dict[str, str] | None = None, log=lambda msg: None,
                        scratch: Path | None = None, returning: bool = True) -> dict:
    """Every page's cold-server first view on `workspace` (a new server per page), three ways:

    - ``returning``: a **returning browser** (the target; also ``pages``): one Chromium profile that has opened each
      page before on the same origin, as an analyst's browser has, so Streamlit's frontend and its
      chunks (served `immutable`) come from the browser's cache; the server is new and cold;
    - ``returning_after_warm_up``: the same browser, opening the page once the server's log says
      its warm-up is over (dashboard/warm.py; on the demo the server answers only then, so this
      differs from ``returning`` by noise only; on a catalog whose warm-up outlasts the bound of
      dashboard/streamlit_app.py, it is the user who waits before clicking);
    - ``new_visitor``: a browser that has never opened the app (an empty cache per page): the
      frontend's ~10 MB of JavaScript (Plotly's chart alone 4.7 MB) is fetched and compiled too.

    `returning=False` measures the new visitor only (then ``pages`` holds its rows)."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from core.bench.dashboard import CHROMIUM_ARGS, _free_port, find_chromium

    chromium = chromium or find_chromium()
    user, ad = _pick(Path(workspace))
    env = dict(os.environ if env is None else env)
    names = pages or list(FIRST_VIEW_PAGES)
    viewport = {"width": 1500, "height": 1000}
    out: dict = {"user": user, "ad": ad, "target_s": FIRST_VIEW_TARGET_S}
    with tempfile.TemporaryDirectory(prefix="adlens-first-view-") as tmp, sync_playwright() as p:
        where = Path(scratch or tmp)
        where.mkdir(parents=True, exist_ok=True)

        def one(page: str, kind: str, context, port: int | None = None, folder: Path = where,
                after_warm_up: bool = False) -> dict:
            row = measure_page(Path(workspace), page, user, ad, context, env, folder, port, after_warm_up)
            log(f"first view of {row['title']} ({kind}): " + (
                "timed out" if row["timed_out"] else
                f"done {row['view_s']:.1f} s after opening it (server ready {row['ready_s']:.1f} s after its "
                f"start; CPU: server {row['server_cpu_view_s']} s, browser {row['browser_cpu_view_s']} s)"))
            return row

        if returning:
            port = _free_port()
            prime = where / "prime"
            prime.mkdir(exist_ok=True)
            context = p.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=chromium,
                                                           args=CHROMIUM_ARGS, viewport=viewport)
            try:
                for _ in range(PRIME_LOADS):  # Chromium keeps a script's compiled code from its second load on
                    for page in names:
                        measure_page(Path(workspace), page, user, ad, context, env, prime, port)
                out["returning"] = [one(page, "returning browser", context, port) for page in names]
                out["returning_after_warm_up"] = [one(page, "returning browser, server warm", context, port,
                                                      after_warm_up=True) for page in names]
            finally:
                context.close()
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            rows = []
            for page in names:
                context = browser.new_context(viewport=viewport)  # its own empty cache
                try:
                    rows.append(one(page, "new visitor", context))
                finally:
                    context.close()
            out["new_visitor"] = rows
        finally:
            browser.close()
    out["pages"] = out.get("returning") or out["new_visitor"]  # the target's rows
    out.update(_summary(out["pages"]))
    out["new_visitor_summary"] = _summary(out["new_visitor"])
    if "returning_after_warm_up" in out:
        out["returning_after_warm_up_summary"] = _summary(out["returning_after_warm_up"])
    out["load_avg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    out["cpus"] = os.cpu_count()
    return out


def section_first_views(ctx) -> dict:
    """`adlens bench --sections dashboard`: every page's first view (`measure_first_views`) on the
    served workspace, then the user switches of core.bench.dashboard.section_dashboard (unless
    `--dashboard-page first-view`), in one report."""
    from core.bench.dashboard import FIRST_VIEW_ONLY, section_dashboard, served_workspace, skip_reason

    reason = skip_reason()
    if reason:
        ctx.log(f"dashboard section skipped: {reason}")
        return {"skipped": reason}
    workspace, n = served_workspace(ctx)
    first = measure_first_views(workspace, log=ctx.log)
    if ctx.shared.get("dashboard_page") == FIRST_VIEW_ONLY:
        return {"first_view": first, "ads": n, "workspace": str(workspace)}
    return {**section_dashboard(ctx), "first_view": first}


def _steps(steps: list[dict], top: int = 4) -> str:
    """The server's biggest steps, e.g. 'engine ivf 2.1, catalog 0.8' (not the script run and the
    sidebar, which hold the others)."""
    own = [s for s in steps if not str(s.get("step", "")).startswith(("script run", "sidebar"))]
    big = sorted(own, key=lambda s: -float(s.get("s", 0)))[:top]
    return ", ".join(f"{s['step']} {float(s['s']):.1f}" for s in big)


def format_first_views(sec: dict) -> list[str]:
    """Plain-text lines of a first-view report (for `adlens bench`)."""
    lines = [f"  first view per page, cold server each, new user {sec['user']} ({sec['cpus']} CPUs, load avg "
             f"{sec['load_avg_1m']}): target view (page opened -> done) <= {sec['target_s']:.0f} s"]
    tables = [("returning browser, opened as the server answers (the target)", sec.get("returning"), sec),
              ("returning browser, opened once the server's warm-up is over (clicking make run's link)",
               sec.get("returning_after_warm_up"), sec.get("returning_after_warm_up_summary") or {}),
              ("new visitor (empty browser cache)", sec.get("new_visitor"), sec.get("new_visitor_summary") or {})]
    for title, rows, summary in tables:
        if not rows:
            continue
        lines.append(f"   {title}: {'met' if summary.get('meets_target') else 'NOT met'}")
        lines.append(f"    {'page':<14} {'ready':>6} {'run':>11} {'drawn':>6} {'done':>6} {'view':>6} {'srv CPU':>8} "
                     f"{'brw CPU':>8} {'RSS MB':>7}  biggest server steps (s)")
        for r in rows:
            if r["timed_out"]:
                lines.append(f"    {r['title']:<14} {r['ready_s']:6.1f}  timed out after {VIEW_MS / 1000:.0f} s")
                continue
            bad = f"  {r['exceptions']} exception(s)" if r["exceptions"] else ""
            srv = "-" if r["server_done_s"] is None else f"{r['server_start_s']:.1f}-{r['server_done_s']:.1f}"
            lines.append(f"    {r['title']:<14} {r['ready_s']:6.1f} {srv:>11} {r['drawn_s']:6.1f} {r['done_s']:6.1f} "
                         f"{r['view_s']:6.1f} {r['server_cpu_view_s'] or 0:8.1f} {r['browser_cpu_view_s'] or 0:8.1f} "
                         f"{r['server_rss_mb'] or 0:7.0f}  {_steps(r['server_steps'])}{bad}")
    return lines
