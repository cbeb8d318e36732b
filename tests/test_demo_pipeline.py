"""`adlens demo`'s version builds (core/demo/pipeline.py): every source the demo documents is
built, EASE included, without a warning, and the sources are built once per tower split and
saved into every version sharing it. The step runner itself is tested in test_ingest.py."""

from __future__ import annotations

import json
import logging

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
