"""`adlens bench` section "dashboard": each page's first view from a cold server
(core/bench/dashboard_first_view.py), and how long the Inspect page (or, with `--dashboard-page map`,
the Embedding map) takes to re-render after the user is changed, in a real browser, at 100k ads
(the map: at `--ads`, e.g. 1M, where it is aggregated on the server) (target ≤ 1 s).

Starts `streamlit run dashboard` on the funnel section's bench workspace (built if missing),
drives Chromium with Playwright, and picks a different user several times. Per switch, two times
from choosing the user:

- ``rerun_s``: the page names the new user and the script run is over (no status widget);
- ``settled_s``: the page's last DOM change (charts and grids included), timed inside the page by
  a MutationObserver against the mousedown that picked the user, after QUIET_S without changes.

The section is skipped, with the reason, where Playwright, Chromium or the dashboard's files are
missing (e.g. an installed wheel without the repository).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"  # core/bench/ -> repository root
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
TARGET_S = 1.0
SWITCHES = 8
QUIET_S = 1.5
# True once Inspect's caption above the funnel names user `u` (the new request has rendered).
CAPTION_NAMES_USER = ("u => [...document.querySelectorAll(\"[data-testid='stCaptionContainer']\")]"
                      ".some(e => e.innerText.includes('user ' + u + ' '))")
# Records the mousedown that picks the user and the time of every later DOM mutation, except in
# screen-reader live regions (the combobox announces the choice and clears it a second later).
OBSERVER = """() => { window.__click = null; window.__last = null; window.__what = null;
  document.addEventListener('mousedown', () => { window.__click = performance.now(); window.__last = null; }, true);
  new MutationObserver(ms => {
    for (const m of ms) {
      const el = m.target.nodeType === 1 ? m.target : m.target.parentElement;
      if (!el || el.closest('[aria-live]')) continue;
      const tid = el.closest('[data-testid]');
      window.__last = performance.now();
      window.__what = tid ? tid.getAttribute('data-testid') : el.tagName;
    } })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); }"""


def find_chromium() -> str | None:
    """ADLENS_CHROMIUM, else Debian's /usr/bin/chromium, else `chromium` on PATH."""
    for candidate in (os.environ.get("ADLENS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """True when the Streamlit server at `url` answers /_stcore/health with ok (within 2 s)."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False


@contextmanager
def serve_dashboard(env: dict[str, str], log: Path | None = None, timeout: float = 120.0,
                    procs: list | None = None, port: int | None = None) -> Iterator[str]:
    """Run `streamlit run dashboard` (as a user does) with `env` on a free loopback port; yield its
    base URL once /_stcore/health answers ok; stop it on exit. Output goes to `log` when given;
    the server's Popen is appended to `procs` when given (its pid, for memory readings); `port`: a
    given port instead of a free one (a browser caches the app per origin)."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_DIR), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=DASHBOARD_DIR.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    if procs is not None:
        procs.append(proc)

    def tail() -> str:
        return f":\n{Path(log).read_text(errors='replace')[-3000:]}" if log else ""

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} before serving {url}{tail()}")
            if healthy(url):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not become healthy at {url} within {timeout:.0f} s{tail()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


FIRST_VIEW_ONLY = "first-view"
"""`--dashboard-page` value: each page's first view only, no user switches."""
PAGE_READY = {"": "[data-testid='stDataFrame']", "map": "[data-testid='stPlotlyChart']"}
"""Per page measured (url path; "" = Inspect): what is on screen once its first load is over."""


def measure_user_switches(workspace: Path, switches: int = SWITCHES, chromium: str | None = None,
                          env: dict[str, str] | None = None, log=lambda msg: None, page_path: str = "") -> dict:
    """Serve the dashboard on `workspace` (with `env`, default this process's) and time `switches`
    user changes on the page at `page_path` (a key of PAGE_READY: Inspect or the Embedding map;
    both caption the request's user)."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or find_chromium()
    rows = []
    with serve_dashboard({**(os.environ if env is None else env), "ADLENS_HOME": str(workspace)}) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            t0 = time.perf_counter()
            page.goto(f"{url}/{page_path}" if page_path else url)
            page.wait_for_selector(PAGE_READY[page_path], timeout=600_000)
            first_load = time.perf_counter() - t0
            log(f"dashboard first load (loads the version and builds its engine): {first_load:.1f} s")
            page.wait_for_timeout(2000)
            page.evaluate(OBSERVER)
            box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").nth(1)
            for i in range(switches):
                box.click()
                option = page.locator("[role='option']").nth(2 + i % 6)
                option.wait_for()
                user = option.inner_text().strip()
                t = time.perf_counter()
                option.click()
                page.mouse.move(900, 20)  # off the sidebar: a hovered help icon's tooltip is not the funnel
                page.wait_for_function(CAPTION_NAMES_USER, arg=user, timeout=60_000)
                page.wait_for_function("() => !document.querySelector(\"[data-testid='stStatusWidget']\")",
                                       timeout=60_000)
                rerun = time.perf_counter() - t
                page.wait_for_timeout(QUIET_S * 1000)
                while page.evaluate("performance.now() - window.__last") < QUIET_S * 1000:
                    page.wait_for_timeout(250)
                settled, what = page.evaluate(
                    "[((window.__last ?? window.__click) - window.__click) / 1000, window.__what]")
                rows.append({"user": user, "rerun_s": round(rerun, 3), "settled_s": round(settled, 3),
                             "last_change": what})
                log(f"switch to {user}: rerun {rerun:.2f} s, settled {settled:.2f} s")
            browser.close()
    rerun_med = statistics.median(r["rerun_s"] for r in rows)
    settled_med = statistics.median(r["settled_s"] for r in rows)
    return {"switches": rows, "first_load_s": round(first_load, 2), "rerun_median_s": rerun_med,
            "settled_median_s": settled_med, "target_s": TARGET_S, "meets_target": bool(settled_med <= TARGET_S),
            "page": page_path or "inspect"}


def skip_reason() -> str | None:
    """Why the browser measurement cannot run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if find_chromium() is None:
        return "no Chromium found (apt-get install -y chromium, or set ADLENS_CHROMIUM)"
    if not (DASHBOARD_DIR / "streamlit_app.py").is_file():
        return f"the dashboard's files are not at {DASHBOARD_DIR}"
    return None


def _n_ads(workspace: Path) -> int:
    from core.store.catalog import table_counts
    from core.store.db import make_engine
    from core.store.settings import load_settings

    eng = make_engine(load_settings(workspace=workspace).db_url)
    try:
        return int(table_counts(eng)["ads"])
    finally:
        eng.dispose()


def served_workspace(ctx) -> tuple[Path, int]:
    """The workspace the dashboard sections serve and its number of ads: `--dashboard-workspace`
    when given (e.g. an `adlens demo` one), else the bench workspace at min(--ads, 100k) ads."""
    from core.bench.funnel import bench_workspace

    if ctx.dashboard_workspace is not None:
        workspace = Path(ctx.dashboard_workspace)
        return workspace, _n_ads(workspace)
    n = ctx.ads if ctx.shared.get("dashboard_page") == "map" else min(ctx.ads, 100_000)
    return bench_workspace(ctx.settings, n, seed=ctx.seed, log=ctx.log).workspace, n


def section_dashboard(ctx) -> dict:
    """`adlens bench` section: Inspect's (or the map's) re-render after a user switch (one session;
    runner.section_dashboard runs each page's first view before it, and `--sessions N` runs
    core.bench.dashboard_sessions instead)."""
    reason = skip_reason()
    if reason:
        ctx.log(f"dashboard section skipped: {reason}")
        return {"skipped": reason}
    workspace, n = served_workspace(ctx)
    page = ctx.shared.get("dashboard_page") or ""
    rep = measure_user_switches(workspace, log=ctx.log, page_path=page)
    rep["ads"] = n
    rep["workspace"] = str(workspace)
    ctx.log(f"dashboard {rep['page']} at {n:,} ads: user switch median rerun {rep['rerun_median_s']:.2f} s, "
            f"settled {rep['settled_median_s']:.2f} s (target <= {TARGET_S:.0f} s)")
    return rep
