"""Measure, in a real browser, how long the Inspect page takes to re-render the funnel after the
user is changed (issue: ≤ 1 s at 100k ads). Usage:

    ADLENS_HOME=<workspace> .venv/bin/python scripts/measure_dashboard.py [--runs 5]

Starts `streamlit run dashboard` on a free port, drives Debian's Chromium with Playwright, and
prints, per user switch, two times measured from choosing the user:
  - rerun: the page shows that user's funnel and the script run is over (the status widget left);
  - settled: the page's last DOM change (charts and grids included), timed inside the page by a
    MutationObserver against the click's mousedown, after 1.5 s without changes;
and the medians of both.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
# Records the mousedown that picks the user and the time of every later DOM mutation.
OBSERVER = """() => { window.__click = null; window.__last = null;
  document.addEventListener('mousedown', () => { window.__click = performance.now(); window.__last = null; }, true);
  new MutationObserver(() => { window.__last = performance.now(); })
    .observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); }"""
QUIET_S = 1.5
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not become healthy at {url}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard", "--server.headless", "true",
                             "--server.port", str(port)], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("[data-testid='stDataFrame']", timeout=300_000)
            print(f"first load (builds the cached engine): {time.perf_counter() - t0:.2f} s")
            page.wait_for_timeout(2000)
            page.evaluate(OBSERVER)
            times, settled = [], []
            box = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").nth(1)
            for i in range(args.runs):
                box.click()
                options = page.locator("[role='option']")
                options.nth(2 + i % 6).wait_for()
                user = options.nth(2 + i % 6).inner_text().strip()
                t = time.perf_counter()
                options.nth(2 + i % 6).click()
                page.get_by_text(f"user **{user}**".replace("**", ""), exact=False).first.wait_for(timeout=60_000)
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                       timeout=60_000)
                times.append(time.perf_counter() - t)
                page.wait_for_timeout(QUIET_S * 1000)
                while page.evaluate("performance.now() - window.__last") < QUIET_S * 1000:
                    page.wait_for_timeout(250)
                settled.append(page.evaluate("(window.__last - window.__click) / 1000"))
                print(f"switch to {user}: rerun {times[-1]:.2f} s, settled {settled[-1]:.2f} s")
            print(f"median over {len(times)} switches: rerun {statistics.median(times):.2f} s, "
                  f"settled {statistics.median(settled):.2f} s")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
