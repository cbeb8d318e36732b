"""`adlens bench --sections demo`: what `make run` costs a new user, timed in a browser.

Runs `adlens demo --serve` (what `make run` runs once the environment is installed) on a new
workspace in a child process, as a user would, and times from its start:

- ``serving_s``: the dashboard answers /_stcore/health (started on the first registered version);
- ``usable_s``: a headless Chromium, opening the dashboard as soon as it answers, shows Inspect's
  content (the same condition as the first-view bench: core.bench.dashboard_first_view);
- ``complete_s``: the demo's build has finished every step (its marker in the workspace says
  "complete"), with each step's wall seconds as the build recorded them.

Targets (issue #23): usable <= USABLE_TARGET_S, complete <= COMPLETE_TARGET_S at 10k ads / 5k
users. The child's process group is stopped at the end (the dashboard included).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USABLE_TARGET_S = 120.0
COMPLETE_TARGET_S = 180.0
TIMEOUT_S = 1800.0


def _marker(workspace: Path) -> dict:
    from core.demo.pipeline import read_marker
    from core.store.settings import load_settings

    return read_marker(load_settings(workspace=workspace)) or {}


def measure_demo(ads: int = 10_000, users: int = 5_000, chromium: str | None = None,
                 workspace: Path | None = None, log=lambda msg: None) -> dict:
    """Time `adlens demo --serve` on a new workspace (module docstring); the report."""
    from core.bench.dashboard import _free_port, find_chromium

    chromium = chromium or find_chromium()
    with tempfile.TemporaryDirectory(prefix="adlens-bench-demo-") as tmp:
        ws = Path(workspace or Path(tmp) / "workspace")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("ADLENS_DB_URL", "ADLENS_HOME")}
        env.update(STREAMLIT_SERVER_PORT=str(port), STREAMLIT_SERVER_ADDRESS="127.0.0.1",
                   STREAMLIT_SERVER_HEADLESS="true", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
        out = open(Path(tmp) / "demo.log", "wb")
        row: dict = {"ads": ads, "users": users, "usable_target_s": USABLE_TARGET_S,
                     "complete_target_s": COMPLETE_TARGET_S, "timed_out": False}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", "--workspace", str(ws), "demo", "--ads", str(ads),
                                 "--users", str(users), "--serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: the dashboard child stops with it
        try:
            _follow(proc, ws, url, chromium, t0, row, Path(tmp) / "demo.log", log)
        finally:
            _stop_group(proc)
            out.close()
    row["meets_target"] = bool(not row["timed_out"] and not row.get("exceptions")
                               and row.get("usable_s", 1e9) <= USABLE_TARGET_S
                               and row.get("complete_s", 1e9) <= COMPLETE_TARGET_S)
    row["load_avg_1m"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return row


def _stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop `proc`'s process group (the demo and the dashboard it started) and wait until it is gone."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # reap the demo itself
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.1)


def _follow(proc: subprocess.Popen, ws: Path, url: str, chromium: str, t0: float, row: dict, log_file: Path,
            log) -> None:
    """Fill `row` with the serving, usable and complete times of the running demo `proc`."""
    from playwright.sync_api import sync_playwright

    from core.bench.dashboard import CHROMIUM_ARGS, healthy
    from core.bench.dashboard_first_view import FIRST_VIEW_PAGES, RUN_OVER

    deadline = time.monotonic() + TIMEOUT_S
    while not healthy(url):
        if proc.poll() is not None:
            raise RuntimeError(f"adlens demo --serve exited with {proc.returncode} before serving: "
                               + log_file.read_text(errors="replace")[-2000:])
        if time.monotonic() > deadline:
            row["timed_out"] = True
            return
        time.sleep(0.25)
    row["serving_s"] = round(time.perf_counter() - t0, 2)
    log(f"demo: dashboard serving after {row['serving_s']:.1f} s")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1500, "height": 1000})
            tab.set_default_timeout(TIMEOUT_S * 1000)
            tab.goto(url)
            tab.wait_for_function(f"() => !!({FIRST_VIEW_PAGES['inspect'][1]})", polling=100)
            tab.wait_for_function(RUN_OVER)
            row["usable_s"] = round(time.perf_counter() - t0, 2)
            row["exceptions"] = tab.locator("[data-testid='stException']").count()
        finally:
            browser.close()
    log(f"demo: Inspect drawn after {row['usable_s']:.1f} s")
    while _marker(ws).get("status") != "complete":
        if proc.poll() is not None or time.monotonic() > deadline:
            row["timed_out"] = proc.poll() is None
            row["exit_code"] = proc.returncode
            return
        time.sleep(0.5)
    row["complete_s"] = round(time.perf_counter() - t0, 2)
    row["steps"] = _marker(ws).get("steps", {})
    log(f"demo: complete after {row['complete_s']:.1f} s")


def section_demo(ctx) -> dict:
    """`adlens bench --sections demo [--demo-ads N --demo-users M]`."""
    from core.bench.dashboard import skip_reason

    reason = skip_reason()
    if reason:
        ctx.log(f"demo section skipped: {reason}")
        return {"skipped": reason}
    return measure_demo(ctx.shared.get("demo_ads") or 10_000, ctx.shared.get("demo_users") or 5_000, log=ctx.log)


def format_demo(sec: dict) -> list[str]:
    """Plain-text lines of the demo section."""
    if "skipped" in sec:
        return [f"  skipped: {sec['skipped']}"]
    head = (f"  adlens demo --serve at {sec['ads']:,} ads / {sec['users']:,} users (load avg {sec.get('load_avg_1m')}): "
            f"{'met' if sec.get('meets_target') else 'NOT met'}")
    if sec["timed_out"] or "complete_s" not in sec:
        return [head, f"    did not finish (timed out: {sec['timed_out']}, exit code {sec.get('exit_code')})"]
    steps = ", ".join(f"{k} {v:.1f}" for k, v in sec["steps"].items())
    return [head,
            f"    dashboard serving {sec['serving_s']:.1f} s, Inspect usable {sec['usable_s']:.1f} s "
            f"(target <= {sec['usable_target_s']:.0f}), build complete {sec['complete_s']:.1f} s "
            f"(target <= {sec['complete_target_s']:.0f})",
            f"    steps (s): {steps}"]
