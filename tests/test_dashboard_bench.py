"""`adlens bench --sections dashboard`: the browser measurement of Inspect's user switch."""

from __future__ import annotations

import pytest

from core.bench import dashboard as dashboard_bench
from core.bench.runner import BenchContext, format_report
from core.store.settings import load_settings


def test_section_is_skipped_with_the_reason_when_no_browser(tmp_path, monkeypatch):
    monkeypatch.setattr(dashboard_bench, "find_chromium", lambda: None)
    ctx = BenchContext(settings=load_settings(workspace=tmp_path / "ws"))
    rep = dashboard_bench.section_dashboard(ctx)
    assert "Chromium" in rep["skipped"] and "apt-get install -y chromium" in rep["skipped"]
    assert not (tmp_path / "ws" / "bench").exists()  # nothing was built for a skipped section


@pytest.mark.browser
@pytest.mark.slow
def test_user_switches_are_timed_in_a_real_browser(demo_workspace):
    if dashboard_bench.skip_reason():
        pytest.skip(dashboard_bench.skip_reason())
    rep = dashboard_bench.measure_user_switches(demo_workspace.path, switches=3, env=demo_workspace.env())
    rows = rep["switches"]
    assert len(rows) == 3
    assert len({r["user"] for r in rows}) == 3 and all(r["user"] in demo_workspace.users for r in rows)
    assert all(0 < r["rerun_s"] < 60 and 0 < r["settled_s"] < 60 for r in rows)
    assert rep["rerun_median_s"] == sorted(r["rerun_s"] for r in rows)[1]
    assert rep["meets_target"] == (rep["settled_median_s"] <= dashboard_bench.TARGET_S)
    text = format_report({"dashboard": {**rep, "ads": 600, "workspace": str(demo_workspace.path)}})
    assert "Inspect at 600 ads" in text and rows[0]["user"] in text
    assert rep["page"] == "inspect"


@pytest.mark.browser
@pytest.mark.slow
def test_user_switches_on_the_map_page_are_timed(demo_workspace):
    if dashboard_bench.skip_reason():
        pytest.skip(dashboard_bench.skip_reason())
    rep = dashboard_bench.measure_user_switches(demo_workspace.path, switches=2, env=demo_workspace.env(),
                                                page_path="map")
    rows = rep["switches"]
    assert rep["page"] == "map" and len({r["user"] for r in rows}) == 2  # the map's caption named each user
    assert all(0 < r["settled_s"] < 60 for r in rows)
    text = format_report({"dashboard": {**rep, "ads": 600, "workspace": str(demo_workspace.path)}})
    assert "Embedding map at 600 ads" in text


def test_sessions_mode_is_skipped_with_the_reason_when_no_browser(tmp_path, monkeypatch):
    from core.bench.runner import section_dashboard

    monkeypatch.setattr(dashboard_bench, "find_chromium", lambda: None)
    ctx = BenchContext(settings=load_settings(workspace=tmp_path / "ws"), sessions=8)
    assert "Chromium" in section_dashboard(ctx)["skipped"]
    assert not (tmp_path / "ws" / "bench").exists()


def test_sessions_quantiles_and_report_text():
    from core.bench.dashboard_sessions import _quantiles, format_sessions

    q = _quantiles([float(v) for v in range(1, 21)])  # 1..20 s
    assert q == {"n": 20, "median_s": 10.5, "p95_s": 19.0, "max_s": 20.0}
    assert _quantiles([])["median_s"] is None
    sec = {"sessions": 8, "loads_per_session": 9, "ads": 3000, "cpus": 2, "load_avg_1m": 4.0, "goal_median_s": 3.0,
           "meets_goal": False, "pages": {"inspect": q, "map": _quantiles([])}, "exceptions": 0, "timeouts": 1,
           "server": {"start_mb": 70.0, "peak_mb": 500.0, "end_mb": 480.0, "cpu_s": 12.0, "wall_s": 100.0,
                      "browser_cpu_s": 50.0}, "workspace": "/ws"}
    text = format_report({"dashboard": sec})
    assert "8 concurrent sessions x 9 page loads at 3,000 ads" in text and "NOT met" in text
    assert "inspect  median  10.50 s   p95  19.00 s" in text and "map      no load finished" in text
    assert "timed out: 1" in text and "peak 500.0 MB" in text and "browser CPU 50.0 s" in text
    assert "CPU per page load: server 0.60 s, browser 2.50 s" in text  # 20 finished loads
    assert format_sessions(sec)[-1] == "  workspace /ws"


@pytest.mark.browser
@pytest.mark.slow
def test_concurrent_sessions_load_every_page_in_a_real_browser(demo_workspace):
    from core.bench.dashboard_sessions import PAGES, measure_sessions

    if dashboard_bench.skip_reason():
        pytest.skip(dashboard_bench.skip_reason())
    rep = measure_sessions(demo_workspace.path, sessions=2, loads=1, env=demo_workspace.env())
    rows = rep["loads"]
    assert len(rows) == 2 * len(PAGES) and not rep["exceptions"] and not rep["timeouts"]
    assert len({r["user"] for r in rows}) == len(rows) and all(r["user"] in demo_workspace.users for r in rows)
    assert all(rep["pages"][p]["n"] == 2 and 0 < rep["pages"][p]["median_s"] < 300 for p in PAGES)
    srv = rep["server"]
    assert 0 < srv["start_mb"] <= srv["peak_mb"] and srv["cpu_s"] > 0  # the server did the pages' work
    assert srv["browser_cpu_s"] > 0  # and Chromium rendered them
    assert rep["meets_goal"] == (max(q["median_s"] for q in rep["pages"].values()) <= rep["goal_median_s"])


