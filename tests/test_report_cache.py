"""Health and Parity reports kept in the workspace's cache (core.traces.report_cache): they
round-trip through JSON to the same dataclasses, are read instead of measured, follow the version,
the data and the trace sets, and a folder that cannot be written only costs measuring again.
The pages read them (Health, Parity: the compute functions patched to raise)."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace

import pandas as pd
import pytest
from funnel_data import random_workspace

import core.traces.report_cache as rc
from core.common.jsonio import to_jsonable
from core.funnel.engine import open_engine
from core.store.catalog import bump_revision, catalog_stamp
from core.store.db import make_engine
from core.store.settings import load_settings
from core.traces.export import export_replay
from core.traces.importer import import_traces

N = 12


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A random workspace with one IVF version and AdLens's own replay of N requests imported as logged traces."""
    root = tmp_path_factory.mktemp("report_cache")
    settings = random_workspace(root / "ws", {"ivf": ("IVF8,Flat", {"nprobe": 2})})
    engine = open_engine(settings, "ivf")
    export_replay(engine, root / "export", N, seed=1)
    db = make_engine(settings.db_url)
    import_traces(settings, db, root / "export")
    yield settings, db, engine
    db.dispose()


@pytest.fixture
def fresh(ws):
    """The workspace with an empty report cache."""
    settings, db, engine = ws
    shutil.rmtree(settings.cache_dir / "reports-test", ignore_errors=True)
    for f in settings.cache_dir.glob("report-*.json"):
        f.unlink()
    return ws


def _raise(*_a, **_k):
    raise AssertionError("computed although a saved report was there")


def _untimed(rep):
    return replace(rep, seconds=0.0)


def _same_health(a, b) -> None:
    for name in ("curve", "dead_ads", "dead_by_vertical", "hub_ads"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_index_type="equiv")
    rest = [f for f in asdict(a) if f not in ("curve", "dead_ads", "dead_by_vertical", "hub_ads", "rules")]
    assert {f: to_jsonable(getattr(a, f)) for f in rest} == {f: to_jsonable(getattr(b, f)) for f in rest}
    pd.testing.assert_frame_equal(pd.DataFrame(a.rules["rules"]), pd.DataFrame(b.rules["rules"]))
    assert {k: v for k, v in a.rules.items() if k != "rules"} == {k: v for k, v in b.rules.items() if k != "rules"}


def test_health_report_round_trips_through_json(fresh):
    settings, _db, engine = fresh
    rep = rc.cached_health(settings, engine, n_requests=30, k=10)
    assert rep.rules and len(rep.dead_ads) and len(rep.curve) > 1  # the fixture exercises every part
    back = rc.health_from_dict(json.loads(json.dumps(rc.health_to_dict(rep), allow_nan=False)))
    assert type(back) is type(rep)
    _same_health(rep, back)


def test_parity_report_round_trips_through_json(fresh):
    settings, db, engine = fresh
    rep = rc.cached_parity(settings, db, engine, n_requests=N)
    assert rep.n_requests == N and rep.stage_recall and rep.source_recall
    back = rc.parity_from_dict(json.loads(json.dumps(rc.parity_to_dict(rep), allow_nan=False)))
    assert back == rep  # dataclasses all the way down


def test_a_saved_report_is_read_not_measured(fresh, monkeypatch):
    settings, db, engine = fresh
    health = rc.cached_health(settings, engine, n_requests=30, k=10)
    parity = rc.cached_parity(settings, db, engine, n_requests=N)
    assert len(list(settings.cache_dir.glob("report-health-*.json"))) == 1
    assert len(list(settings.cache_dir.glob("report-parity-*.json"))) == 1
    monkeypatch.setattr(rc, "health", _raise)
    monkeypatch.setattr(rc, "run_parity", _raise)
    _same_health(health, rc.cached_health(settings, engine, n_requests=30, k=10))
    assert rc.cached_parity(settings, db, engine, n_requests=N) == parity
    # with a function returning the engine, a saved report does not load the version
    assert rc.cached_parity(settings, db, _raise, checksum=engine.version.checksum, n_requests=N) == parity
    # a copied workspace keeps its reports (its own SQLite file is keyed by its place in the workspace)
    copy = settings.workspace.parent / "copy"
    shutil.copytree(settings.workspace, copy)
    try:
        moved = load_settings(workspace=copy, db_url=f"sqlite:///{copy / 'adlens.db'}")
        assert rc.catalog_key(moved, "s") == rc.catalog_key(settings, "s")
    finally:
        shutil.rmtree(copy)
    with pytest.raises(AssertionError, match="computed"):  # other parameters: another report
        rc.cached_health(settings, engine, n_requests=20, k=10)


