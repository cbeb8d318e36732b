"""What a cold dashboard or CLI reads instead of recomputing: the impressions snapshot
(core/store/catalog.py) and the fitted pCTR model (core/funnel/pctr_cache.py). Each must give
exactly what recomputing gives, follow the data when it changes, and never fail a read."""

from __future__ import annotations

import json

import pytest
from funnel_data import fill_random_db, stub_version
from sqlalchemy import delete

from core.funnel.engine import FunnelEngine
from core.funnel.pctr_cache import PctrCache, pctr_cache
from core.store.catalog import bump_revision, catalog_stamp, load_catalog, snapshot_path
from core.store.db import make_engine
from core.store.models import Impression


@pytest.fixture
def db(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    fill_random_db(eng)
    yield eng
    eng.dispose()


def _same(a, b) -> None:
    for name in ("ads", "campaigns", "advertisers", "users", "communities", "impressions"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.equals(y) and (x.dtypes == y.dtypes).all(), name


def test_impressions_snapshot_equals_the_database_and_follows_each_import(db, tmp_path):
    cache = tmp_path / "cache"
    plain = load_catalog(db)
    first = load_catalog(db, snapshot_dir=cache)  # reads SQL, writes the snapshot
    snap = snapshot_path(db, cache, catalog_stamp(db))
    assert snap.is_file() and [p.name for p in cache.iterdir()] == [snap.name]
    second = load_catalog(db, snapshot_dir=cache)  # reads the snapshot
    _same(plain, first)
    _same(plain, second)
    assert plain.impressions["community_id"].isna().any()  # missing values survive the round trip

    gone = str(plain.impressions["impression_id"].iloc[0])
    with db.begin() as conn:  # an import that removes one impression bumps the revision
        conn.execute(delete(Impression).where(Impression.impression_id == gone))
        bump_revision(conn)
    after = load_catalog(db, snapshot_dir=cache)
    assert gone not in set(after.impressions["impression_id"]) and len(after.impressions) == len(plain.impressions) - 1
    _same(load_catalog(db), after)
    assert [p.name for p in cache.iterdir()] == [snapshot_path(db, cache, catalog_stamp(db)).name]  # old one removed


def test_a_damaged_or_unwritable_snapshot_only_costs_the_sql_read(db, tmp_path, caplog):
    cache = tmp_path / "cache"
    plain = load_catalog(db)
    load_catalog(db, snapshot_dir=cache)
    snapshot_path(db, cache, catalog_stamp(db)).write_bytes(b"not parquet")
    _same(plain, load_catalog(db, snapshot_dir=cache))
    assert "ignoring the impressions snapshot" in caplog.text
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder that cannot be created (as on a read-only workspace)
    _same(plain, load_catalog(db, snapshot_dir=blocked / "cache"))


def _engine(cat, cache: PctrCache | None) -> FunnelEngine:
    return FunnelEngine(stub_version(cat, dim=16, seed=3), cat, pctr_cache=cache)


def test_pctr_model_is_fitted_once_per_version_and_catalog(db, tmp_path, monkeypatch):
    cat = load_catalog(db)
    fitted = _engine(cat, None).calibration
    cache = pctr_cache(tmp_path / "cache", stub_version(cat), str(db.url), catalog_stamp(db))
    assert _engine(cat, cache).calibration == fitted  # fitted and stored
    [stored] = (tmp_path / "cache").glob("pctr-*.json")

    def refit(*args):
        raise AssertionError("refitted although the model was cached")

    monkeypatch.setattr(FunnelEngine, "_calibrate", refit)
    assert _engine(cat, cache).calibration == fitted  # read back, exactly
    monkeypatch.undo()

    other = PctrCache(cache.directory, cache.version_checksum, cache.catalog_key + "-after-an-import")
    calls = []
    monkeypatch.setattr(FunnelEngine, "_calibrate", lambda self, n, seed: calls.append(n) or fitted)
    _engine(cat, other)
    assert calls == [5000]  # another catalog: fitted again, and it replaces the old file
    assert not stored.exists() and len(list((tmp_path / "cache").glob("pctr-*.json"))) == 1


def test_a_tampered_or_unwritable_pctr_cache_refits(db, tmp_path):
    cat = load_catalog(db)
    fitted = _engine(cat, None).calibration
    cache = pctr_cache(tmp_path / "cache", stub_version(cat), str(db.url), catalog_stamp(db))
    _engine(cat, cache)
    [path] = (tmp_path / "cache").glob("pctr-*.json")
    stored = json.loads(path.read_text())
    stored["model"]["features"] = ["score", "found:ease"]
    path.write_text(json.dumps(stored))
    assert _engine(cat, cache).calibration == fitted  # features of another version: ignored
    path.write_text("{")
    assert _engine(cat, cache).calibration == fitted
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert _engine(cat, PctrCache(blocked / "cache", "x" * 64, "db")).calibration == fitted