@pytest.mark.browser
@pytest.mark.slow
def test_first_view_section_times_a_page_on_a_cold_server_three_ways(demo_workspace, monkeypatch):
    """The section `adlens bench --sections dashboard --dashboard-page first-view` runs: the page
    drawn, no exception, times ordered, the server's own timing log read back (its warm-up
    included), for a returning browser (as the server answers, and once it is warm) and a new visitor."""
    from core.bench import dashboard_first_view as fv
    from core.bench.runner import section_dashboard

    if dashboard_bench.skip_reason():
        pytest.skip(dashboard_bench.skip_reason())
    for k, v in demo_workspace.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(fv, "PRIME_LOADS", 0)  # CI time: the returning browser caches as it goes
    # CI time: one page, Inspect (every page is drawn in Chromium by test_e2e.py::test_every_page_renders)
    pages = {k: fv.FIRST_VIEW_PAGES[k] for k in ("inspect",)}
    monkeypatch.setattr(fv, "FIRST_VIEW_PAGES", pages)
    ctx = BenchContext(settings=load_settings(workspace=demo_workspace.path),
                       dashboard_workspace=str(demo_workspace.path))
    ctx.shared["dashboard_page"] = dashboard_bench.FIRST_VIEW_ONLY
    rep = section_dashboard(ctx)
    assert "switches" not in rep and rep["ads"] == 600
    first = rep["first_view"]
    assert first["pages"] is first["returning"]
    assert first["user"] in demo_workspace.users
    for rows in (first["returning"], first["returning_after_warm_up"], first["new_visitor"]):
        assert [r["page"] for r in rows] == list(pages)
        for r in rows:
            assert not r["timed_out"] and r["exceptions"] == 0, r
            assert 0 < r["ready_s"] <= r["open_s"] < r["server_start_s"] < r["server_done_s"]
            assert r["drawn_s"] <= r["done_s"] < 300
            assert r["view_s"] == pytest.approx(r["done_s"] - r["open_s"], abs=0.002)
            assert r["server_cpu_s"] > 0 and r["server_rss_mb"] > 0 and r["browser_cpu_view_s"] > 0
            steps = {s["step"] for s in r["server_steps"]}
            assert f"script run {r['page']}" in steps, steps  # the dashboard's timing log
            assert "warm imports" in steps and "catalog" in steps, steps  # the server's warm-up
        assert any(s["step"].startswith("engine ") for r in rows for s in r["server_steps"])
    for r in first["returning"] + first["returning_after_warm_up"] + first["new_visitor"]:
        # the server answered only once its warm-up was over (dashboard/streamlit_app.py's lifespan)
        assert [s["step"] for s in r["server_steps"]].count("warm up") == 1, r
        assert 0 < r["warm_up_done_s"] <= r["ready_s"], r
    for summary, rows in ((first, first["returning"]), (first["new_visitor_summary"], first["new_visitor"]),
                          (first["returning_after_warm_up_summary"], first["returning_after_warm_up"])):
        worst = max(r["view_s"] for r in rows)
        assert summary["worst_view_s"] == worst and summary["meets_target"] == (worst <= fv.FIRST_VIEW_TARGET_S)
    text = format_report({"dashboard": rep})
    assert "first view per page, cold server each" in text
    assert "opened as the server answers (the target)" in text and "new visitor (empty browser cache)" in text
    assert "opened once the server's warm-up is over" in text
    assert text.count(f"\n    {'Inspect':<14}") == 3


@pytest.mark.browser
@pytest.mark.slow
def test_demo_section_times_make_run_in_a_real_browser_and_stops_what_it_started(tmp_path):
    """`adlens bench --sections demo` at a tiny size: the dashboard serves before Inspect is usable,
    the build completes with every step, and neither the demo nor its dashboard outlives it."""
    import subprocess
    from pathlib import Path

    from core.bench.demo import measure_demo
    from core.demo.pipeline import DEMO_STEPS

    if dashboard_bench.skip_reason():
        pytest.skip(dashboard_bench.skip_reason())
    ws = tmp_path / "demo-ws"
    rep = measure_demo(ads=200, users=100, workspace=ws)
    assert not rep["timed_out"] and rep["exceptions"] == 0, rep
    assert 0 < rep["serving_s"] < rep["usable_s"] and rep["serving_s"] < rep["complete_s"]
    assert list(rep["steps"]) == [s.name for s in DEMO_STEPS]
    assert rep["meets_target"] == (rep["usable_s"] <= 120 and rep["complete_s"] <= 180)
    left = subprocess.run(["pgrep", "-f", str(ws)], capture_output=True, text=True).stdout.split()
    assert not left, left  # `adlens demo` was stopped ...
    mark = f"ADLENS_HOME={ws.resolve()}".encode()
    served = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0"):
                served.append(environ.parent.name)
        except OSError:  # a process that ended meanwhile, or not ours to read
            continue
    assert not served, served  # ... and so was its `streamlit run dashboard`
    text = format_report({"demo": rep})
    assert "adlens demo --serve at 200 ads / 100 users" in text and "Inspect usable" in text
