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
