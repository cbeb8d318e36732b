"""The dashboard server's warm-up (dashboard/warm.py): it fills the caches a first view needs and
never raises, whatever the workspace holds."""

from __future__ import annotations

import json
import sys
import time

import pytest


@pytest.fixture
def warm(use_workspace, tmp_path, monkeypatch):
    """`warm(workspace)`: run the warm-up on `workspace` in this process; (steps done, timing log)."""
    from dashboard import state
    from dashboard.warm import warm_up

    def run(path):
        use_workspace(path)
        log = tmp_path / "timings.jsonl"
        log.unlink(missing_ok=True)
        monkeypatch.setenv("ADLENS_DASHBOARD_TIMINGS", str(log))
        state._BUILT.clear()
        done = warm_up()
        rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        return done, rows

    yield run
    state._BUILT.clear()
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()


def test_warm_up_loads_the_newest_versions_engine_for_the_page(demo_workspace, warm):
    from dashboard import state

    done, rows = warm(demo_workspace.path)
    assert done == ["imports", "catalog", "engine", "compare's engine"]
    newest, b = demo_workspace.versions[-1], demo_workspace.versions[-2]
    assert {k[0] for k in state._BUILT} == {newest, b}  # the pages' engine(newest) is a cache hit, Compare's B too
    steps = [r["step"] for r in rows]
    assert steps[0] == "warm imports" and steps[-1] == "warm up"
    assert f"engine {newest}" in steps and f"engine {b}" in steps and "catalog" in steps
    assert all(f"dashboard.views.{m}" in sys.modules for m in ("inspect", "why_not", "parity"))
    assert state.engine(newest) is state._engine(*state._engine_key(newest))  # the same object


def test_warm_up_of_an_empty_workspace_stops_after_the_catalog(tmp_path, warm):
    from dashboard import state

    done, rows = warm(tmp_path / "empty")
    assert done == ["imports", "catalog"] and not state._BUILT
    assert [r["step"] for r in rows][-1] == "warm up"


def test_warm_up_of_a_broken_version_records_why_and_does_not_raise(demo_workspace, tmp_path, warm):
    from tests.conftest import copy_workspace

    settings = copy_workspace(demo_workspace.path, tmp_path / "ws")
    newest = demo_workspace.versions[-1]
    (settings.versions_dir / newest / "index.faiss").write_bytes(b"not an index")
    done, rows = warm(settings.workspace)
    assert done == ["imports", "catalog"]
    failed = [r["step"] for r in rows if r["step"].startswith("warm up failed after imports/catalog")]
    assert len(failed) == 1, rows


def test_the_server_waits_for_the_warm_up_up_to_its_bound(monkeypatch):
    """dashboard/streamlit_app.py's lifespan: it answers once the warm-up is over, or at the bound
    while a longer warm-up goes on; the terminal says which."""
    import asyncio
    import threading

    from dashboard import warm as warm_mod

    def started(seconds: float):
        t = threading.Thread(target=time.sleep, args=(seconds,), daemon=True)
        t.start()
        return t

    said: list[str] = []
    monkeypatch.setattr(warm_mod, "start_warm_up", lambda: started(0.3))
    t0 = time.monotonic()
    assert asyncio.run(warm_mod.wait_for_warm_up(5.0, said.append)) is True
    assert 0.3 <= time.monotonic() - t0 < 2.0  # waited for the warm-up, not the bound
    assert "loading the workspace" in said[0] and said[1].startswith("  AdLens: ready after")

    said.clear()
    slow = started(10.0)
    monkeypatch.setattr(warm_mod, "start_warm_up", lambda: slow)
    t0 = time.monotonic()
    assert asyncio.run(warm_mod.wait_for_warm_up(0.5, said.append)) is False
    assert 0.5 <= time.monotonic() - t0 < 2.0 and slow.is_alive()  # served at the bound; it goes on
    assert "the rest loads while the first pages open" in said[1]

    said.clear()
    monkeypatch.setattr(warm_mod, "start_warm_up", lambda: None)  # started before: no wait, nothing said
    assert asyncio.run(warm_mod.wait_for_warm_up(5.0, said.append)) is False and not said
