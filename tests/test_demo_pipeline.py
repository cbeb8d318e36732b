"""`adlens demo`'s version builds (core/demo/pipeline.py): every source the demo documents is
built, EASE included, without a warning, and the sources are built once per tower split and
saved into every version sharing it. The step runner itself is tested in test_ingest.py."""

from __future__ import annotations

import json
import logging

import pytest

from sources_data import N_ADS, FakeTextEncoder, planted_workspace

from core.demo.pipeline import demo_source_params, shared_sources_builder
from core.index.versions import build_version
from core.sources.ease import EASE_MAX_ADS, EaseSource
from core.sources.registry import BUILT_SOURCES, sources_artifact_builder
from core.store.artifacts import sha256_file
from core.store.db import make_engine


def _sources(settings, name: str) -> dict:
    return json.loads((settings.versions_dir / name / "manifest.json").read_text())["sources"]


def test_demo_params_cover_the_catalog_up_to_the_ease_ceiling():
    assert demo_source_params(10_000)["ease"]["max_ads"] == 10_000
    assert demo_source_params(300)["ease"]["max_ads"] >= 300
    assert demo_source_params(10 * EASE_MAX_ADS)["ease"]["max_ads"] == EASE_MAX_ADS


def test_demo_builds_ease_above_the_default_limit_once_without_a_warning(tmp_path, monkeypatch, caplog):
    # The planted catalog (60 ads) stands for the demo's 10k: above the source's default limit.
    monkeypatch.setitem(EaseSource.defaults, "max_ads", N_ADS - 10)
    caplog.set_level(logging.WARNING)
    builder = shared_sources_builder(demo_source_params(N_ADS))
    settings = planted_workspace(tmp_path, builder=builder)
    eng = make_engine(settings.db_url)
    build_version(settings, "v2", "Flat", text_encoder=FakeTextEncoder(), engine=eng, extra_builders=(builder,))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    first, second = _sources(settings, "v1"), _sources(settings, "v2")
    for s in (first, second):
        assert set(s["built"]) == set(BUILT_SOURCES) and s["skipped"] == {}
    # built once: the second version saved the same weights without solving EASE again
    assert first["built"]["ease"]["build_s"] > 0 and second["built"]["ease"]["build_s"] == 0
    w = "sources/ease/weights.npy"
    assert sha256_file(settings.versions_dir / "v1" / w) == sha256_file(settings.versions_dir / "v2" / w)
    # the library default still skips EASE on this catalog, with the warning the demo avoids
    caplog.clear()
    build_version(settings, "v3", "Flat", text_encoder=FakeTextEncoder(), engine=eng,
                  extra_builders=(sources_artifact_builder,))
    eng.dispose()
    assert "ease" in _sources(settings, "v3")["skipped"] and "EASE skipped" in caplog.text


def test_each_version_is_announced_as_soon_as_it_is_registered(monkeypatch):
    """`adlens demo --serve` starts the dashboard on the first announced version, so each version
    must be announced right after its build (or at once when it exists), not at the end."""
    from types import SimpleNamespace

    import core.index.versions as versions
    from core.demo import pipeline

    events: list[tuple[str, str]] = []

    class Manifest(dict):
        recall, total_build_s = 1.0, 0.1

    def fake_build(settings, name, factory, **kw):
        events.append(("built", name))
        return SimpleNamespace(manifest=Manifest(sources={"built": {}}))

    monkeypatch.setattr(versions, "build_version", fake_build)
    monkeypatch.setattr(versions, "list_versions", lambda settings, engine=None: [{"name": "exact"}])
    monkeypatch.setattr(pipeline, "table_counts", lambda engine: {"ads": 10})
    ctx = pipeline.DemoContext(SimpleNamespace(), None, 10, 5, 0,
                               on_version=lambda name: events.append(("ready", name)))
    out = pipeline._build(ctx, lambda f: None)
    assert out["exact"] == "exists"
    assert events == [("ready", "exact"), ("built", "ivf-noctx"), ("ready", "ivf-noctx"), ("built", "ivf"),
                      ("ready", "ivf")]


class _FakeServer:
    def __init__(self):
        self.started, self.waited = [], 0

    def start(self, settings):
        self.started.append(settings.workspace)
        return self

    def wait(self):
        self.waited += 1
        return 0

    def poll(self):
        return None


def test_demo_serve_starts_the_dashboard_on_the_first_ready_version_then_serves(tmp_path, monkeypatch):
    from core.cli import data_cmds
    from core.cli import main as cli_main
    from core.demo import pipeline

    server = _FakeServer()
    monkeypatch.setattr(data_cmds, "start_dashboard", server.start)
    seen = []

    def fake_build_demo(settings, n_ads, n_users, seed, progress, replace, on_version):
        seen.append(len(server.started))  # not started before the first version
        for name in ("exact", "ivf-noctx", "ivf"):
            if on_version is not None:
                on_version(name)
            seen.append(len(server.started))
        return pipeline.DemoReport(str(settings.workspace), str(settings.demo_data_dir), n_ads, n_users, seed,
                                   [], {"ads": n_ads}, 1.0)

    monkeypatch.setattr(pipeline, "build_demo", fake_build_demo)
    assert cli_main(["--workspace", str(tmp_path / "ws"), "demo", "--serve"]) == 0
    assert seen == [0, 1, 1, 1] and server.waited == 1
    assert server.started[0].resolve() == (tmp_path / "ws").resolve()
    # without --serve, nothing is started
    assert cli_main(["--workspace", str(tmp_path / "ws"), "demo"]) == 0
    assert len(server.started) == 1 and server.waited == 1


def test_demo_if_missing_serve_serves_an_existing_demo_at_once(tmp_path, monkeypatch):
    from core.cli import data_cmds
    from core.cli import main as cli_main
    from core.demo import pipeline

    server = _FakeServer()
    monkeypatch.setattr(data_cmds, "start_dashboard", server.start)
    marker = {"status": "complete", "steps": {s.name: 1.0 for s in pipeline.DEMO_STEPS}}
    monkeypatch.setattr(pipeline, "workspace_state", lambda settings: pipeline.WorkspaceState(10, marker))
    monkeypatch.setattr(pipeline, "build_demo", lambda *a, **k: pytest.fail("the demo exists: nothing to build"))
    assert cli_main(["--workspace", str(tmp_path / "ws"), "demo", "--if-missing", "--serve"]) == 0
    assert len(server.started) == 1 and server.waited == 1