def test_a_changed_version_data_or_trace_set_is_a_miss(fresh, monkeypatch):
    settings, db, engine = fresh
    stamp = catalog_stamp(db)
    rc.cached_health(settings, engine, n_requests=30, k=10, stamp=stamp)
    rc.cached_parity(settings, db, engine, n_requests=N, stamp=stamp)
    monkeypatch.setattr(rc, "health", _raise)
    monkeypatch.setattr(rc, "run_parity", _raise)
    with pytest.raises(AssertionError, match="computed"):
        rc.cached_health(settings, engine, n_requests=30, k=10, stamp=stamp + "x")
    with pytest.raises(AssertionError, match="computed"):
        rc.cached_parity(settings, db, engine, n_requests=N, stamp=stamp, traces_stamp="another:set")
    monkeypatch.setattr(engine.version, "checksum", "0" * 64)
    with pytest.raises(AssertionError, match="computed"):
        rc.cached_health(settings, engine, n_requests=30, k=10, stamp=stamp)
    monkeypatch.undo()
    with db.begin() as conn:
        bump_revision(conn)  # what every changing import does
    assert catalog_stamp(db) != stamp
    monkeypatch.setattr(rc, "health", _raise)
    with pytest.raises(AssertionError, match="computed"):
        rc.cached_health(settings, engine, n_requests=30, k=10)  # the stamp read now


def test_a_tampered_report_is_measured_again(fresh, caplog):
    settings, db, engine = fresh
    first = rc.cached_parity(settings, db, engine, n_requests=N)
    (path,) = settings.cache_dir.glob("report-parity-*.json")
    stored = json.loads(path.read_text())
    stored["report"]["recall"] = {"nonsense": 1}
    path.write_text(json.dumps(stored))
    assert _untimed(rc.cached_parity(settings, db, engine, n_requests=N)) == _untimed(first)
    assert "malformed cached Parity report" in caplog.text
    path.write_text("{not json")
    assert _untimed(rc.cached_parity(settings, db, engine, n_requests=N)) == _untimed(first)
    assert "ignoring the cached report" in caplog.text


def test_an_unwritable_cache_folder_falls_back_to_measuring(ws, tmp_path):
    settings, db, engine = ws
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder that cannot be created (as on a read-only workspace)
    key = rc.parity_key(settings, engine.version.checksum, "s", "t", n_requests=N)
    assert rc.save_report(blocked / "cache", key, {"x": 1}) is False
    assert rc.load_report(blocked / "cache", key) is None

    class Blocked:  # the workspace's settings with the cache folder under a file
        def __getattr__(self, name):
            return getattr(settings, name)
        cache_dir = blocked / "cache"

    rep = rc.cached_parity(Blocked(), db, engine, n_requests=N)
    assert rep.n_requests == N and not (blocked / "cache").exists()


@pytest.mark.slow
def test_pages_read_the_reports_the_demo_saved_without_measuring(demo_workspace, use_workspace, tmp_path,
                                                                 monkeypatch):
    """The demo's warm step saves the default version's reports at the pages' defaults; a fresh
    server's Health and Parity pages show them with the compute functions patched to raise."""
    from streamlit.testing.v1 import AppTest

    from core.demo.warm_reports import warm_reports
    from tests.conftest import copy_workspace
    from tests.test_dashboard import APP, TIMEOUT, _goto

    # the fixture retitled an ad after its demo (a data change): save them again on a copy, as the demo does
    settings = copy_workspace(demo_workspace.path, tmp_path / "ws")
    db = make_engine(settings.db_url)
    try:
        out = warm_reports(settings, db, {})
    finally:
        db.dispose()
    assert out["version"] == demo_workspace.versions[-1] and out["parity_requests"] >= 1
    computed: list[str] = []

    def refuse(what):
        def compute(*_a, **_k):
            computed.append(what)
            raise AssertionError("computed although a saved report was there")
        return compute

    monkeypatch.setattr(rc, "health", refuse("health"))
    monkeypatch.setattr(rc, "run_parity", refuse("parity"))
    use_workspace(settings.workspace)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    _goto(at, "health").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="health_version").value == out["version"]
    assert any(s.value.startswith("Recall@100 vs exact") for s in at.subheader)
    _goto(at, "parity").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("reproduces" in i.value for i in at.info)
    assert computed == []
    # another N is not saved: measuring it is what the patched function refuses
    at.number_input(key="parity_n").set_value(1).run()
    assert at.exception and computed == ["parity"]
